// The live tail of /dashboard/: rows newest first (built by
// dashboard-rows.js), bounded, pausable, expandable to their details; gap
// markers; time-to-screen samples and duplicate counts for the health strip.
"use strict";
window.Dashboard = window.Dashboard || {};

(function (Dashboard) {
  var LATENCY_WINDOW_MS = 60000;
  var MAX_SAMPLES = 20000;

  function percentile(sorted, p) {
    return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
  }

  Dashboard.Tail = function (options) {
    var maxRows = options.maxRows || 500;
    var body = document.getElementById("tail");
    var countEl = document.getElementById("row-count");
    var emptyEl = document.getElementById("tail-empty");
    var pauseButton = document.getElementById("pause");
    var rows = Dashboard.Rows(options.config || {});
    var records = new WeakMap();  // row -> its state (see Dashboard.Rows)
    var shown = 0;  // item rows in the table
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

    function itemRow(item, info, arrivedAt) {
      var built = rows.item(item, info, arrivedAt);
      records.set(built.row, built.state);
      if (built.state.sample) samples.push([built.state.shownAt, built.state.latency]);
      countDuplicate(item);
      return built.row;
    }

    function countDuplicate(item) {
      var key = item.topic + "/" + item.partition + "/" + item.offset;
      if (seen.has(key)) { duplicates += 1; options.onAnomaly(); return; }
      seen.add(key);
      if (seen.size > maxRows * 10) seen.delete(seen.values().next().value);
    }

    function toggle(row) {
      var open = row.getAttribute("aria-expanded") === "true";
      if (open) {
        if (row.nextElementSibling && row.nextElementSibling.classList.contains("detail")) row.nextElementSibling.remove();
      } else {
        row.after(rows.detail(records.get(row)));
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
        if (entry.gap) { fragment.append(rows.gap(entry.gap)); continue; }
        for (var j = entry.items.length - 1; j >= 0; j--) {
          fragment.append(itemRow(entry.items[j], entry.info, entry.arrivedAt || 0));
          shown += 1;
        }
      }
      body.prepend(fragment);
      while (shown > maxRows && body.lastElementChild) {
        var last = body.lastElementChild;
        if (last.classList.contains("event")) { shown -= 1; if (last === focusRow) focusRow = null; }
        last.remove();
      }
      if (!focusRow || !focusRow.isConnected) setFocusRow(body.querySelector("tr.event"));
      update();
    }

    function update() {
      countEl.textContent = shown + (shown === 1 ? " row" : " rows") + (shown >= maxRows ? " (max)" : "");
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
        if (options.onItems) options.onItems(items);
        var entry = { items: items, info: info, arrivedAt: paused ? Date.now() : 0 };
        if (paused) hold(entry, items.length);
        else render([entry]);
      },
      gap: function (frame) {
        gaps += 1;
        var why = Dashboard.gapReason(frame.reason);
        reasons[why] = (reasons[why] || 0) + (typeof frame.missed === "number" ? frame.missed : NaN);
        if (typeof frame.missed === "number") missed += frame.missed;
        if (frame.reason === "reset") seen.clear();  // offsets start again at 0
        options.onAnomaly();
        if (paused) hold({ gap: frame }, 0);
        else render([{ gap: frame }]);
      },
      clear: function () {
        body.replaceChildren();
        shown = 0;
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
