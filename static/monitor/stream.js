// Connects to /ws/events/ and reconnects with backoff. Calls onEvents(items)
// with each batch of {topic, partition, offset, event}, and onStatus(state, text).
"use strict";
window.EventStream = function (handlers) {
  var delay = 500;
  var statusEl = document.getElementById("stream-status");
  function status(state, text) {
    if (statusEl) { statusEl.dataset.state = state; statusEl.textContent = text; }
    if (handlers.onStatus) handlers.onStatus(state, text);
  }
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/ws/events/");
    socket.onmessage = function (message) {
      var frame = JSON.parse(message.data);
      if (frame.type === "welcome") { delay = 500; status("live", "Live"); }
      else if (frame.type === "events") handlers.onEvents(frame.events);
      else if (frame.type === "gap") status("gap", "Missed " + frame.missed + " events (too slow)");
      else if (frame.type === "error") status("error", frame.message);
    };
    socket.onclose = function (event) {
      if (event.code === 4401) { status("error", "Signed out: log in again"); return; }
      status("reconnecting", "Disconnected; reconnecting in " + Math.round(delay / 1000) + " s");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  connect();
};
