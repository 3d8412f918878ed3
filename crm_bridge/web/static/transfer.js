/* Transfer controls of the agent desktop: blind transfer, or consult then complete / cancel, to a queue or a
   named agent, with a note for the next agent. Builds itself into #transfer-panel; talks to /desktop/transfer*
   and listens to the agent's own websocket for the transfer steps and for the pop of a transferred call
   ("transferred from <agent> / <queue>" with the note). No inline script or style (the CSP forbids them). */
"use strict";
(function () {
  const panel = document.getElementById("transfer-panel");
  if (!panel) return;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "hidden") e.hidden = !!v; else e.setAttribute(k, v);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const title = el("h2", {}, "Transfer");
  const kind = el("select", { id: "xfer-kind", "aria-label": "Transfer to" });
  kind.append(el("option", { value: "queue" }, "Queue"), el("option", { value: "agent" }, "Agent"));
  const target = el("select", { id: "xfer-target", "aria-label": "Target" });
  const note = el("textarea", { id: "xfer-note", rows: "2", maxlength: "1000",
                                placeholder: "Note for the next agent (optional)" });
  const row1 = el("label", {}, "To ");
  row1.append(kind, target);
  const row2 = el("label", {}, "Note");
  row2.append(note);
  const blind = el("button", { type: "button", id: "xfer-blind" }, "Blind transfer");
  const consult = el("button", { type: "button", id: "xfer-consult" }, "Consult");
  const complete = el("button", { type: "button", id: "xfer-complete", class: "ok" }, "Complete");
  const cancel = el("button", { type: "button", id: "xfer-cancel" }, "Cancel consult");
  const survey = el("button", { type: "button", id: "xfer-survey", title: "Hang up and let the caller answer the satisfaction survey" }, "To survey");
  const buttons = el("div", { class: "xfer-buttons" });
  buttons.append(blind, consult, complete, cancel, survey);
  const status = el("p", { id: "xfer-status", class: "hint", role: "status" }, "No call to transfer.");
  panel.append(title, row1, row2, buttons, status);
  buttons.style.display = "flex";
  buttons.style.flexWrap = "wrap";
  buttons.style.gap = "6px";
  buttons.style.marginBottom = "6px";
  target.style.maxWidth = "200px";
  target.style.marginLeft = "6px";
  kind.style.display = target.style.display = "inline-block";
  kind.style.width = "auto";
  target.style.width = "auto";

  let targets = { queues: [], agents: [] };
  let currentCall = null;
  let consultState = "none";            // none | ringing | talking
  let busy = false;

  function say(text, bad) {
    status.textContent = text;
    status.dataset.bad = bad ? "1" : "";
    status.style.color = bad ? "#9b1c1c" : "";
  }

  function fillTargets() {
    const keep = target.value;
    target.textContent = "";
    if (kind.value === "queue") {
      for (const q of targets.queues) {
        const label = `${q.name}${q.description ? " – " + q.description : ""} (${q.available} free, ${q.waiting} waiting)`;
        target.append(el("option", { value: q.name }, label));
      }
    } else {
      for (const a of targets.agents) {
        target.append(el("option", { value: a.id }, `${a.name} (${a.id}) – ${a.state.replace("_", " ")}`));
      }
    }
    if ([...target.options].some((o) => o.value === keep)) target.value = keep;
  }

  function render() {
    const onCall = !!currentCall;
    blind.disabled = busy || !onCall || consultState !== "none" || !target.value;
    consult.disabled = busy || !onCall || consultState !== "none" || !target.value;
    survey.disabled = busy || !onCall || consultState !== "none";
    complete.disabled = busy || !onCall || consultState !== "talking";
    cancel.disabled = busy || !onCall || consultState === "none";
    kind.disabled = target.disabled = note.disabled = !onCall || consultState !== "none";
  }

  async function refresh() {
    try {
      const r = await fetch("/desktop/transfer/targets", { headers: { Accept: "application/json" } });
      if (!r.ok) { if (r.status === 503) say("Transfers are not available (routing is off)."); return; }
      const data = await r.json();
      targets = data;
      const was = currentCall;
      currentCall = data.current_call || null;
      if (!currentCall) consultState = "none";
      if (was !== currentCall && !busy) say(currentCall ? "Call in progress: choose a queue or an agent." : "No call to transfer.");
      fillTargets();
    } catch (e) { /* the next poll retries */ }
    render();
  }

  async function post(path, body) {
    busy = true;
    render();
    try {
      const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json",
                                                               Accept: "application/json" },
                                    body: JSON.stringify(body) });
      const data = await r.json().catch(() => ({}));
      if (!r.ok) { say(data.error || `Refused (${r.status})`, true); return null; }
      return data;
    } catch (e) {
      say("The server did not answer: try again.", true);
      return null;
    } finally {
      busy = false;
      render();
    }
  }

  function choice() {
    const body = { call_id: currentCall };
    if (kind.value === "queue") body.to_queue = target.value; else body.to_agent = target.value;
    if (note.value.trim()) body.note = note.value.trim();
    return body;
  }

  blind.addEventListener("click", async () => {
    const res = await post("/desktop/transfer", { mode: "blind", ...choice() });
    if (res) {
      say(`Transferred to ${res.to_queue || res.to_agent}. Your leg is closed: wrap up the call.`);
      currentCall = null;
      note.value = "";
      render();
    }
  });
  survey.addEventListener("click", async () => {
    const res = await post("/desktop/transfer", { mode: "survey", call_id: currentCall });
    if (res) {
      say("The caller is answering the survey. Your leg is closed: wrap up the call.");
      currentCall = null;
      note.value = "";
      render();
    }
  });
  consult.addEventListener("click", async () => {
    const res = await post("/desktop/transfer", { mode: "consult", ...choice() });
    if (res) { consultState = "ringing"; say("Caller on hold. Ringing…"); render(); }
  });
  complete.addEventListener("click", async () => {
    const res = await post("/desktop/transfer/complete", { call_id: currentCall });
    if (res) { say(`Caller handed over to ${res.to_agent}. Wrap up the call.`); consultState = "none";
               currentCall = null; note.value = ""; render(); }
  });
  cancel.addEventListener("click", async () => {
    const res = await post("/desktop/transfer/cancel", { call_id: currentCall });
    if (res) { say("Consultation cancelled: back with the caller."); consultState = "none"; render(); }
  });
  kind.addEventListener("change", () => { fillTargets(); render(); });
  target.addEventListener("change", render);

  /* where a transferred call comes from, shown on the pop itself */
  function showOrigin(pop) {
    let banner = document.getElementById("xfer-origin");
    const head = document.querySelector(".pop-head") || document.getElementById("pop-body");
    const from = pop && (pop.transferred_from || pop.consult_from);
    if (!from) { if (banner) banner.hidden = true; return; }
    if (!banner) {
      banner = el("p", { id: "xfer-origin", class: "crm-warn" });
      if (head && head.parentNode) head.parentNode.insertBefore(banner, head.nextSibling); else panel.append(banner);
    }
    const what = pop.transferred_from ? (from.warm ? "Warm transfer from " : "Transferred from ") : "Consultation from ";
    banner.textContent = `${what}${from.agent || "?"} / ${from.queue || "?"}${from.note ? ": " + from.note : ""}`;
    banner.hidden = false;
  }

  function onMessage(msg) {
    if (msg.type === "transfer") {
      if (msg.event === "consult_answered") { consultState = "talking"; say(`Talking with ${msg.agent_id}. Complete or cancel.`); }
      else if (msg.event === "consult_ended") { consultState = "none"; say(`Consultation ended (${msg.reason}): back with the caller.`, msg.reason !== "cancelled"); }
      else if (msg.event === "consult_ringing") { consultState = "ringing"; }
      render();
    } else if (msg.type === "pop") {
      showOrigin(msg.pop);
      if (msg.phase === "answered") refresh();
    } else if (msg.type === "pop_cleared") {
      showOrigin(null);
      refresh();
    }
  }

  let socket = null;
  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(proto + location.host + "/ws/agent");
    socket.addEventListener("message", (ev) => {
      try { onMessage(JSON.parse(ev.data)); } catch (e) { /* not ours */ }
    });
    socket.addEventListener("close", () => setTimeout(connect, 3000));
  }
  connect();
  refresh();
  setInterval(refresh, 3000);
})();
