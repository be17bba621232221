// The panels of /dashboard/ polled from state.json: every topic on the
// cluster (the site's, the watched and internal ones marked), every
// consumer group (the site's marked) with its lag in records and in time,
// dead letters, the broker, the live reader and who watches. A lag the
// broker's figures cannot give is "unknown", with why, never 0.
"use strict";
window.Dashboard = window.Dashboard || {};

(function (Dashboard) {
  var el = Dashboard.el;
  var fmt = Dashboard.fmt;
  var ROLES = {
    events: ["site events", "the topic the site writes its events to"],
    "dead letters": ["dead letters", "where the site's consumer groups put records they could not process"],
  };

  function num(value, className) { return el("td", "num" + (className ? " " + className : ""), fmt(value)); }
  function row(cells) {
    var tr = el("tr");
    cells.forEach(function (cell) { tr.append(cell); });
    return tr;
  }

  function topicRow(topic) {
    var name = el("td", "topic-name");
    name.append(el("span", null, topic.name));
    var role = ROLES[topic.role];
    if (role) name.append(" ", Dashboard.badge("role", role[0], role[1]));
    if (topic.watched) name.append(" ", Dashboard.badge("watched", "watched", "the live stream below shows it"));
    if (topic.internal) name.append(" ", Dashboard.badge("internal", "internal", "the cluster's own topic"));
    var partitions = Array.isArray(topic.partitions) ? topic.partitions : [];
    var offsets = partitions.map(function (p) { return p.partition + ": " + fmt(p.start) + "–" + fmt(p.end); }).join(" · ");
    var tr = row([name, num(partitions.length), num(topic.records), el("td", "opt offsets", offsets)]);
    tr.dataset.topic = topic.name;
    if (topic.internal) tr.dataset.internal = "true";
    return tr;
  }

  // A lag the broker's figures cannot give says so, and why, rather than 0.
  function lagCell(p) {
    if (p.lag == null) {
      var cell = el("td", "num lag-unknown lagging", "unknown");
      cell.title = p.lag_unknown || "";
      return cell;
    }
    return num(p.lag, p.lag > 0 ? "lagging" : "");
  }
  function lagTimeCell(p) {
    if (p.lag_seconds == null) {
      var cell = el("td", "num lag-time lag-unknown", p.lag == null ? "–" : "unknown");
      cell.title = p.lag_seconds_unknown || p.lag_unknown || "";
      return cell;
    }
    var time = el("td", "num lag-time" + (p.lag_seconds > 0 ? " lagging" : ""), Dashboard.duration(p.lag_seconds));
    time.title = "age of the oldest record not committed";
    return time;
  }

  function groupName(group) {
    var cell = el("td", "group");
    cell.append(el("span", "group-name", group.group));
    if (group.site) cell.append(" ", Dashboard.badge("site", "site", "one of the site's own consumer groups"));
    if (group.empty) cell.append(" ", Dashboard.badge("empty", "empty", "it has committed no offsets"));
    var total = group.lag == null ? "lag unknown" : "lag " + fmt(group.lag) +
      (group.lag_seconds == null ? "" : " · " + Dashboard.duration(group.lag_seconds));
    cell.append(el("small", "group-total", total));
    cell.title = group.lag == null ? "total lag unknown: " + (group.lag_unknown || "") :
      "total lag " + fmt(group.lag) + (group.lag_seconds == null ? "; its age unknown: " + (group.lag_seconds_unknown || "") :
        "; oldest record not committed: " + Dashboard.duration(group.lag_seconds) + " old");
    return cell;
  }

  function groupRows(group) {
    var partitions = Array.isArray(group.partitions) ? group.partitions : [];
    if (!partitions.length) {
      var why = el("td", "group-note", group.error || group.lag_unknown || "no committed offsets");
      why.colSpan = 5;
      var lone = row([groupName(group), why]);
      lone.dataset.group = group.group;
      return [lone];
    }
    return partitions.map(function (p, index) {
      var where = el("td", "partition", p.topic + " · " + p.partition);
      var tr = row([index ? el("td", "repeat") : groupName(group), where, num(p.committed), num(p.end, "opt"), lagCell(p), lagTimeCell(p)]);
      tr.dataset.group = group.group;
      tr.dataset.topic = p.topic;
      return tr;
    });
  }

  function deadLetters(info) {
    info = info || {};
    document.getElementById("dead-count").textContent = fmt(info.count);
    var unredriven = document.getElementById("dead-unredriven");
    unredriven.textContent = fmt(info.unredriven);
    unredriven.dataset.bad = String(info.unredriven > 0);
    // Only a path on this site becomes the link.
    if (typeof info.url === "string" && /^\/(?!\/)/.test(info.url)) document.getElementById("dead-link").href = info.url;
  }

  var TROUBLES = { stalled: "Stalled", behind: "Behind", broker_silent: "No broker" };
  // The live reader of the web process that answered state.json.
  function liveReader(reader) {
    var node = document.getElementById("live-reader");
    reader = reader && typeof reader === "object" ? reader : null;
    var skip = reader && reader.skip ? reader.skip : null;
    var skipped = skip ? "skipped " + fmt(skip.skipped) + " events at " + Dashboard.clockTime(new Date(skip.at * 1000)) + " (" + skip.reason + ")" : "";
    if (!reader) {
      node.dataset.state = "";
      node.textContent = "–";
      node.title = "";
    } else if (reader.ok === false) {
      node.dataset.state = "error";
      var behind = typeof reader.behind === "number" ? " · " + fmt(reader.behind) + " behind" : "";
      node.textContent = (TROUBLES[reader.trouble] || "Not keeping up") + behind;
      node.title = (reader.reason || "") + (skipped ? "; earlier " + skipped : "");
    } else if (!reader.running) {
      node.dataset.state = "";
      node.textContent = "Idle";
      node.title = "no live reader runs in the web process that answered (nobody watches through it)" + (skipped ? "; earlier " + skipped : "");
    } else {
      node.dataset.state = "live";
      node.textContent = skip ? "Keeping up · " + skipped : "Keeping up";
      node.title = fmt(reader.behind) + " behind the broker's end";
    }
  }

  function health(data) {
    document.getElementById("watching").textContent = fmt(data.watching);
    var broker = document.getElementById("broker");
    var state = data.broker || {};
    broker.dataset.ok = state.ok === true ? "true" : state.ok === false ? "false" : "";
    broker.textContent = state.ok === true ? "Reachable" : state.ok === false ? "Down" : "–";
    broker.title = state.error || "";
    liveReader(data.live_reader);
  }

  // hooks.onTopics(names): the topics the live stream shows, each time they are read.
  Dashboard.KafkaState = function (url, hooks) {
    var noteEl = document.getElementById("state-note");
    var topicsBody = document.querySelector("#topics tbody");
    var groupsBody = document.querySelector("#groups tbody");

    Dashboard.poll(
      function () { return url; },
      2000,
      function (data) {
        Dashboard.siteDown(null);
        health(data);
        var topics = Array.isArray(data.topics) ? data.topics : [];
        topicsBody.replaceChildren.apply(topicsBody, topics.map(topicRow));
        var groups = Array.isArray(data.groups) ? data.groups : [];
        groupsBody.replaceChildren.apply(groupsBody, [].concat.apply([], groups.map(groupRows)));
        deadLetters(data.dead_letters);
        var watched = topics.filter(function (topic) { return topic.watched; });
        if (hooks.onTopics && watched.length) hooks.onTopics(watched.map(function (topic) { return topic.name; }));
        var broker = data.broker && data.broker.ok === false ? " · broker: " + (data.broker.error || "down") : "";
        Dashboard.note(noteEl, broker ? "error" : "ok", "Updated " + Dashboard.clockTime(new Date()) + broker);
      },
      function (error) {
        // The site did not answer: what the broker and the reader do is unknown, not down.
        var reason = Dashboard.describeFailure(error);
        Dashboard.siteDown(Dashboard.unreachable(error) ? error : null);
        Dashboard.note(noteEl, "error", "Kafka state unavailable: " + reason + "; retrying");
        document.getElementById("watching").textContent = "–";
        var broker = document.getElementById("broker");
        broker.dataset.ok = "";
        broker.textContent = "Unknown";
        broker.title = "not known while " + reason;
        liveReader(null);
      }
    );
  };
})(window.Dashboard);
