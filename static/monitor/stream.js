// A client of /ws/events/ (docs/websocket-protocol.md), shared by the feed and
// the dashboard.
//
//   var stream = window.EventStream({
//     onEvents: function (items, info) {},  // items: [{topic, partition, offset, event | record, ...}]
//                                           // info: {replay, sent} of their frame
//     onStatus: function (state, text) {},  // connecting|replaying|live|reconnecting|error
//     onGap: function (frame) {},           // {missed, reason}; events that will never come
//     onFrame: function (frame) {},         // every frame, after the stream handled it
//     filter: {types: [], topics: [], kind, verified, actor, subject, text},
//     history: 200,                         // on a first connect, start with that many events
//   });
//   stream.subscribe(filter, {history: 200});  // a new filter; the tail starts over
//
// It keeps the last offset seen per partition and, after a disconnect,
// reconnects with backoff and asks for exactly what it missed (since=P:O,...).
// Events are passed on as they come: duplicates are for the caller to see.
"use strict";
window.EventStream = function (handlers) {
  var FIRST_DELAY = 500;
  var MAX_DELAY = 15000;
  // A quiet connection is pinged; one that stays silent is taken as dead
  // (a half-open TCP connection can take minutes to be noticed otherwise).
  var PING_AFTER = 20000;
  var DEAD_AFTER = 45000;
  var lastFrameAt = 0;
  var statusEl = document.getElementById("stream-status");
  var filter = normalFilter(handlers.filter);
  var positions = {};  // partition ("0", or "orders/0" for another topic's) -> last offset seen
  var eventsTopic = null;  // the welcome's topic: its partitions are named without it
  var wantHistory = handlers.history || 0;  // for the next connect, when nothing was seen
  var socket = null;
  var delay = FIRST_DELAY;
  var retryTimer = null;
  var countdown = null;
  var unanswered = 0;  // subscribes sent and not answered yet
  var welcomed = false;  // the server registered this connection: it takes subscribes
  var replaying = false;
  var canReplay = false;  // the server announced positions, so it sends "live" after a replay
  var stopped = false;

  function status(state, text) {
    if (statusEl) { statusEl.dataset.state = state; statusEl.textContent = text; }
    if (handlers.onStatus) handlers.onStatus(state, text);
  }

  function normalFilter(value) {
    value = value || {};
    var out = {};
    ["types", "topics"].forEach(function (key) {
      if (value[key] && value[key].length) out[key] = value[key].slice().sort();
    });
    ["kind", "actor", "subject", "text"].forEach(function (key) {
      if (value[key]) out[key] = String(value[key]);
    });
    if (typeof value.verified === "boolean") out.verified = value.verified;
    return out;
  }

  function sinceParam() {
    return Object.keys(positions).map(function (p) { return p + ":" + positions[p]; }).join(",");
  }

  function url() {
    var query = new URLSearchParams();
    if (filter.types) query.set("types", filter.types.join(","));
    if (filter.topics) query.set("topics", filter.topics.join(","));
    ["kind", "actor", "subject", "text"].forEach(function (key) {
      if (filter[key]) query.set(key, filter[key]);
    });
    if (typeof filter.verified === "boolean") query.set("verified", String(filter.verified));
    var since = sinceParam();
    if (since) query.set("since", since);
    else if (wantHistory) query.set("history", String(wantHistory));
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var search = query.toString();
    return scheme + location.host + "/ws/events/" + (search ? "?" + search : "");
  }

  function positionKey(item) {
    return item.topic === eventsTopic ? String(item.partition) : item.topic + "/" + item.partition;
  }

  function remember(items) {
    items.forEach(function (item) {
      var key = positionKey(item);
      var seen = positions[key];
      if (seen === undefined || item.offset > seen) positions[key] = item.offset;
    });
  }

  function onWelcome(frame) {
    welcomed = true;
    delay = FIRST_DELAY;
    canReplay = frame.positions !== undefined;
    eventsTopic = frame.topic;
    Object.keys(frame.positions || {}).forEach(function (p) {
      if (positions[p] === undefined) positions[p] = frame.positions[p];
    });
    var asked = /[?&](since|history)=/.test(socket.url);
    replaying = canReplay && asked;
    wantHistory = 0;  // from now on, a reconnect resumes from positions
    if (replaying) status("replaying", "Replaying…");
    else status("live", "Live");
  }

  function onEventsFrame(frame) {
    remember(frame.events);
    // Frames between a subscribe and its answer follow an older filter.
    if (unanswered) return;
    if (replaying && !frame.replay) { replaying = false; status("live", "Live"); }
    handlers.onEvents(frame.events, { replay: !!frame.replay, sent: frame.sent });
  }

  function onGapFrame(frame) {
    if (frame.reason === "reset") {
      // The broker started over: offsets begin again at 0 on every partition.
      Object.keys(positions).forEach(function (p) { positions[p] = -1; });
    }
    if (handlers.onGap) handlers.onGap(frame);
    else status("gap", "Missed " + (frame.missed == null ? "some" : frame.missed) + " events");
  }

  function onMessage(message) {
    lastFrameAt = Date.now();
    var frame;
    try { frame = JSON.parse(message.data); } catch (error) { return; }
    switch (frame.type) {
      case "welcome": onWelcome(frame); break;
      case "events": onEventsFrame(frame); break;
      case "live":
        replaying = false;
        status("live", "Live");
        break;
      case "gap": onGapFrame(frame); break;
      case "subscribed":
        unanswered = Math.max(0, unanswered - 1);
        break;
      case "error":
        // A refused subscribe leaves the old filter in force.
        if (frame.code === "bad_filter" || frame.code === "bad_replay") unanswered = Math.max(0, unanswered - 1);
        break;
    }
    if (handlers.onFrame) handlers.onFrame(frame);
  }

  function scheduleReconnect(why) {
    var due = Date.now() + delay;
    function tick() {
      var seconds = Math.max(1, Math.ceil((due - Date.now()) / 1000));
      status("reconnecting", (why ? why + "; r" : "R") + "econnecting in " + seconds + " s");
    }
    tick();
    countdown = setInterval(tick, 1000);
    retryTimer = setTimeout(function () {
      clearInterval(countdown);
      connect();
    }, delay);
    // Spread out the clients of a server that just went away.
    delay = Math.min(delay * 2 * (0.85 + Math.random() * 0.3), MAX_DELAY);
  }

  function onClose(event) {
    socket = null;
    welcomed = false;
    unanswered = 0;
    replaying = false;
    if (stopped) return;
    if (event.code === 4401) { status("error", "Not signed in: log in again"); return; }
    if (event.code === 4403) { status("error", "Refused: this page's origin is not allowed"); return; }
    if (event.code === 4400) {
      status("error", "The server refused the filter" + (event.reason ? ": " + event.reason : ""));
      return;
    }
    if (event.code === 4008) delay = FIRST_DELAY;  // fell behind: resume at once
    scheduleReconnect({ 4503: "Broker unavailable", 4008: "Fell behind", 4429: "Too many messages" }[event.code]);
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdown);
    status("connecting", "Connecting…");
    var current = new WebSocket(url());
    socket = current;
    welcomed = false;
    lastFrameAt = Date.now();
    current.onmessage = function (message) { if (socket === current) onMessage(message); };
    current.onclose = function (event) { if (socket === current) onClose(event); };
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  setInterval(function () {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    var quiet = Date.now() - lastFrameAt;
    if (quiet > DEAD_AFTER) {
      var dead = socket;
      dead.onclose = null;
      dead.close();
      onClose({ code: 1006, reason: "no answer" });
    } else if (quiet > PING_AFTER) send({ type: "ping" });
  }, 5000);

  connect();

  return {
    // Replace the filter. With options.history, the server replays that many
    // matching events first (the caller has cleared what it showed).
    subscribe: function (newFilter, options) {
      filter = normalFilter(newFilter);
      var history = (options && options.history) || 0;
      if (socket && welcomed && socket.readyState === WebSocket.OPEN) {
        var message = { type: "subscribe", filter: filter };
        if (history) message.history = history;
        unanswered += 1;
        if (history && canReplay) { replaying = true; status("replaying", "Replaying…"); }
        send(message);
      } else {
        // Not connected (or not yet welcomed): a new connection carries the new filter.
        positions = {};
        wantHistory = history;
        if (socket) { socket.onclose = null; socket.close(); socket = null; }
        connect();
      }
    },
    ping: function () { send({ type: "ping" }); },
    close: function () {
      stopped = true;
      clearTimeout(retryTimer);
      clearInterval(countdown);
      if (socket) socket.close();
    },
    positions: function () { return Object.assign({}, positions); },
    filter: function () { return Object.assign({}, filter); },
  };
};
