// /dashboard/: wires the stream to the tail, the filter form to the URL and
// the server, the keyboard shortcuts, and the health strip.
"use strict";
(function (Dashboard) {
  var MAX_ROWS = 500;
  var HISTORY = 200;
  var TEXT_FIELDS = ["actor", "subject", "text"];
  // What the "Show" choice asks the server for.
  var SHOWN = {
    verified: { verified: true },
    unverified: { kind: "event", verified: false },
    records: { kind: "record" },
  };
  var root = document.getElementById("dashboard");
  var form = document.getElementById("filters");
  var filterError = document.getElementById("filter-error");
  var topicNames = document.getElementById("topic-names");
  var data = Dashboard.pageData();
  var types = Dashboard.TypeList(data.seen_types);
  Dashboard.knownTypes(Object.keys(data.seen_types || {}));

  function showOf(filter) {
    return Object.keys(SHOWN).find(function (name) {
      return SHOWN[name].kind === filter.kind && SHOWN[name].verified === filter.verified;
    }) || "";
  }
  function withShow(filter, show) {
    return SHOWN[show] ? Object.assign(filter, SHOWN[show]) : filter;
  }

  // The filter as the URL's query string says
  // (?types=a,b&topics=t&show=records&actor=..&subject=..&text=..). Any type
  // is taken, seen or not.
  function filterFromUrl() {
    var query = new URLSearchParams(location.search);
    var filter = {};
    var wanted = (query.get("types") || "").split(",").map(function (type) { return type.trim(); }).filter(types.valid);
    if (wanted.length) filter.types = Array.from(new Set(wanted)).sort().slice(0, 100);
    var topic = (query.get("topics") || "").trim().slice(0, 200);
    if (topic) filter.topics = topic.split(",").filter(Boolean).sort();
    TEXT_FIELDS.forEach(function (key) {
      var value = (query.get(key) || "").trim().slice(0, 200);
      if (value) filter[key] = value;
    });
    return withShow(filter, query.get("show"));
  }

  function filterFromForm() {
    var filter = {};
    var checked = types.selected();
    if (checked.length) filter.types = checked;
    var topic = form.elements.topic.value.trim();
    if (topic) filter.topics = [topic];
    TEXT_FIELDS.forEach(function (key) {
      var value = form.elements[key].value.trim();
      if (value) filter[key] = value;
    });
    return withShow(filter, form.elements.show.value);
  }

  function showFilter(filter) {
    types.show(filter.types || []);
    form.elements.topic.value = (filter.topics || []).join(",");
    form.elements.show.value = showOf(filter);
    TEXT_FIELDS.forEach(function (key) { form.elements[key].value = filter[key] || ""; });
  }

  function writeUrl(filter, minutes) {
    var query = new URLSearchParams();
    if (filter.types) query.set("types", filter.types.join(","));
    if (filter.topics) query.set("topics", filter.topics.join(","));
    var show = showOf(filter);
    if (show) query.set("show", show);
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
  var tail = Dashboard.Tail({
    maxRows: MAX_ROWS,
    onAnomaly: showAnomalies,
    onItems: types.sawItems,
    config: { siteTypes: data.site_types, siteSource: data.site_source },
  });
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

  // A type typed in joins the list, checked; a bad one says why.
  function addTyped() {
    var problem = types.addTyped();
    filterError.textContent = problem || "";
    filterError.hidden = !problem;
    return !problem;
  }

  var typing = null;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(typing);
    if (addTyped()) apply();
  });
  document.getElementById("add-type").addEventListener("click", function () { if (addTyped()) apply(); });
  form.addEventListener("change", function (event) {
    if (event.target.name === "types" || event.target.name === "show") apply();
  });
  form.addEventListener("input", function (event) {
    if (event.target.name === "types" || event.target.id === "filter-type" || event.target.name === "show") return;
    clearTimeout(typing);
    typing = setTimeout(apply, 400);
  });
  form.addEventListener("reset", function () { setTimeout(function () { types.show([]); apply(); }, 0); });
  form.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && event.target.matches("input")) event.target.blur();
  });

  var rates = Dashboard.Panels(root, minutes, {
    onCounters: function (counters) { types.recorded(counters.by_type, counters.sources_by_type); },
    onTopics: function (names) {
      topicNames.replaceChildren.apply(topicNames, names.map(function (name) {
        var option = Dashboard.el("option");
        option.value = name;
        return option;
      }));
    },
  });
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
    latencyEl.title = stats ? stats.count + " live rows of the site's own events in the last minute" : "no live rows of the site's own events in the last minute";
  }, 1000);
  showAnomalies();
})(window.Dashboard);
