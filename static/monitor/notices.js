// The signed-in user's notices in the top bar: the unread count and a panel of
// the latest ones, live from /ws/notices/ (protocol: monitor/notice_stream.py).
//
// The top bar's link (#notices-toggle) leads to /notices/ without script; with
// it, the link opens and closes the panel (Enter, Space or a click; Escape
// closes it and gives the focus back). The socket reconnects with backoff
// after a disconnect and starts over from the welcome it then gets. Notice
// text is always set as text, never as HTML.
"use strict";
(function () {
  var toggle = document.getElementById("notices-toggle");
  var countEl = document.getElementById("notices-count");
  if (!toggle || !countEl || !window.WebSocket) return;

  var KEEP = 10;  // notices the panel shows, as the welcome brings them
  var FIRST_DELAY = 500;
  var MAX_DELAY = 15000;
  var PING_AFTER = 25000;  // a quiet connection is pinged...
  var DEAD_AFTER = 60000;  // ...and one silent this long is taken as dead
  var CLOSE_UNAUTHENTICATED = 4401;

  var notices = [];  // newest first
  var unread = 0;
  var socket = null;
  var delay = FIRST_DELAY;
  var lastFrameAt = 0;

  // The panel, right after the link so that Tab moves into it.
  var menu = document.createElement("span");
  menu.className = "notices-menu";
  toggle.parentNode.insertBefore(menu, toggle);
  menu.appendChild(toggle);
  var panel = document.createElement("div");
  panel.id = "notices-panel";
  panel.className = "notices-panel";
  panel.setAttribute("role", "region");
  panel.setAttribute("aria-label", "Notices");
  panel.hidden = true;
  var head = document.createElement("div");
  head.className = "notices-head";
  var title = document.createElement("strong");
  title.textContent = "Notices";
  var readAll = document.createElement("button");
  readAll.type = "button";
  readAll.className = "link";
  readAll.id = "notices-read-all";
  readAll.textContent = "Mark all read";
  head.append(title, readAll);
  var list = document.createElement("ul");
  list.id = "notices-list";
  list.className = "notices-list";
  var empty = document.createElement("p");
  empty.className = "notices-empty";
  empty.textContent = "No notices yet.";
  var problem = document.createElement("p");
  problem.className = "notices-problem";
  problem.setAttribute("role", "status");
  var foot = document.createElement("p");
  foot.className = "notices-foot";
  var all = document.createElement("a");
  all.href = toggle.getAttribute("href");
  all.textContent = "See all notices";
  foot.appendChild(all);
  panel.append(head, problem, list, empty, foot);
  menu.appendChild(panel);
  toggle.setAttribute("role", "button");
  toggle.setAttribute("aria-controls", panel.id);
  toggle.setAttribute("aria-expanded", "false");

  function setOpen(open) {
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  }

  toggle.addEventListener("click", function (event) {
    event.preventDefault();
    setOpen(panel.hidden);
  });
  toggle.addEventListener("keydown", function (event) {
    if (event.key === " ") { event.preventDefault(); setOpen(panel.hidden); }
  });
  menu.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !panel.hidden) { setOpen(false); toggle.focus(); }
  });
  menu.addEventListener("focusout", function (event) {
    if (event.relatedTarget && !menu.contains(event.relatedTarget)) setOpen(false);
  });
  document.addEventListener("click", function (event) {
    if (!panel.hidden && !menu.contains(event.target)) setOpen(false);
  });

  function showCount(count) {
    unread = Math.max(0, count | 0);
    countEl.textContent = String(unread);
    countEl.dataset.count = String(unread);
    countEl.hidden = unread === 0;
    readAll.disabled = unread === 0;
  }

  function item(notice) {
    var li = document.createElement("li");
    li.className = "notice" + (notice.read ? "" : " unread");
    li.dataset.noticeId = notice.id;
    li.dataset.kind = notice.kind;
    var text = document.createElement(notice.link ? "a" : "span");
    text.className = "text";
    if (notice.link) text.href = notice.link;
    text.textContent = notice.text;  // text, never HTML
    var when = document.createElement("time");
    when.dateTime = notice.created_at;
    when.textContent = new Date(notice.created_at).toLocaleString();
    li.append(text, when);
    return li;
  }

  function render() {
    list.replaceChildren.apply(list, notices.map(item));
    empty.hidden = notices.length > 0;
  }

  function onFrame(frame) {
    if (frame.type === "welcome") {
      delay = FIRST_DELAY;
      problem.textContent = "";
      menu.dataset.state = "live";
      notices = frame.notices.slice(0, KEEP);
      showCount(frame.unread);
      render();
    } else if (frame.type === "notice") {
      var notice = frame.notice;
      notices = notices.filter(function (n) { return n.id !== notice.id; });
      notices.unshift(notice);
      notices = notices.slice(0, KEEP);
      showCount(frame.unread);
      render();
    }
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/notices/");
    menu.dataset.state = "connecting";
    socket.onmessage = function (message) {
      lastFrameAt = Date.now();
      var frame;
      try { frame = JSON.parse(message.data); } catch (error) { return; }
      onFrame(frame);
    };
    socket.onopen = function () { lastFrameAt = Date.now(); };
    socket.onclose = function (event) {
      socket = null;
      if (event.code === CLOSE_UNAUTHENTICATED) {
        menu.dataset.state = "signed-out";
        return;  // signed out in the meantime: the next page load will tell
      }
      menu.dataset.state = "reconnecting";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, MAX_DELAY);
    };
  }

  function keepAlive() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    var quiet = Date.now() - lastFrameAt;
    if (quiet > DEAD_AFTER) socket.close();
    else if (quiet > PING_AFTER) socket.send(JSON.stringify({type: "ping"}));
  }

  function csrfToken() {
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (field) return field.value;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  readAll.addEventListener("click", function () {
    var newest = notices.reduce(function (top, n) { return Math.max(top, n.id); }, 0);
    var body = new URLSearchParams();
    if (newest) body.set("up_to", String(newest));
    readAll.disabled = true;
    fetch(toggle.dataset.readUrl, {
      method: "POST",
      headers: {"Accept": "application/json", "X-CSRFToken": csrfToken()},
      body: body,
      credentials: "same-origin",
    }).then(function (response) {
      return response.json().then(function (answer) {
        if (!response.ok) throw new Error(answer.error || "HTTP " + response.status);
        return answer;
      });
    }).then(function (answer) {
      notices.forEach(function (n) { if (n.id <= newest) n.read = true; });
      showCount(answer.unread);
      render();
      problem.textContent = "";
    }).catch(function (error) {
      problem.textContent = "Could not mark the notices read: " + error.message;
      readAll.disabled = unread === 0;
    });
  });

  showCount(0);
  render();
  connect();
  setInterval(keepAlive, 5000);
})();
