// /dashboard/: wires the stream to the tail, the filter form to the URL and
// the server, the keyboard shortcuts, and the health strip.
"use strict";
(function (Dashboard) {
  var MAX_ROWS = 500;
  var HISTORY = 200;
  var TEXT_FIELDS = ["actor", "subject", "text"];
  var root = document.getElementById("dashboard");
  var form = document.getElementById("filters");
  var filterError = document.getElementById("filter-error");
  var knownTypes = Array.from(form.querySelectorAll('input[name="types"]')).map(function (box) { return box.value; });
  Dashboard.knownTypes(knownTypes);

  // The filter as the URL's query string says (?types=a,b&actor=..&subject=..&text=..).
  function filterFromUrl() {
    var query = new URLSearchParams(location.search);
    var filter = {};
    var types = (query.get("types") || "").split(",").filter(function (type) { return knownTypes.indexOf(type) >= 0; });
    if (types.length) filter.types = types.sort();
    TEXT_FIELDS.forEach(function (key) {
      var value = (query.get(key) || "").trim().slice(0, 200);
      if (value) filter[key] = value;
    });
    return filter;
  }

  function filterFromForm() {
    var filter = {};
    var types = Array.from(form.querySelectorAll('input[name="types"]:checked')).map(function (box) { return box.value; });
    if (types.length) filter.types = types.sort();
    TEXT_FIELDS.forEach(function (key) {
      var value = form.elements[key].value.trim();
      if (value) filter[key] = value;
    });
    return filter;
  }

  function showFilter(filter) {
    form.querySelectorAll('input[name="types"]').forEach(function (box) {
      box.checked = !!filter.types && filter.types.indexOf(box.value) >= 0;
    });
    TEXT_FIELDS.forEach(function (key) { form.elements[key].value = filter[key] || ""; });
  }

  function writeUrl(filter, minutes) {
    var query = new URLSearchParams();
    if (filter.types) query.set("types", filter.types.join(","));
    TEXT_FIELDS.forEach(function (key) { if (filter[key]) query.set(key, filter[key]); });
    if (minutes !== 15) query.set("minutes", String(minutes));
    var search = query.toString();
    history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
  }

  function emptyText(filter) {
    return Object.keys(filter).length ? "No matching events yet." : "Waiting for events…";
  }

  var filter = filterFromUrl();
  var asked = +new URLSearchParams(location.search).get("minutes");
  var minutes = [5, 15, 60].indexOf(asked) >= 0 ? asked : 15;
  showFilter(filter);
  document.getElementById("minutes-" + minutes).checked = true;

  var anomaliesEl = document.getElementById("anomalies");
  function showAnomalies() {
    var found = tail.anomalies();
    document.getElementById("duplicates").textContent = String(found.duplicates);
    document.getElementById("gaps").textContent = String(found.gaps);
    anomaliesEl.title = Object.keys(found.reasons).map(function (why) {
      var count = found.reasons[why];
      return (isNaN(count) ? "some" : count) + " missed: " + why;
    }).join("\n");
    anomaliesEl.dataset.bad = String(found.duplicates > 0 || found.gaps > 0);
  }
  var tail = Dashboard.Tail({ maxRows: MAX_ROWS, onAnomaly: showAnomalies });
  tail.setEmptyText(emptyText(filter));

  var stream = window.EventStream({
    filter: filter,
    history: HISTORY,
    onEvents: tail.add,
    onGap: tail.gap,
    onFrame: function (frame) {
      if (frame.type === "subscribed") filterError.hidden = true;
      if (frame.type === "error" && (frame.code === "bad_filter" || frame.code === "bad_replay")) {
        filterError.textContent = "The server refused this filter: " + frame.message;
        filterError.hidden = false;
      }
    },
  });

  function apply() {
    var next = filterFromForm();
    if (JSON.stringify(next) === JSON.stringify(filter)) return;
    filter = next;
    writeUrl(filter, minutes);
    tail.restart();
    tail.setEmptyText(emptyText(filter));
    stream.subscribe(filter, { history: HISTORY });
  }

  var typing = null;
  form.addEventListener("submit", function (event) { event.preventDefault(); clearTimeout(typing); apply(); });
  form.addEventListener("change", function (event) { if (event.target.name === "types") apply(); });
  form.addEventListener("input", function (event) {
    if (event.target.name === "types") return;
    clearTimeout(typing);
    typing = setTimeout(apply, 400);
  });
  form.addEventListener("reset", function () { setTimeout(apply, 0); });
  form.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && event.target.matches("input")) event.target.blur();
  });

  var rates = Dashboard.Panels(root, minutes);
  document.getElementById("rates-window").addEventListener("change", function (event) {
    minutes = +event.target.value;
    writeUrl(filter, minutes);
    rates.setMinutes(minutes);
  });

  document.getElementById("pause").addEventListener("click", function () { tail.togglePause(); });
  document.getElementById("clear").addEventListener("click", function () { tail.clear(); });

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    // Letters typed into a field are text, not shortcuts.
    if (event.target.closest("textarea, select, [contenteditable], input:not([type=checkbox], [type=radio], [type=button], [type=submit], [type=reset])")) return;
    if (event.key === "p") tail.togglePause();
    else if (event.key === "c") tail.clear();
    else if (event.key === "/") form.elements.text.focus();
    else return;
    event.preventDefault();
  });

  var latencyEl = document.getElementById("latency");
  setInterval(function () {
    var stats = tail.latency();
    latencyEl.textContent = stats ? stats.p50 + " / " + stats.p95 + " ms" : "–";
    latencyEl.title = stats ? stats.count + " live rows in the last minute" : "no live rows in the last minute";
  }, 1000);
  showAnomalies();
})(window.Dashboard);
