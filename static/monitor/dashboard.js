// Live tail and per-type counts for /dashboard/.
"use strict";
(function () {
  var MAX_ROWS = 500;
  var tail = document.getElementById("tail");
  var counts = document.querySelector("#counts tbody");
  var totalEl = document.getElementById("total");
  var total = 0;
  function bump(type) {
    var row = counts.querySelector('tr[data-type="' + CSS.escape(type) + '"]');
    if (!row) {
      row = document.createElement("tr");
      row.dataset.type = type;
      var name = document.createElement("td");
      name.textContent = type;
      var count = document.createElement("td");
      count.className = "count";
      count.textContent = "0";
      row.append(name, count);
      counts.append(row);
    }
    var cell = row.querySelector(".count");
    cell.textContent = String(Number(cell.textContent) + 1);
    total += 1;
    totalEl.textContent = String(total);
  }
  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text;
    return td;
  }
  function addRow(item) {
    var event = item.event;
    var latency = Date.now() - Date.parse(event.time);
    var row = document.createElement("tr");
    row.dataset.eventId = event.id;
    row.dataset.type = event.type;
    row.append(
      cell(new Date(event.time).toLocaleTimeString()),
      cell(event.type),
      cell(event.actor),
      cell(event.subject),
      cell(item.partition + "@" + item.offset),
      cell(latency + " ms")
    );
    tail.prepend(row);
    while (tail.rows.length > MAX_ROWS) tail.deleteRow(tail.rows.length - 1);
  }
  window.EventStream({
    onEvents: function (items) {
      items.forEach(function (item) { bump(item.event.type); addRow(item); });
    },
  });
})();
