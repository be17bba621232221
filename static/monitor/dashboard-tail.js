// The live tail of /dashboard/: rows newest first, bounded, pausable,
// expandable to the full envelope; gap markers; time-to-screen samples and
// duplicate counts for the health strip. Event content is always set as text.
"use strict";
window.Dashboard = window.Dashboard || {};

(function (Dashboard) {
  var PALETTE = ["#2f6fed", "#e8772e", "#1f8a4c", "#9b51e0", "#c0362c", "#0e9aa7", "#b8860b", "#d6336c"];
  var known = [];
  // A stable colour per event type, shared by the tail and the chart.
  Dashboard.colorOf = function (type) {
    var index = known.indexOf(type);
    if (index < 0) { known.push(type); known.sort(); index = known.indexOf(type); }
    return PALETTE[index % PALETTE.length];
  };
  Dashboard.knownTypes = function (types) { types.forEach(Dashboard.colorOf); };

  var GAP_REASONS = {
    slow: "this page fell behind",
    expired: "the broker no longer keeps them (its retention, or the embedded broker rolled over or started again)",
    reset: "the broker started again and lost an unknown number of them",
    limit: "too many to replay",
    stalled: "the server's live reader stalled and started again at the newest events",
    behind: "the server's live reader fell too far behind and started again at the newest events",
  };
  var LATENCY_WINDOW_MS = 60000;
  var MAX_SAMPLES = 20000;

  function pad(n, width) { return String(n).padStart(width || 2, "0"); }
  function clock(ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function summarize(event) {
    var data = event.data && typeof event.data === "object" ? event.data : {};
    if (event.type === "photo.posted") return (data.author || "someone") + ": " + (data.caption || "");
    if (event.type === "user.signed_up") return "new user " + (data.username || "");
    var text = JSON.stringify(event.data);
    return text && text.length > 160 ? text.slice(0, 157) + "…" : text || "";
  }
  function percentile(sorted, p) {
    return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
  }

  Dashboard.Tail = function (options) {
    var maxRows = options.maxRows || 500;
    var body = document.getElementById("tail");
    var countEl = document.getElementById("row-count");
    var emptyEl = document.getElementById("tail-empty");
    var pauseButton = document.getElementById("pause");
    var records = new WeakMap();  // row -> {item, sent, shownAt, latency, replay, held}
    var rows = 0;
    var paused = false;
    var pending = [];  // what arrived while paused, oldest first
    var pendingEvents = 0;
    var arrivedWhilePaused = 0;
    var samples = [];  // [shownAt, ms] of live rows
    var seen = new Set();  // "topic/partition/offset" of recent events, to notice duplicates
    var duplicates = 0;
    var gaps = 0;
    var reasons = {};  // why events were missed -> how many (NaN: an unknown number)
    var missed = 0;
    var focusRow = null;  // the one row reached by Tab (roving tabindex)

    // arrivedAt: when a row held while paused reached the page (0 if not held).
    function eventRow(item, info, arrivedAt) {
      var event = item.event || {};
      var now = Date.now();
      var time = Date.parse(event.time);
      var held = arrivedAt > 0;
      var record = {
        item: item,
        sent: info.sent,
        shownAt: now,
        latency: (held ? arrivedAt : now) - time,
        replay: !!info.replay,
        held: held,
      };
      var row = el("tr", "event");
      row.tabIndex = -1;
      row.setAttribute("aria-expanded", "false");
      row.dataset.eventId = event.id;
      row.dataset.type = event.type;
      row.dataset.partition = item.partition;
      row.dataset.offset = item.offset;
      if (record.replay) row.dataset.replay = "true";
      var timeCell = el("td", "time", isNaN(time) ? event.time : clock(time));
      timeCell.title = event.time || "";
      var typeCell = el("td", "type", event.type);
      typeCell.style.setProperty("--type-color", Dashboard.colorOf(event.type));
      var latencyCell;
      if (record.replay) {
        latencyCell = el("td", "num latency replayed", "replay");
        latencyCell.title = "replayed: sent again after it happened";
      } else {
        latencyCell = el("td", "num latency" + (held ? " held" : ""), record.latency + " ms");
        latencyCell.title = held ? "held while paused; time to arrive in this page" : "from the event's time to this screen";
      }
      row.append(
        timeCell,
        typeCell,
        el("td", "opt", event.actor),
        el("td", "opt", event.subject),
        el("td", "opt position", item.partition + "@" + item.offset),
        latencyCell,
        el("td", "summary", summarize(event))
      );
      records.set(row, record);
      if (!record.replay && !held && !isNaN(time)) samples.push([now, record.latency]);
      countDuplicate(item);
      return row;
    }

    function countDuplicate(item) {
      var key = item.topic + "/" + item.partition + "/" + item.offset;
      if (seen.has(key)) { duplicates += 1; options.onAnomaly(); return; }
      seen.add(key);
      if (seen.size > maxRows * 10) seen.delete(seen.values().next().value);
    }

    function gapRow(frame) {
      var row = el("tr", "gap");
      var cell = el("td");
      cell.colSpan = 7;
      var count = frame.missed == null ? "Some events" : frame.missed + (frame.missed === 1 ? " event" : " events");
      cell.textContent = "⚠ " + count + " will not be shown: " + (GAP_REASONS[frame.reason] || frame.reason || "missed");
      row.append(cell);
      return row;
    }

    function detailRow(record) {
      var item = record.item;
      var event = item.event || {};
      var time = Date.parse(event.time);
      var row = el("tr", "detail");
      var cell = el("td");
      cell.colSpan = 7;
      var facts = el("dl", "facts");
      function fact(name, value) { facts.append(el("dt", null, name), el("dd", null, value)); }
      fact("Kafka position", item.topic + " · partition " + item.partition + " · offset " + item.offset);
      fact("Event id", event.id);
      fact("Event time", event.time);
      fact("Event → server send", typeof record.sent === "number" && !isNaN(time) ? (record.sent - time) + " ms" : "–");
      fact(record.held ? "Event → this page" : "Event → on screen", isNaN(time) ? "–" : record.latency + " ms" +
        (record.replay ? " (replayed)" : record.held ? " (then held while paused)" : ""));
      var json = el("pre", "json", JSON.stringify(event, null, 2));
      json.tabIndex = 0;
      json.setAttribute("aria-label", "Event envelope as JSON");
      cell.append(facts, json);
      row.append(cell);
      return row;
    }

    function toggle(row) {
      var open = row.getAttribute("aria-expanded") === "true";
      if (open) {
        if (row.nextElementSibling && row.nextElementSibling.classList.contains("detail")) row.nextElementSibling.remove();
      } else {
        row.after(detailRow(records.get(row)));
      }
      row.setAttribute("aria-expanded", open ? "false" : "true");
    }

    function setFocusRow(row) {
      if (focusRow === row) return;
      if (focusRow) focusRow.tabIndex = -1;
      focusRow = row;
      if (row) row.tabIndex = 0;
    }

    function sibling(row, forward) {
      var next = forward ? row.nextElementSibling : row.previousElementSibling;
      while (next && !next.classList.contains("event")) next = forward ? next.nextElementSibling : next.previousElementSibling;
      return next;
    }

    function lastEventRow() {
      var row = body.lastElementChild;
      while (row && !row.classList.contains("event")) row = row.previousElementSibling;
      return row;
    }

    function render(entries) {
      var fragment = document.createDocumentFragment();
      // Oldest first in entries; newest ends up on top.
      for (var i = entries.length - 1; i >= 0; i--) {
        var entry = entries[i];
        if (entry.gap) { fragment.append(gapRow(entry.gap)); continue; }
        for (var j = entry.items.length - 1; j >= 0; j--) {
          fragment.append(eventRow(entry.items[j], entry.info, entry.arrivedAt || 0));
          rows += 1;
        }
      }
      body.prepend(fragment);
      while (rows > maxRows && body.lastElementChild) {
        var last = body.lastElementChild;
        if (last.classList.contains("event")) { rows -= 1; if (last === focusRow) focusRow = null; }
        last.remove();
      }
      if (!focusRow || !focusRow.isConnected) setFocusRow(body.querySelector("tr.event"));
      update();
    }

    function update() {
      countEl.textContent = rows + (rows === 1 ? " row" : " rows") + (rows >= maxRows ? " (max)" : "");
      emptyEl.hidden = body.rows.length > 0;
      pauseButton.textContent = paused ? "Resume" + (arrivedWhilePaused ? " (" + arrivedWhilePaused + " new)" : "") : "Pause";
      pauseButton.setAttribute("aria-pressed", paused ? "true" : "false");
      pauseButton.dataset.pending = String(arrivedWhilePaused);
    }

    function hold(entry, count) {
      pending.push(entry);
      pendingEvents += count;
      arrivedWhilePaused += count;
      // What would be pushed out of the table on resume anyway is not kept.
      while (pendingEvents > maxRows && pending.length > 1) {
        var dropped = pending.shift();
        pendingEvents -= dropped.items ? dropped.items.length : 0;
      }
      update();
    }

    body.addEventListener("click", function (event) {
      var row = event.target.closest("tr.event");
      if (!row || String(window.getSelection())) return;
      setFocusRow(row);
      toggle(row);
    });
    body.addEventListener("keydown", function (event) {
      var row = event.target.closest("tr.event");
      if (!row || event.target !== row) return;
      var target = null;
      if (event.key === "Enter" || event.key === " ") { toggle(row); event.preventDefault(); return; }
      if (event.key === "ArrowDown") target = sibling(row, true);
      else if (event.key === "ArrowUp") target = sibling(row, false);
      else if (event.key === "Home") target = body.querySelector("tr.event");
      else if (event.key === "End") target = lastEventRow();
      else return;
      event.preventDefault();
      if (target) { setFocusRow(target); target.focus(); }
    });
    body.addEventListener("focusin", function (event) {
      if (event.target.matches("tr.event")) setFocusRow(event.target);
    });

    update();
    return {
      add: function (items, info) {
        if (!items.length) return;
        var entry = { items: items, info: info, arrivedAt: paused ? Date.now() : 0 };
        if (paused) hold(entry, items.length);
        else render([entry]);
      },
      gap: function (frame) {
        gaps += 1;
        var why = GAP_REASONS[frame.reason] || frame.reason || "missed";
        reasons[why] = (reasons[why] || 0) + (typeof frame.missed === "number" ? frame.missed : NaN);
        if (typeof frame.missed === "number") missed += frame.missed;
        if (frame.reason === "reset") seen.clear();  // offsets start again at 0
        options.onAnomaly();
        if (paused) hold({ gap: frame }, 0);
        else render([{ gap: frame }]);
      },
      clear: function () {
        body.replaceChildren();
        rows = 0;
        focusRow = null;
        pending = [];
        pendingEvents = 0;
        arrivedWhilePaused = 0;
        update();
      },
      // A new filter: the server replays matching events again, which are not duplicates.
      restart: function () { this.clear(); seen.clear(); },
      togglePause: function () {
        paused = !paused;
        if (!paused) {
          var entries = pending;
          pending = [];
          pendingEvents = 0;
          arrivedWhilePaused = 0;
          render(entries);
        }
        update();
        return paused;
      },
      paused: function () { return paused; },
      setEmptyText: function (text) { emptyEl.textContent = text; },
      // p50 and p95 of time to screen for live rows shown in the last minute.
      latency: function () {
        var cutoff = Date.now() - LATENCY_WINDOW_MS;
        var start = 0;
        while (start < samples.length && samples[start][0] < cutoff) start++;
        if (start) samples.splice(0, start);
        if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
        if (!samples.length) return null;
        var sorted = samples.map(function (s) { return s[1]; }).sort(function (a, b) { return a - b; });
        return { p50: percentile(sorted, 50), p95: percentile(sorted, 95), count: sorted.length };
      },
      anomalies: function () {
        return { duplicates: duplicates, gaps: gaps, missed: missed, reasons: Object.assign({}, reasons) };
      },
    };
  };
})(window.Dashboard);
