"use strict";
// Agent desktop: one websocket for pops and state, fetch() for actions. DOM is only written with textContent.
(function () {
  const $ = (id) => document.getElementById(id);
  let me = null, current = null, ws = null, backoff = 500, tick = null;

  function msg(text, bad) {
    const p = $("message");
    p.textContent = text || "";
    p.hidden = !text;
    p.classList.toggle("bad", !!bad);
  }
  function fmtSecs(s) {
    if (s == null || isNaN(s)) return "—";
    s = Math.max(0, Math.round(s));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }
  function setState(st) {
    if (!st) return;
    const el = $("state");
    const label = st.state + (st.reason && st.state === "paused" ? " (" + st.reason + ")" : "");
    el.textContent = label.replace("_", " ");
    el.dataset.state = st.state;
  }
  async function post(url, body) {
    const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                body: JSON.stringify(body), credentials: "same-origin"});
    let data = {};
    try { data = await r.json(); } catch (e) { /* empty body */ }
    if (r.status === 401) { location.href = "/login"; throw new Error("session ended"); }
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  }
  function li(list, text, cls) {
    const item = document.createElement("li");
    item.textContent = text;
    if (cls) item.className = cls;
    list.appendChild(item);
  }
  function day(iso) { return iso ? String(iso).slice(0, 10) : ""; }

  function render(m) {
    const p = m.pop || {};
    current = m;
    $("idle").hidden = true;
    $("pop-body").hidden = false;
    $("phase").textContent = m.phase;
    $("phase").dataset.phase = m.phase;
    const c = p.customer;
    $("cust-name").textContent = c && c.name ? c.name : (p.ani ? "Unknown caller " + p.ani : "Unknown caller");
    $("cust-segment").textContent = c && c.segment ? c.segment : "";
    $("cust-segment").dataset.segment = c && c.segment ? c.segment : "";
    $("cust-phone").textContent = p.ani || "";
    $("cust-account").textContent = c && c.account ? "acct " + c.account : "";
    const v = p.verification || {};
    const badge = $("badge");
    badge.textContent = v.label || "Not verified";
    badge.dataset.status = v.status || "none";
    const flags = $("flags");
    flags.textContent = "";
    for (const [on, text] of [[v.watchlist, "WATCHLIST"], [v.replay, "REPLAY SUSPECTED"], [p.critical, "CRITICAL"]]) {
      if (!on) continue;
      const s = document.createElement("span");
      s.className = "flag";
      s.textContent = text;
      flags.appendChild(s);
    }
    $("crm-warn").hidden = p.crm !== "unavailable";
    $("f-service").textContent = p.service || "—";
    $("f-line").textContent = p.line || p.dnis || "—";
    $("f-queue").textContent = p.queue || "—";
    $("f-path").textContent = (p.ivr_path && p.ivr_path.length) ? p.ivr_path.join(" › ") : "—";
    $("f-accounts").textContent = c && c.accounts && c.accounts.length
      ? c.accounts.map((a) => a.iban + (a.products && a.products.length ? " (" + a.products.join(", ") + ")" : "")).join("; ")
      : "—";
    const tickets = $("tickets"); tickets.textContent = "";
    for (const t of p.open_tickets || []) li(tickets, "#" + t.id + " " + (t.service || "") + " · " +
      (t.this_call ? "this call" : t.status + " · " + day(t.created_at)) + (t.notes ? " — " + t.notes : ""),
      t.this_call ? "current" : "");
    if (!tickets.children.length) li(tickets, "none", "muted");
    const contacts = $("contacts"); contacts.textContent = "";
    for (const x of p.recent_contacts || []) li(contacts, day(x.at) + " " + x.channel + ": " + x.summary);
    if (!contacts.children.length) li(contacts, "none", "muted");
    const canWrap = m.phase === "answered" || m.phase === "ended";
    $("wrap-submit").disabled = !canWrap;
    $("wrap-hint").textContent = canWrap ? "Call " + m.call_id : "Available after a call is answered.";
    updateClocks();
  }
  function clearPop() {
    current = null;
    $("pop-body").hidden = true;
    $("idle").hidden = false;
    $("wrap-submit").disabled = true;
    $("wrap-timer").hidden = true;
    $("notes").value = "";
    $("wrap-hint").textContent = "Available after a call is answered.";
  }
  function updateClocks() {
    if (!current) return;
    const p = current.pop || {};
    const now = Date.now() / 1000;
    let wait = p.wait_seconds;
    if (p.queued_at) wait = (current.answered_at || (current.phase === "ringing" ? now : current.ringing_at)) - p.queued_at;
    $("f-wait").textContent = fmtSecs(wait);
    const t = $("wrap-timer");
    if (current.phase === "ended" && current.ended_at) {
      const el = now - current.ended_at;
      t.hidden = false;
      t.textContent = fmtSecs(el) + " / " + fmtSecs(me ? me.wrap_up_seconds : 0);
      t.classList.toggle("over", me && el > me.wrap_up_seconds);
    } else {
      t.hidden = true;
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(proto + location.host + "/ws/agent");
    ws.onopen = () => { backoff = 500; $("conn").textContent = "connected"; $("conn").dataset.ok = "1"; };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "pop") render(m);
      else if (m.type === "pop_cleared") { if (!current || current.call_id === m.call_id) clearPop(); }
      else if (m.type === "state") setState(m.state);
    };
    ws.onclose = () => {
      $("conn").textContent = "reconnecting…"; $("conn").dataset.ok = "";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  async function init() {
    const r = await fetch("/desktop/me", {credentials: "same-origin"});
    if (r.status === 401) { location.href = "/login"; return; }
    me = await r.json();
    $("agent-name").textContent = me.name + " (" + me.agent_id + ")";
    $("supervisor-link").hidden = !me.supervisor;
    const sel = $("pause-reason");
    for (const [code, label] of Object.entries(me.pause_reasons)) sel.add(new Option(label, code));
    const disp = $("disposition");
    disp.add(new Option("— choose —", ""));
    for (const [code, label] of Object.entries(me.dispositions)) disp.add(new Option(label, code));
    setState(me.state);
    if (!me.routing) msg("Routing is not running: state changes are unavailable.", true);
    connect();
    setInterval(updateClocks, 1000);
    setInterval(() => { if (ws && ws.readyState === 1) ws.send('{"type":"ping"}'); }, 25000);
  }

  async function action(body) {
    try {
      const data = await post("/desktop/state", body);
      setState(data.state);
      msg("");
      if (data.logged_out) location.href = "/login";
    } catch (e) { msg(e.message, true); }
  }
  $("btn-available").addEventListener("click", () => action({action: "available"}));
  $("btn-pause").addEventListener("click", () => action({action: "pause", reason: $("pause-reason").value}));
  $("btn-logout").addEventListener("click", () => action({action: "logout"}));
  $("wrap-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!current) return;
    const disposition = $("disposition").value;
    if (!disposition) { msg("Choose a disposition first.", true); return; }
    try {
      const data = await post("/desktop/wrapup", {call_id: current.call_id, disposition: disposition,
                                                 notes: $("notes").value});
      msg("Ticket closed: " + disposition.replace("_", " ") + ".");
      clearPop();
      if (data.state) setState(data.state);
    } catch (e) { msg(e.message, true); }
  });
  init().catch((e) => msg("Desktop could not start: " + e.message, true));
})();
