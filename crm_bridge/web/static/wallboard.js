"use strict";
// Wallboard: the server pushes a snapshot every second; this only draws it (textContent only).
(function () {
  const $ = (id) => document.getElementById(id);
  let backoff = 500;
  const pct = (v) => (v == null ? "–" : Math.round(v * 100) + " %");
  const secs = (s) => {
    if (s == null) return "–";
    s = Math.max(0, Math.round(s));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  };
  function row(tbody, cells, cls) {
    const tr = document.createElement("tr");
    for (const [text, c] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (c) td.className = c;
      tr.appendChild(td);
    }
    if (cls) tr.className = cls;
    tbody.appendChild(tr);
  }
  function draw(s) {
    $("t-waiting").textContent = s.totals.waiting;
    $("t-answered").textContent = s.totals.answered_today;
    $("t-abandoned").textContent = s.totals.abandoned_today;
    $("t-agents").textContent = s.agents.filter((a) => a.state !== "offline").length;
    const q = $("queues").tBodies[0];
    q.textContent = "";
    for (const r of s.queues) {
      const sl = r.service_level_today;
      row(q, [[r.queue], [String(r.waiting), r.waiting ? "hot" : ""], [secs(r.longest_wait), r.longest_wait > 60 ? "hot" : ""],
              [pct(sl), sl != null && sl < 0.8 ? "hot" : ""], [String(r.today_calls)], [String(r.today_answered)],
              [String(r.today_abandoned)], [r.staffed == null ? "–" : String(r.staffed)],
              [r.available == null ? "–" : String(r.available)]], "q-" + r.queue);
    }
    const a = $("agents").tBodies[0];
    a.textContent = "";
    for (const x of s.agents) {
      row(a, [[x.name + " (" + x.agent_id + ")"], [String(x.state).replace("_", " "), "st-" + x.state],
              [x.reason || ""], [secs(x.for_seconds)], [String(x.calls_handled == null ? "" : x.calls_handled)]]);
    }
  }
  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/ws/wallboard");
    ws.onopen = () => { backoff = 500; $("conn").textContent = "live"; $("conn").dataset.ok = "1"; };
    ws.onmessage = (ev) => { try { draw(JSON.parse(ev.data)); } catch (e) { /* keep the last picture */ } };
    ws.onclose = (ev) => {
      $("conn").textContent = "reconnecting…"; $("conn").dataset.ok = "";
      if (ev.code === 1008 || ev.code === 4401) { location.href = "/login"; return; }
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }
  connect();
})();
