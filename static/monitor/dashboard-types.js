// The type filter of /dashboard/: one checkbox per event type actually seen,
// of any source, with its count (all time, as analytics recorded it, or as
// this page's stream showed it if that is more), and any other type typed in,
// seen or not. The server filters; this only lists and picks.
"use strict";
window.Dashboard = window.Dashboard || {};

(function (Dashboard) {
  var el = Dashboard.el;
  var MAX_TYPE = 200;  // as the server accepts (monitor/live/filters.py)
  var MAX_TYPES = 100;

  // initial: {type: count} recorded so far (from the page's data).
  Dashboard.TypeList = function (initial) {
    var container = document.getElementById("type-options");
    var typed = document.getElementById("filter-type");
    var recorded = Object.assign({}, initial || {});
    var sources = {};  // type -> {source: count}, from analytics
    var seenHere = {};  // type -> items this page's stream showed
    var counted = new Set();  // "topic/partition/offset" of the items counted in seenHere

    function box(type) {
      return container.querySelector('input[name="types"][value="' + CSS.escape(type) + '"]');
    }

    function describe(type) {
      var parts = [];
      var bySource = sources[type] || {};
      var names = Object.keys(bySource);
      if (recorded[type]) {
        parts.push(Dashboard.fmt(recorded[type]) + " recorded by analytics" + (names.length ? " (" + names.map(function (source) {
          return "from " + source + ": " + Dashboard.fmt(bySource[source]);
        }).join(", ") + ")" : ""));
      }
      if (seenHere[type]) parts.push(Dashboard.fmt(seenHere[type]) + " shown in this page");
      return parts.length ? parts.join("; ") : "not seen yet";
    }

    // The type's checkbox (made, in name order, if it is not there yet).
    function option(type) {
      var found = box(type);
      if (found) return found;
      var input = el("input");
      input.type = "checkbox";
      input.name = "types";
      input.value = type;
      var label = el("label", "check");
      label.dataset.type = type;
      label.style.setProperty("--type-color", Dashboard.colorOf(type));
      label.append(input, " " + type + " ", el("span", "type-count"));
      var after = Array.from(container.children).find(function (other) { return other.dataset.type > type; });
      container.insertBefore(label, after || null);
      refresh(type);
      return input;
    }

    function refresh(type) {
      var input = box(type);
      if (!input) return;
      var label = input.closest("label");
      var count = Math.max(recorded[type] || 0, seenHere[type] || 0);
      label.querySelector(".type-count").textContent = count ? Dashboard.fmt(count) : "not seen";
      label.title = describe(type);
    }

    Object.keys(recorded).forEach(option);

    return {
      // Analytics' totals of all time: {type: count} and {type: {source: count}}.
      recorded: function (byType, bySource) {
        Object.keys(byType || {}).forEach(function (type) {
          if (!byType[type] && !box(type)) return;  // a type never recorded is not one seen
          recorded[type] = byType[type];
          option(type);
          refresh(type);
        });
        sources = bySource && typeof bySource === "object" ? bySource : sources;
      },
      // Items the stream showed: their types are seen, counted once per record.
      sawItems: function (items) {
        items.forEach(function (item) {
          if (!item.event || typeof item.event.type !== "string") return;
          var key = item.topic + "/" + item.partition + "/" + item.offset;
          if (counted.has(key)) return;
          counted.add(key);
          if (counted.size > 50000) counted.delete(counted.values().next().value);
          seenHere[item.event.type] = (seenHere[item.event.type] || 0) + 1;
          option(item.event.type);
          refresh(item.event.type);
        });
      },
      selected: function () {
        return Array.from(container.querySelectorAll('input[name="types"]:checked')).map(function (input) { return input.value; }).sort();
      },
      // Check exactly ``types`` (listing those not seen yet).
      show: function (types) {
        types.forEach(option);
        container.querySelectorAll('input[name="types"]').forEach(function (input) {
          input.checked = types.indexOf(input.value) >= 0;
        });
      },
      // The type typed in, checked in the list; an error text, or null.
      addTyped: function () {
        var type = typed.value.trim();
        if (!type) return null;
        if (type.length > MAX_TYPE) return "A type is at most " + MAX_TYPE + " characters.";
        if (this.selected().length >= MAX_TYPES && !(box(type) || {}).checked) return "At most " + MAX_TYPES + " types at once.";
        option(type).checked = true;
        typed.value = "";
        return null;
      },
      // A type as the URL or a filter names it: any non-empty text within bounds.
      valid: function (type) { return typeof type === "string" && type.length > 0 && type.length <= MAX_TYPE; },
    };
  };
})(window.Dashboard);
