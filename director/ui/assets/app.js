// Compleat console: live task events (Server-Sent Events) and the rollout
// timeline. No dependencies; the page works without it (server-rendered).
"use strict";
(function () {
  function place(root) {
    root.querySelectorAll(".bar[data-l]").forEach(function (b) {
      b.style.marginLeft = b.dataset.l + "%";
      b.style.width = b.dataset.w + "%";
    });
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function badge(state) { return el("span", "badge s-" + state, state); }

  document.addEventListener("DOMContentLoaded", function () {
    place(document);
    var task = document.getElementById("task");
    if (!task) return;
    var id = task.dataset.id;
    var list = document.getElementById("events");
    var live = document.getElementById("live");
    var rollout = document.getElementById("rollout");
    var diff = document.getElementById("diff");
    var seen = {}, all = [];
    list.querySelectorAll("li[data-seq]").forEach(function (li) { seen[li.dataset.seq] = true; });
    var last = 0;
    Object.keys(seen).forEach(function (s) { last = Math.max(last, +s); });

    function drawRollout() {
      if (!all.length) return;
      var t0 = Date.parse(all[0].time), end = (Date.parse(all[all.length - 1].time) - t0) / 1000;
      if (task.dataset.finished !== "true") end = Math.max(end, (Date.now() - t0) / 1000);
      if (end <= 0) end = 1;
      var bars = [], idx = {};
      all.forEach(function (e) {
        if (e.stage !== "Updating instance") return;
        var at = (Date.parse(e.time) - t0) / 1000;
        var b = idx[e.step];
        if (!b) {
          b = idx[e.step] = { name: e.step, canary: (e.tags || []).indexOf("canary") >= 0, state: "started", start: at, len: 0 };
          bars.push(b);
        }
        if (e.state === "finished" || e.state === "failed") { b.state = e.state; b.len = at - b.start; }
      });
      if (!bars.length) return;
      var batch = 0, batchEnd = -1;
      rollout.textContent = "";
      bars.forEach(function (b) {
        if (b.state === "started") b.len = end - b.start;
        if (b.start >= batchEnd) batch++;
        batchEnd = Math.max(batchEnd, b.start + b.len);
        var li = el("li", "bar-row");
        var label = el("span", "bar-label", b.name + " ");
        if (b.canary) { label.appendChild(el("span", "tag", "canary")); label.appendChild(document.createTextNode(" ")); }
        label.appendChild(el("small", "", "batch " + batch));
        var track = el("span", "track");
        var bar = el("span", "bar b-" + b.state + (b.canary ? " canary" : ""));
        bar.style.marginLeft = (100 * b.start / end).toFixed(2) + "%";
        bar.style.width = Math.max(0.5, 100 * b.len / end).toFixed(2) + "%";
        bar.title = b.state + " " + b.len.toFixed(1) + "s";
        track.appendChild(bar);
        li.appendChild(label); li.appendChild(track); li.appendChild(el("span", "bar-time", b.len.toFixed(1) + "s"));
        rollout.appendChild(li);
      });
    }
    function showDiff(e) {
      if (e.stage !== "Manifest diff" || !e.data || !e.data.text) return;
      diff.textContent = "";
      e.data.text.replace(/\n$/, "").split("\n").forEach(function (l) {
        var k = (l[0] === "+" || l[0] === "-") ? l[0] : " "; // "+ ", "- " or "  "
        diff.appendChild(el("span", "d" + k, l));
        diff.appendChild(document.createTextNode("\n"));
      });
    }
    function add(e) {
      all.push(e);
      showDiff(e);
      if (seen[e.seq]) return;
      seen[e.seq] = true;
      var li = el("li");
      li.dataset.seq = e.seq;
      li.appendChild(el("time", "", e.time.replace("T", " ").replace(/\.\d+/, "")));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("b", "", e.stage));
      if (e.step) li.appendChild(document.createTextNode(" " + e.step));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(badge(e.state));
      if (e.error) { li.appendChild(document.createTextNode(" ")); li.appendChild(el("span", "error", e.error)); }
      list.appendChild(li);
    }
    // Replay from the start so the rollout is drawn from every event; the
    // list keeps the server-rendered lines and adds the new ones.
    var src = new EventSource("/ui/tasks/" + encodeURIComponent(id) + "/stream?after=0");
    live.textContent = task.dataset.finished === "true" ? "" : "(live)";
    src.onmessage = function (m) {
      try { add(JSON.parse(m.data)); } catch (err) { return; }
      drawRollout();
    };
    src.addEventListener("end", function (m) {
      src.close();
      var t = JSON.parse(m.data);
      task.dataset.finished = "true";
      var st = document.getElementById("task-state");
      st.textContent = t.state; st.className = "badge s-" + t.state;
      document.getElementById("task-result").textContent = t.result || t.error || "";
      var c = document.getElementById("cancel");
      if (c) c.remove();
      live.textContent = "(finished)";
      drawRollout();
    });
    src.onerror = function () { if (task.dataset.finished !== "true") live.textContent = "(reconnecting)"; };
  });
})();
