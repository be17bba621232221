// The polled panels of /dashboard/: rates (uPlot) and counters from
// rates.json, Kafka topics, consumer groups, dead letters, broker, live
// reader and watchers from state.json. A failed or odd answer shows
// "unavailable" and polling goes on; nothing here throws past its poll.
// Each part down is named for what it is: a site that cannot be reached (no
// answer, or a proxy's 502/503/504) is not a broker that is down, and a lag
// the broker's figures cannot give is "unknown", never 0.
"use strict";
window.Dashboard = window.Dashboard || {};

(function (Dashboard) {
  var numberFormat = new Intl.NumberFormat("en");

  function fmt(value) {
    return typeof value === "number" && isFinite(value) ? numberFormat.format(value) : "–";
  }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
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

  function Rates(url, initialMinutes) {
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
      function (data) { draw(data); counters(data.counters); },
      function (error) {
        note(noteEl, "error", "Rates unavailable: " + describe(error) + "; retrying");
      }
    );
    new ResizeObserver(function () { if (plot) plot.setSize(size()); }).observe(chartEl);
    return {
      setMinutes: function (value) { minutes = value; destroy(); poller.refresh(); },
    };
  }

  function State(url) {
    var noteEl = document.getElementById("state-note");
    var topicsBody = document.querySelector("#topics tbody");
    var groupsBody = document.querySelector("#groups tbody");

    function row(cells) {
      var tr = el("tr");
      cells.forEach(function (cell) { tr.append(cell); });
      return tr;
    }
    function num(value, className) { return el("td", "num" + (className ? " " + className : ""), fmt(value)); }

    function topics(list) {
      var rows = [];
      (Array.isArray(list) ? list : []).forEach(function (topic) {
        (topic.partitions || []).forEach(function (p, index) {
          var name = el("td", index ? "repeat" : "", topic.name);
          rows.push(row([name, num(p.partition), num(p.start), num(p.end), num(p.end - p.start, "opt")]));
        });
      });
      topicsBody.replaceChildren.apply(topicsBody, rows);
    }

    function groups(list) {
      var rows = [];
      (Array.isArray(list) ? list : []).forEach(function (group) {
        (group.partitions || []).forEach(function (p, index) {
          var name = el("td", index ? "repeat" : "");
          if (!index) {
            name.append(el("span", "group-name", group.group), el("small", "group-topic", group.topic || ""));
            name.title = group.lag == null && group.lag_unknown ? "total lag unknown: " + group.lag_unknown : "total lag " + fmt(group.lag);
          }
          var tr = row([name, num(p.partition), num(p.committed), num(p.end, "opt"), lagCell(p)]);
          tr.dataset.group = group.group;
          rows.push(tr);
        });
      });
      groupsBody.replaceChildren.apply(groupsBody, rows);
    }

    // A lag the broker's figures cannot give says so, and why, rather than 0.
    function lagCell(p) {
      if (p.lag == null && p.lag_unknown) {
        var cell = el("td", "num lag-unknown lagging", "unknown");
        cell.title = p.lag_unknown;
        return cell;
      }
      return num(p.lag, p.lag > 0 ? "lagging" : "");
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

    function health(data) {
      document.getElementById("watching").textContent = fmt(data.watching);
      var broker = document.getElementById("broker");
      var state = data.broker || {};
      broker.dataset.ok = state.ok === true ? "true" : state.ok === false ? "false" : "";
      broker.textContent = state.ok === true ? "Reachable" : state.ok === false ? "Down" : "–";
      broker.title = state.error || "";
      liveReader(data.live_reader);
    }

    var TROUBLES = { stalled: "Stalled", behind: "Behind", broker_silent: "No broker" };
    // The live reader of the web process that answered state.json.
    function liveReader(reader) {
      var node = document.getElementById("live-reader");
      reader = reader && typeof reader === "object" ? reader : null;
      var skip = reader && reader.skip ? reader.skip : null;
      var skipped = skip ? "skipped " + fmt(skip.skipped) + " events at " + clock(new Date(skip.at * 1000)) + " (" + skip.reason + ")" : "";
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

    poll(
      function () { return url; },
      2000,
      function (data) {
        siteDown(null);
        health(data);
        topics(data.topics);
        groups(data.groups);
        deadLetters(data.dead_letters);
        var broker = data.broker && data.broker.ok === false ? " · broker: " + (data.broker.error || "down") : "";
        note(noteEl, broker ? "error" : "ok", "Updated " + clock(new Date()) + broker);
      },
      function (error) {
        // The site did not answer: what the broker and the reader do is unknown, not down.
        siteDown(unreachable(error) ? error : null);
        note(noteEl, "error", "Kafka state unavailable: " + describe(error) + "; retrying");
        document.getElementById("watching").textContent = "–";
        var broker = document.getElementById("broker");
        broker.dataset.ok = "";
        broker.textContent = "Unknown";
        broker.title = "not known while " + describe(error);
        liveReader(null);
      }
    );
  }

  // Starts both polls; returns the rates panel, whose window (minutes) can change.
  Dashboard.Panels = function (root, minutes) {
    var rates = Rates(root.dataset.ratesUrl, minutes);
    State(root.dataset.stateUrl);
    return rates;
  };
})(window.Dashboard);
