// The charts of the admin's analytics page, drawn with uPlot from the
// figures the page carries in #analytics-data. The tables under the charts
// hold every number too, so a chart that cannot be drawn only says so.
"use strict";

(function () {
  var source = document.getElementById("analytics-data");
  if (!source) return;
  var data;
  try {
    data = JSON.parse(source.textContent);
  } catch (error) {
    return;
  }
  var palette = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04", "#dc2626", "#4b5563", "#0d9488"];
  var numberFormat = new Intl.NumberFormat("en");

  function say(node, text) {
    var note = document.createElement("p");
    note.className = "empty";
    note.textContent = text;
    node.replaceChildren(note);
    node.dataset.drawn = "false";
  }

  function size(node) {
    var width = Math.max(240, node.clientWidth - 16);
    return { width: width, height: width < 500 ? 180 : 240 };
  }

  function value(u, v) { return v == null ? "–" : numberFormat.format(v); }

  // UTC on the time axis: the days and buckets are UTC.
  function utc(ts) {
    return typeof window.uPlot.tzDate === "function" ? window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC") : new Date(ts * 1000);
  }

  function draw(id, xs, series, unit, stepped) {
    var node = document.getElementById(id);
    if (!node) return;
    if (typeof window.uPlot !== "function") { say(node, "Chart library missing: the tables below have the figures."); return; }
    var any = series.some(function (s) { return s.values.some(function (v) { return v > 0; }); });
    if (!Array.isArray(xs) || !xs.length || !series.length || !any) { say(node, "Nothing in this range."); return; }
    var paths = stepped && window.uPlot.paths && window.uPlot.paths.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined;
    var options = Object.assign(size(node), {
      tzDate: utc,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; } } },
      axes: [
        { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" } },
        { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" }, size: 56, label: unit, labelSize: 18 },
      ],
      series: [{}].concat(series.map(function (s, index) {
        return { label: s.label, stroke: palette[index % palette.length], width: 2, paths: paths, points: { show: !stepped }, value: value };
      })),
      cursor: { drag: { x: true, y: false } },
    });
    var columns = [xs].concat(series.map(function (s) { return s.values; }));
    node.replaceChildren();
    var plot = new window.uPlot(options, columns, node);
    node.dataset.drawn = "true";
    new ResizeObserver(function () { plot.setSize(size(node)); }).observe(node);
  }

  draw("active-chart", data.days, [{ label: "active users", values: data.active || [] }], "users", false);
  draw("daily-chart", data.days, [
    { label: "posts", values: data.posts || [] },
    { label: "likes", values: data.likes || [] },
    { label: "comments", values: data.comments || [] },
  ], "per day", false);
  var rates = data.rates || {};
  var unit = "events/" + (rates.unit || "bucket");
  function lines(byName) {
    var named = byName && typeof byName === "object" ? byName : {};
    return Object.keys(named).sort().map(function (name) { return { label: name, values: named[name] }; });
  }
  draw("rates-chart", rates.buckets || [], lines(rates.series), unit, true);
  draw("sources-chart", rates.buckets || [], lines(rates.sources), unit, true);
})();
