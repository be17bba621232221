// What the parts of /dashboard/ share: building elements (content always as
// text), numbers, durations, badges, a stable colour per event type, and the
// page's starting data (the json_script "dashboard-data").
"use strict";
window.Dashboard = window.Dashboard || {};

(function (Dashboard) {
  var PALETTE = ["#2f6fed", "#e8772e", "#1f8a4c", "#9b51e0", "#c0362c", "#0e9aa7", "#b8860b", "#d6336c"];
  var known = [];
  var numberFormat = new Intl.NumberFormat("en");

  // A stable colour per event type, shared by the tail, the type list and the chart.
  Dashboard.colorOf = function (type) {
    var index = known.indexOf(type);
    if (index < 0) { known.push(type); known.sort(); index = known.indexOf(type); }
    return PALETTE[index % PALETTE.length];
  };
  Dashboard.knownTypes = function (types) { types.forEach(Dashboard.colorOf); };

  Dashboard.el = function (tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  };

  Dashboard.fmt = function (value) {
    return typeof value === "number" && isFinite(value) ? numberFormat.format(value) : "–";
  };

  // 0.85 -> "850 ms", 75 -> "1 min 15 s", 7300 -> "2 h 1 min", 200000 -> "2 d 7 h".
  Dashboard.duration = function (seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return (seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)) + " s";
    var units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
    var left = Math.round(seconds);
    for (var i = 0; units[i][1] > left; i++);
    var big = Math.floor(left / units[i][1]);
    var next = units[i + 1];
    var small = next ? Math.floor((left - big * units[i][1]) / next[1]) : 0;
    return big + " " + units[i][0] + (small ? " " + small + " " + next[0] : "");
  };

  // A short mark with its reason as accessible text: the reason is the
  // title (on hover) and also visually hidden text (for screen readers).
  Dashboard.badge = function (kind, label, reason) {
    var node = Dashboard.el("span", "badge " + kind, label);
    if (reason) {
      node.title = reason;
      node.append(Dashboard.el("span", "visually-hidden", ": " + reason));
    }
    return node;
  };

  // The page's starting data, from the server.
  Dashboard.pageData = function () {
    var node = document.getElementById("dashboard-data");
    try { return JSON.parse(node ? node.textContent : "{}") || {}; } catch (error) { return {}; }
  };
})(window.Dashboard);
