// The dashboard's only script: the live inspector (server-sent events from the relay host, same
// origin) and copy buttons. Rows are built with textContent: nothing from a request is ever HTML.
(function () {
  "use strict";
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = document.getElementById(button.getAttribute("data-copy")).textContent;
      navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; });
    });
  });
  var table = document.getElementById("inspector");
  if (!table || !window.EventSource) { return; }
  var body = table.tBodies[0];
  var source = new EventSource("/_relay/dashboard/events?host=" + encodeURIComponent(table.getAttribute("data-host")));
  function size(n) { return n < 1000 ? n + "B" : n < 1e6 ? (n / 1000).toFixed(1) + "KB" : (n / 1e6).toFixed(1) + "MB"; }
  source.onmessage = function (event) {
    var r = JSON.parse(event.data);
    var when = new Date(r.at * 1000).toISOString().slice(11, 19);
    var cells = [when, r.method, r.path, String(r.status), Math.round(r.ms) + "ms", size(r.bytes_in), size(r.bytes_out), r.visitor, r.client];
    var tr = document.createElement("tr");
    cells.forEach(function (value, i) {
      var td = document.createElement("td");
      if (i === 2) { td.className = "path"; }
      td.textContent = value;
      tr.appendChild(td);
    });
    var empty = document.getElementById("no-requests");
    if (empty) { empty.remove(); }
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 500) { body.deleteRow(-1); }
  };
})();
