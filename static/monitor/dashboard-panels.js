// The polled panels of /dashboard/: rates (uPlot) and counters from
// rates.json here; topics, consumer groups, dead letters, broker, live reader
// and watchers from state.json in dashboard-kafka.js, with the polling and
// failure wording shared from here. A failed or odd answer shows
// "unavailable" and polling goes on; nothing here throws past its poll.
// Each part down is named for what it is: a site that cannot be reached (no
// answer, or a proxy's 502/503/504) is not a broker that is down.
"use strict";
window.Dashboard = window.Dashboard || {};

(function (Dashboard) {
  var fmt = Dashboard.fmt;
  var el = Dashboard.el;
  function clock(date) { return date.toLocaleTimeString([], { hour12: false }); }
  function note(node, state, text) { node.dataset.state = state; node.textContent = text; }

  // Fetch url() every `every` ms, one request at a time; refresh() polls now.
  function poll(url, every, onData, onFail) {
    var timer = null;
    var busy = false;
    var again = false;
    function run() {
      clearTimeout(timer);
      if (busy) { again = true; return; }
      busy = true;
      fetch(url(), { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) {
            var failed = new Error("HTTP " + response.status);
            failed.status = response.status;
            throw failed;
          }
          return response.json();
        })
        .then(onData)
        .catch(onFail)
        .finally(function () {
          busy = false;
          if (again) { again = false; run(); } else timer = setTimeout(run, every);
        });
    }
    run();
    return { refresh: run };
  }

  // No answer at all, or a proxy saying the site behind it is down.
  function unreachable(error) {
    return !error.status || error.status === 502 || error.status === 503 || error.status === 504;
  }
  function describe(error) {
    if (!error.status) return "the site cannot be reached";
    if (unreachable(error)) return "the site cannot be reached (HTTP " + error.status + ")";
    if (error.status === 401 || error.status === 403) return "signed out (HTTP " + error.status + "): sign in again";
    return "the site answered HTTP " + error.status;
  }
  // The banner over the page while the site itself cannot be reached.
  function siteDown(error) {
    var banner = document.getElementById("site-down");
    banner.hidden = !error;
    if (error) banner.textContent = "The site cannot be reached (" + (error.status ? "HTTP " + error.status : error.message) + "): nothing on this page is current. Retrying…";
  }

  Dashboard.poll = poll;
  Dashboard.unreachable = unreachable;
  Dashboard.describeFailure = describe;
  Dashboard.siteDown = siteDown;
  Dashboard.note = note;
  Dashboard.clockTime = clock;

  function Rates(url, initialMinutes, onCounters) {
    var chartEl = document.getElementById("rates-chart");
    var noteEl = document.getElementById("rates-note");
    var plot = null;
    var plotKey = "";
    var span = [0, 1];  // the window the server answered for, in epoch seconds
    var minutes = initialMinutes;

    function size() {
      var width = Math.max(200, chartEl.clientWidth);
      return { width: width, height: width < 500 ? 170 : 220 };
    }
    function destroy() { if (plot) { plot.destroy(); plot = null; plotKey = ""; } }

    function draw(data) {
      var xs = Array.isArray(data.buckets) ? data.buckets : [];
      var series = data.series && typeof data.series === "object" ? data.series : {};
      var types = Object.keys(series).sort();
      Dashboard.knownTypes(types);
      if (typeof window.uPlot !== "function") { destroy(); note(noteEl, "error", "Chart library missing"); return; }
      span = [data.start || xs[0], data.end || xs[xs.length - 1]];
      if (!xs.length || !types.length) destroy();
      else {
        var columns = [xs].concat(types.map(function (type) { return series[type]; }));
        var key = types.join("|");
        if (key !== plotKey) {
          destroy();
          plot = new window.uPlot(options(types), columns, chartEl);
          plotKey = key;
        } else {
          plot.setData(columns);
        }
      }
      var any = types.some(function (type) { return (series[type] || []).some(function (v) { return v > 0; }); });
      // The server leaves out the bucket in progress: say up to when the chart goes.
      var upTo = data.end ? " up to " + clock(new Date(data.end * 1000)) : "";
      var buckets = data.bucket_seconds ? data.bucket_seconds + " s buckets" + upTo : "";
      note(noteEl, "ok", (any ? "" : "No events in the last " + minutes + " min · ") + buckets + " · updated " + clock(new Date()));
    }

    function rate(u, v) {
      if (v == null) return "–";
      return (v === 0 ? "0" : v < 0.1 ? v.toFixed(3) : v.toFixed(2)) + "/s";
    }

    function options(types) {
      var stepped = window.uPlot.paths && window.uPlot.paths.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined;
      return Object.assign(size(), {
        scales: {
          x: { time: true, range: function () { return span; } },
          y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; } },
        },
        axes: [
          { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" } },
          { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" }, size: 50, label: "events/s", labelSize: 18 },
        ],
        series: [{}].concat(types.map(function (type) {
          return { label: type, stroke: Dashboard.colorOf(type), width: 2, paths: stepped, points: { show: false }, value: rate };
        })),
        cursor: { drag: { x: false, y: false } },
      });
    }

    function counters(data) {
      var counts = data && typeof data === "object" ? data : {};
      document.getElementById("total").textContent = fmt(counts.total);
      document.getElementById("last-minute").textContent = fmt(counts.last_minute);
      var body = document.querySelector("#counts tbody");
      var byType = counts.by_type || {};
      var lastMinute = counts.last_minute_by_type || {};
      Object.keys(byType).concat(Object.keys(lastMinute)).forEach(function (type) {
        if (body.querySelector('tr[data-type="' + CSS.escape(type) + '"]')) return;
        var row = el("tr");
        row.dataset.type = type;
        row.append(el("td", null, type), el("td", "num count"), el("td", "num last-minute"));
        body.append(row);
      });
      body.querySelectorAll("tr").forEach(function (row) {
        var type = row.dataset.type;
        row.querySelector(".count").textContent = fmt(byType[type] || (counts.by_type ? 0 : undefined));
        row.querySelector(".last-minute").textContent = fmt(lastMinute[type] || (counts.last_minute_by_type ? 0 : undefined));
        row.querySelector("td").style.setProperty("--type-color", Dashboard.colorOf(type));
      });
    }

    var poller = poll(
      function () { return url + "?minutes=" + minutes; },
      5000,
      function (data) {
        draw(data);
        counters(data.counters);
        if (onCounters && data.counters) onCounters(data.counters);
      },
      function (error) {
        note(noteEl, "error", "Rates unavailable: " + describe(error) + "; retrying");
      }
    );
    new ResizeObserver(function () { if (plot) plot.setSize(size()); }).observe(chartEl);
    return {
      setMinutes: function (value) { minutes = value; destroy(); poller.refresh(); },
    };
  }

  // Starts both polls; returns the rates panel, whose window (minutes) can change.
  // hooks: {onCounters(counters), onTopics(names)}.
  Dashboard.Panels = function (root, minutes, hooks) {
    var rates = Rates(root.dataset.ratesUrl, minutes, hooks.onCounters);
    Dashboard.KafkaState(root.dataset.stateUrl, hooks);
    return rates;
  };
})(window.Dashboard);
