/* smsfleet admin: the test-send page follows its job's states (GET /api/jobs/<id> once a second) until a
   final state, or for two minutes. Progressive enhancement: without it, reload the page. */
(function () {
  "use strict";

  var PERIOD_MS = 1000;
  var GIVE_UP_MS = 120000;

  function text(el, value) { if (el) el.textContent = value; }

  function row(entry) {
    var tr = document.createElement("tr");
    ["at", "state", "source", "detail"].forEach(function (key, i) {
      var td = document.createElement("td");
      if (i === 0) td.className = "nowrap";
      td.textContent = entry[key] || "";
      tr.appendChild(td);
    });
    return tr;
  }

  function show(root, job) {
    var state = root.querySelector("[data-job-state]");
    text(state, job.state || "queued");
    if (state) state.className = "tag state-" + (job.state || "queued");
    text(root.querySelector("[data-job-gateway]"), job.gateway || "—");
    text(root.querySelector("[data-job-attempt]"), String(job.attempt || 1));
    var ids = root.querySelector("[data-job-provider-ids]");
    if (ids) {
      ids.textContent = "";
      (job.provider_ids || []).forEach(function (p) {
        var code = document.createElement("code");
        code.textContent = p;
        ids.appendChild(code);
        ids.appendChild(document.createTextNode(" "));
      });
      if (!ids.childNodes.length) text(ids, "none");
    }
    var body = root.querySelector("[data-job-history]");
    if (body) {
      body.textContent = "";
      (job.history || []).forEach(function (entry) { body.appendChild(row(entry)); });
    }
    if (job.final) {
      var pending = root.querySelector("[data-job-pending]");
      if (pending) pending.remove();
    }
  }

  function watch(root) {
    var id = root.getAttribute("data-watch-job");
    var started = Date.now();
    var note = root.querySelector("[data-watch-note]");
    function tick() {
      fetch("/api/jobs/" + encodeURIComponent(id) + "?queued=1", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (resp) { return resp.ok ? resp.json() : null; })
        .then(function (job) {
          if (job) show(root, job);
          if (job && job.final) {
            text(note, "Final state reached.");
          } else if (Date.now() - started > GIVE_UP_MS) {
            text(note, "No final state after two minutes: reload the page to look again.");
          } else {
            setTimeout(tick, PERIOD_MS);
          }
        })
        .catch(function () { setTimeout(tick, PERIOD_MS * 3); });
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-watch-job]").forEach(watch);
  });
})();
