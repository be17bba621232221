// The rows of the live tail of /dashboard/, one per stream item
// (docs/websocket-protocol.md): the site's own events; other CloudEvents,
// shown the same way with an "unverified" mark and its reason; and records
// that are not CloudEvents at all, with a "not a CloudEvent" mark, the reason,
// and their key, headers and value preview. Also their detail rows and gap
// notices. Content is always set as text.
"use strict";
window.Dashboard = window.Dashboard || {};

(function (Dashboard) {
  var el = Dashboard.el;
  var COLUMNS = 8;
  var GAP_REASONS = {
    slow: "this page fell behind",
    expired: "the broker no longer keeps them (its retention, or the embedded broker rolled over or started again)",
    reset: "the broker started again and lost an unknown number of them",
    limit: "too many to replay",
    stalled: "the server's live reader stalled and started again at the newest events",
    behind: "the server's live reader fell too far behind and started again at the newest events",
  };

  function pad(n, width) { return String(n).padStart(width || 2, "0"); }
  function clock(ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }
  function cut(text, length) { return text.length > length ? text.slice(0, length - 1) + "…" : text; }
  function isoTime(ms) { return typeof ms === "number" && isFinite(ms) ? new Date(ms).toISOString() : "–"; }

  // config: {siteTypes: [...], siteSource: "/eventsite"}
  Dashboard.Rows = function (config) {
    var siteTypes = new Set(config.siteTypes || []);

    function siteSummary(event) {
      var data = event.data && typeof event.data === "object" ? event.data : {};
      if (event.type === "photo.posted") return (data.author || "someone") + ": " + (data.caption || "");
      if (event.type === "user.signed_up") return "new user " + (data.username || "");
      return cut(JSON.stringify(event.data) || "", 160);
    }
    // Another source's event: what it is, where from, and what about.
    function genericSummary(event) {
      return String(event.type) + " from " + String(event.source || "an unnamed source") +
        (event.subject ? " · " + String(event.subject) : "");
    }
    function eventSummary(event) {
      var ours = siteTypes.has(event.type) && event.source === config.siteSource;
      return ours ? siteSummary(event) : genericSummary(event);
    }
    function recordSummary(record) {
      var key = record.key == null ? "" : "key " + record.key + " · ";
      if (record.value == null) return key + "(no value)";
      var binary = record.encoding === "base64" ? "(binary, base64) " : "";
      return cut(key + binary + record.value, 160);
    }

    // The time a row is shown at: the event's own, else the broker's timestamp.
    function timeOf(item) {
      var event = item.event;
      var parsed = event ? Date.parse(event.time) : NaN;
      return isNaN(parsed) ? item.timestamp : parsed;
    }

    function typeCell(item) {
      var cell;
      if (item.record) {
        cell = el("td", "type raw");
        cell.append(Dashboard.badge("raw", "not a CloudEvent", item.reason || "not a CloudEvent"));
        return cell;
      }
      var event = item.event;
      cell = el("td", "type", event.type);
      cell.style.setProperty("--type-color", Dashboard.colorOf(event.type));
      if (item.verified === false) {
        cell.append(" ", Dashboard.badge("unverified", "unverified", item.reason || "not the site's own signed event"));
      }
      return cell;
    }

    function latencyCell(state) {
      if (state.replay) {
        var replayed = el("td", "num latency replayed", "replay");
        replayed.title = "replayed: sent again after it happened";
        return replayed;
      }
      if (isNaN(state.latency)) return el("td", "num latency", "–");
      var cell = el("td", "num latency" + (state.held ? " held" : ""), state.latency + " ms");
      cell.title = state.held ? "held while paused; time to arrive in this page" : "from the event's time to this screen";
      return cell;
    }

    // One item's row and its state: {item, sent, shownAt, latency, replay, held, sample}.
    // arrivedAt: when a row held while paused reached the page (0 if not held).
    function itemRow(item, info, arrivedAt) {
      var event = item.event || null;
      var now = Date.now();
      var time = timeOf(item);
      var held = arrivedAt > 0;
      var state = {
        item: item,
        sent: info.sent,
        shownAt: now,
        latency: typeof time === "number" ? (held ? arrivedAt : now) - time : NaN,
        replay: !!info.replay,
        held: held,
      };
      // Only the site's own events measure the site's path to the screen.
      state.sample = !!event && item.verified !== false && !state.replay && !held && !isNaN(state.latency);
      var row = el("tr", "event");
      row.tabIndex = -1;
      row.setAttribute("aria-expanded", "false");
      row.dataset.kind = event ? "event" : "record";
      row.dataset.topic = item.topic;
      row.dataset.partition = item.partition;
      row.dataset.offset = item.offset;
      row.dataset.verified = String(item.verified !== false);
      if (event) { row.dataset.eventId = event.id; row.dataset.type = event.type; }
      if (state.replay) row.dataset.replay = "true";
      var timeCell = el("td", "time", typeof time === "number" && !isNaN(time) ? clock(time) : (event && event.time) || "–");
      timeCell.title = event ? event.time || "" : "broker timestamp " + isoTime(item.timestamp);
      row.append(
        timeCell,
        typeCell(item),
        el("td", "opt topic", item.topic),
        el("td", "opt", event ? event.actor : ""),
        el("td", "opt", event ? event.subject : ""),
        el("td", "opt position", item.partition + "@" + item.offset),
        latencyCell(state),
        el("td", "summary", event ? eventSummary(event) : recordSummary(item.record))
      );
      return { row: row, state: state };
    }

    function facts(pairs) {
      var list = el("dl", "facts");
      pairs.forEach(function (pair) { list.append(el("dt", null, pair[0]), el("dd", null, pair[1])); });
      return list;
    }

    function eventFacts(state) {
      var item = state.item;
      var event = item.event;
      var time = Date.parse(event.time);
      var ms = function (value) { return value + " ms"; };
      return facts([
        ["Kafka position", item.topic + " · partition " + item.partition + " · offset " + item.offset],
        ["Broker timestamp", isoTime(item.timestamp)],
        ["Event id", event.id],
        ["Source", event.source],
        ["Verified", item.verified === false ? "no: " + (item.reason || "not the site's own signed event") : "yes: the site's own signed event"],
        ["Event time", event.time || "–"],
        ["Event → server send", typeof state.sent === "number" && !isNaN(time) ? ms(state.sent - time) : "–"],
        [state.held ? "Event → this page" : "Event → on screen", isNaN(time) ? "–" : ms(state.latency) +
          (state.replay ? " (replayed)" : state.held ? " (then held while paused)" : "")],
      ]);
    }

    function recordFacts(state) {
      var item = state.item;
      var record = item.record;
      var headers = Object.keys(record.headers || {});
      var size = typeof record.size === "number" ? Dashboard.fmt(record.size) + (record.size === 1 ? " byte" : " bytes") : "–";
      return facts([
        ["Not a CloudEvent", item.reason || "–"],
        ["Kafka position", item.topic + " · partition " + item.partition + " · offset " + item.offset],
        ["Broker timestamp", isoTime(item.timestamp)],
        ["Key", record.key == null ? "(none)" : record.key],
        ["Headers", headers.length ? headers.map(function (name) {
          var value = record.headers[name];
          return name + ": " + (value == null ? "(null)" : value);
        }).join("\n") : "(none)"],
        ["Size", size + (record.truncated ? " (the preview shows the beginning)" : "")],
        ["Value", record.value == null ? "(none)" : record.encoding === "base64" ? "not text: shown in base64" : "text (UTF-8)"],
      ]);
    }

    function detailRow(state) {
      var item = state.item;
      var row = el("tr", "detail");
      var cell = el("td");
      cell.colSpan = COLUMNS;
      var body;
      if (item.record) {
        body = el("pre", "json value", item.record.value == null ? "" : item.record.value);
        body.setAttribute("aria-label", "Record value preview" + (item.record.encoding ? " (" + item.record.encoding + ")" : ""));
        cell.append(recordFacts(state), body);
      } else {
        body = el("pre", "json", JSON.stringify(item.event, null, 2));
        body.setAttribute("aria-label", "Event envelope as JSON");
        cell.append(eventFacts(state), body);
      }
      body.tabIndex = 0;
      row.append(cell);
      return row;
    }

    function gapRow(frame) {
      var row = el("tr", "gap");
      var cell = el("td");
      cell.colSpan = COLUMNS;
      var count = frame.missed == null ? "Some events" : frame.missed + (frame.missed === 1 ? " event" : " events");
      cell.textContent = "⚠ " + count + " will not be shown: " + (GAP_REASONS[frame.reason] || frame.reason || "missed");
      row.append(cell);
      return row;
    }

    return { item: itemRow, detail: detailRow, gap: gapRow };
  };
  Dashboard.gapReason = function (reason) { return GAP_REASONS[reason] || reason || "missed"; };
})(window.Dashboard);
