"""The screen pop: what the agent sees when their phone rings, and the hub that pushes it to their desktop.

``build_pop`` never fails and never waits long: the CRM gets ``timeout`` seconds (300 ms by default) for the
customer, open tickets and last contacts together; past that, or when it is down, the pop still goes out with
the call facts and ``crm: "unavailable"``. The hub remembers each agent's current pop, so a desktop that
connects (or reconnects) after the ring still gets it at once.

Messages on the agent's websocket (JSON)::

    {"type": "pop", "phase": "ringing"|"answered"|"ended", "call_id": ..., "pop": {...},
     "ringing_at": epoch, "answered_at": epoch|null, "ended_at": epoch|null, "sent_at": epoch}
    {"type": "pop_cleared", "call_id": ...}          # wrap-up submitted
    {"type": "state", "state": {"state": "available", "reason": null, ...}}
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from .. import metrics
from .. import models as m
from ..crm import (CrmAdapter, SqlCrmAdapter, get_customer_sync, open_tickets_sync,
                   recent_contacts_sync)
from ..db import Database
from ..masking import mask_iban, redact_text
from .sockets import SocketRegistry

log = logging.getLogger(__name__)

CRM_TIMEOUT = 0.3
POP_KIND = "pop"


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _mask_account(number: str | None) -> str | None:
    if not number:
        return None
    return "*" * max(0, len(number) - 4) + number[-4:] if len(number) > 4 else "*" * len(number)


def _path_entries(path: Any) -> list[str]:
    """The IVR path as short labels: node names, keyed digits (already masked by the trace), the exit."""
    out: list[str] = []
    for item in path or []:
        if isinstance(item, str):
            label = item
        elif isinstance(item, Mapping):
            event = item.get("event")
            if event == "node" or (event is None and "node" in item):
                label = str(item.get("node"))
            elif event == "digits":
                label = f"keyed {item.get('digits')}"
            elif event == "exit":
                label = f"queue {item['queue']}" if item.get("queue") else str(item.get("exit"))
            else:
                continue
        else:
            continue
        if not out or out[-1] != label:
            out.append(redact_text(label))
    return out


def verification_badge(verification: Mapping[str, Any] | None, identified_by: str | None,
                       verified: bool | None = None) -> dict[str, Any]:
    """``status`` is ``voice`` (accepted voiceprint), ``pin`` (identified by account and PIN) or ``none``;
    ``watchlist``/``replay`` come from the voice flags and are shown whatever the status."""
    v = dict(verification or {})
    decision = v.get("decision")
    flags = [str(f).upper() for f in v.get("flags") or []]
    score = v.get("score")
    if decision == "accept" or (decision is None and verified and identified_by != "pin"):
        status = "voice"
        label = f"Voice verified (score {score:.2f})" if isinstance(score, (int, float)) else "Voice verified"
    elif identified_by == "pin":
        status, label = "pin", "Verified by PIN"
    else:
        status, label = "none", "Not verified"
        if decision:
            label += f" (voice: {decision.replace('_', ' ')})"
    return {"status": status, "label": label, "decision": decision, "score": score,
            "threshold": v.get("threshold"), "flags": flags, "identified_by": identified_by or "none",
            "watchlist": any("WATCHLIST" in f for f in flags), "replay": any("REPLAY" in f for f in flags)}


def _transfer_facts(info: Mapping[str, Any]) -> dict[str, Any]:
    """Where a transferred call comes from (the last hop of the routing context's trail, with the agent's
    note) and, on a consultation, who is asking."""
    trail = info.get("transfers") if isinstance(info.get("transfers"), list) else []
    hops = [{"from_agent": t.get("from_agent"), "from_queue": t.get("from_queue"), "to_queue": t.get("to_queue"),
             "to_agent": t.get("to_agent"), "note": t.get("note"), "warm": bool(t.get("warm"))}
            for t in trail if isinstance(t, Mapping)]
    last = hops[-1] if hops else None
    consult = info.get("consult") if isinstance(info.get("consult"), Mapping) else None
    return {"transfers": hops,
            "transferred_from": None if last is None else {
                "agent": last["from_agent"], "queue": last["from_queue"], "note": last["note"],
                "warm": last["warm"]},
            "consult_from": None if consult is None else {
                "agent": consult.get("from_agent"), "queue": consult.get("from_queue"), "note": consult.get("note")}}


def _record_facts(s: Any, call_id: str) -> dict[str, Any] | None:
    r = s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == call_id)).first()
    if r is None:
        return None
    return {"ani": r.ani, "dnis": r.dnis, "line": r.line, "service": r.service, "queue": r.queue,
            "ivr_path": r.ivr_path, "customer_id": r.customer_id, "ticket_id": r.ticket_id,
            "identified_by": r.identified_by.value,
            "queued_at": r.queued_at.timestamp() if r.queued_at else None,
            "verification": {"decision": r.verification_decision, "score": r.verification_score,
                             "threshold": r.verification_threshold, "flags": list(r.verification_flags or [])}
            if r.verification_decision else None}


def _customer_json(c: Any) -> dict[str, Any]:
    return {"id": str(c.id), "name": c.name, "segment": c.segment, "language": c.language,
            "phones": list(c.phones), "account": _mask_account(c.account_number),
            "accounts": [{"iban": a.iban_masked if "*" in a.iban_masked else mask_iban(a.iban_masked),
                          "balance": a.balance_bucket, "products": list(a.products)} for a in c.accounts],
            "stale": bool(c.stale)}


async def _crm_part(crm: CrmAdapter, customer_id: Any, recent: int, call_id: Any) -> dict[str, Any]:
    customer, tickets, contacts = await asyncio.gather(
        crm.get_customer(customer_id), crm.open_tickets(customer_id), crm.recent_contacts(customer_id, recent))
    return _part_json(customer, tickets, contacts, call_id)


def _sql_bundle(call_id: Any, customer_id: Any, recent: int) -> Callable[[Any], tuple[Any, Any]]:
    """The built-in CRM's pop in one database round trip: call record, customer, tickets, contacts."""
    def q(s: Any) -> tuple[Any, Any]:
        facts = _record_facts(s, str(call_id)) if call_id else None
        cid = customer_id if customer_id is not None else (facts or {}).get("customer_id")
        if cid is None:
            return facts, None
        return facts, _part_json(get_customer_sync(s, cid), open_tickets_sync(s, cid),
                                 recent_contacts_sync(s, cid, recent), call_id)
    return q


def _part_json(customer: Any, tickets: Any, contacts: Any, call_id: Any) -> dict[str, Any]:
    return {
        "customer": _customer_json(customer) if customer is not None else None,
        "open_tickets": [{"id": str(t.id), "service": t.service, "status": t.status,
                          "created_at": _iso(t.created_at), "call_id": t.call_id,
                          "this_call": call_id is not None and t.call_id == call_id,
                          "notes": redact_text(t.notes) if t.notes else None} for t in tickets],
        "recent_contacts": [{"at": _iso(c.at), "channel": c.channel, "direction": c.direction,
                             "summary": redact_text(c.summary or ""), "agent_id": c.agent_id} for c in contacts],
    }


async def build_pop(crm: CrmAdapter | None, call_info: Mapping[str, Any], *, db: Database | None = None,
                    timeout: float = CRM_TIMEOUT, recent: int = 5, now: float | None = None) -> dict[str, Any]:
    """Assemble the pop from the call facts in ``call_info`` and, within ``timeout``, the CRM.

    ``call_info`` keys (all optional): ``call_id``, ``ani``, ``dnis``, ``line`` (line name), ``service``,
    ``queue``, ``ivr_path`` (node names or the call record's path entries), ``wait_seconds`` or ``queued_at`` /
    ``queued_wall`` (epoch), ``customer_id`` or ``customer`` (the IVR's dict), ``identified_by``,
    ``verification`` (``decision``, ``score``, ``threshold``, ``flags``) or ``verified`` (bool), ``ticket_id``.
    QueueService's offer context is such a dict. With ``db``, facts missing from ``call_info`` are read from
    the call record (the verification score, the ticket)."""
    now = time.time() if now is None else now
    info: dict[str, Any] = dict(call_info)
    call_id = info.get("call_id")
    deadline = asyncio.get_running_loop().time() + timeout
    given = info.get("customer") if isinstance(info.get("customer"), Mapping) else {}
    hint = info.get("customer_id") or given.get("id")
    bundled: Any = None
    facts: dict[str, Any] | None = None
    if isinstance(crm, SqlCrmAdapter) and (db is None or db is crm.db):
        try:
            facts, bundled = await asyncio.wait_for(crm.db.read(_sql_bundle(call_id, hint, recent)), timeout)
        except Exception as exc:
            log.warning("pop for %s: CRM unavailable (%s); sending the call facts", call_id, type(exc).__name__)
            bundled = "unavailable"
    elif db is not None and call_id:
        try:
            facts = await asyncio.wait_for(db.read(lambda s: _record_facts(s, str(call_id))), timeout)
        except Exception as exc:              # a slow or failing database costs facts, never the pop
            log.warning("pop for %s: call record not read (%s)", call_id, type(exc).__name__)
    if facts is not None:
        for key, value in facts.items():
            if info.get(key) in (None, [], "") and value not in (None, []):
                info[key] = value
    ivr_customer = info.get("customer") if isinstance(info.get("customer"), Mapping) else None
    customer_id = info.get("customer_id") or (ivr_customer or {}).get("id")
    queued = info.get("queued_wall") or info.get("queued_at")
    wait = info.get("wait_seconds")
    if wait is None and isinstance(queued, (int, float)):
        wait = max(0.0, now - queued)
    pop: dict[str, Any] = {
        "kind": POP_KIND, "call_id": call_id, "ani": info.get("ani"), "dnis": info.get("dnis"),
        "line": info.get("line") or info.get("line_name") or info.get("dnis"),
        "service": info.get("service"), "queue": info.get("queue"), "language": info.get("language"),
        "ivr_path": _path_entries(info.get("ivr_path")), "wait_seconds": wait,
        "queued_at": queued if isinstance(queued, (int, float)) else None,
        "ticket_id": None if info.get("ticket_id") is None else str(info.get("ticket_id")),
        "critical": bool(info.get("critical")),
        "verification": verification_badge(info.get("verification"), info.get("identified_by"),
                                           info.get("verified")),
        "customer": None, "open_tickets": [], "recent_contacts": [], "crm": "unknown_caller",
        **_transfer_facts(info),
    }
    if customer_id is None:
        return pop
    if bundled is None:
        try:
            if crm is None:
                raise ConnectionError("no CRM configured")
            left = deadline - asyncio.get_running_loop().time()
            bundled = await asyncio.wait_for(_crm_part(crm, customer_id, recent, call_id), max(0.001, left))
        except Exception as exc:
            log.warning("pop for %s: CRM unavailable (%s); sending the call facts", call_id, type(exc).__name__)
            bundled = "unavailable"
    if isinstance(bundled, dict):
        pop.update(bundled)
        pop["crm"] = "ok" if bundled["customer"] is not None else "unknown_caller"
    else:
        pop["crm"] = "unavailable"
    if pop["customer"] is None and ivr_customer:
        pop["customer"] = {"id": str(ivr_customer.get("id")), "name": ivr_customer.get("name"),
                           "segment": ivr_customer.get("segment"), "language": ivr_customer.get("language"),
                           "phones": [info["ani"]] if info.get("ani") else [], "account": None, "accounts": [],
                           "stale": True}
    return pop


@dataclass(slots=True)
class CurrentPop:
    call_id: str
    pop: dict[str, Any]
    phase: str
    ringing_at: float
    answered_at: float | None = None
    ended_at: float | None = None

    def message(self, now: float) -> str:
        return json.dumps({"type": "pop", "phase": self.phase, "call_id": self.call_id, "pop": self.pop,
                           "ringing_at": self.ringing_at, "answered_at": self.answered_at,
                           "ended_at": self.ended_at, "sent_at": now}, default=str)


def _plain(state: Any) -> dict[str, Any]:
    if isinstance(state, Mapping):
        return dict(state)
    as_dict = getattr(state, "as_dict", None)
    if callable(as_dict):
        return dict(as_dict())
    if is_dataclass(state) and not isinstance(state, type):
        return asdict(state)
    return {"state": str(state)}


class ScreenPopHub:
    """Pushes pops to the ringing agent's desktops only, and keeps each agent's current pop until wrap-up.

    The call layer calls ``ringing``/``answered``/``ended`` (QueueService does, through ``_notify``) and
    ``agent_state`` for state changes. ``ringing`` takes a pop built by ``build_pop`` or the raw call facts,
    which it turns into a pop itself with the hub's ``crm`` and ``db``."""

    def __init__(self, crm: CrmAdapter | None = None, *, db: Database | None = None,
                 sockets: SocketRegistry | None = None, clock: Callable[[], float] = time.time,
                 crm_timeout: float = CRM_TIMEOUT,
                 on_verification_view: Callable[[str, Mapping[str, Any]], Any] | None = None) -> None:
        self.crm = crm
        self.db = db
        self.on_verification_view = on_verification_view
        """Called with (agent id, pop) when a pop that shows a voice verification outcome reaches the agent's
        desktop: biometric results shown to a person are an audited view (voiceauth's audit log)."""
        self.sockets = sockets or SocketRegistry()
        self.clock = clock
        self.crm_timeout = crm_timeout
        self._current: dict[str, CurrentPop] = {}
        self._states: dict[str, dict[str, Any]] = {}

    def current(self, agent_id: str) -> CurrentPop | None:
        return self._current.get(agent_id)

    async def ringing(self, agent_id: str, call_id: str, pop: Mapping[str, Any]) -> int:
        """Returns how many of the agent's desktops got the pop (0 is fine: it waits for them)."""
        started = time.perf_counter()
        # registered before the CRM is asked, so an answer or hang-up arriving meanwhile is not lost
        cur = CurrentPop(call_id, {}, "ringing", self.clock())
        self._current[agent_id] = cur
        if pop.get("kind") != POP_KIND:
            pop = await build_pop(self.crm, {**pop, "call_id": call_id}, db=self.db, timeout=self.crm_timeout,
                                  now=self.clock())
        cur.pop = dict(pop)
        if self._current.get(agent_id) is not cur:       # unanswered and ended while the CRM was asked
            return 0
        sent = await self.sockets.send_agent(agent_id, cur.message(self.clock()))
        if sent:
            metrics.SCREEN_POP_LATENCY.observe(time.perf_counter() - started)
            await self._viewed(agent_id, cur.pop)
        return sent

    async def _viewed(self, agent_id: str, pop: Mapping[str, Any]) -> None:
        badge = pop.get("verification") or {}
        if self.on_verification_view is None or not badge.get("decision"):
            return
        try:
            result = self.on_verification_view(agent_id, pop)
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:      # an audit write that fails is logged, the pop is already shown
            log.error("verification view of %s by agent %s not audited: %s", pop.get("call_id"), agent_id,
                      type(exc).__name__)

    async def answered(self, agent_id: str, call_id: str) -> int:
        cur = self._current.get(agent_id)
        if cur is None or cur.call_id != call_id:
            log.info("answered %s for agent %s without a pop; nothing to update", call_id, agent_id)
            return 0
        cur.phase, cur.answered_at = "answered", self.clock()
        if not cur.pop:                    # still being built: ringing sends it with this phase
            return 0
        return await self.sockets.send_agent(agent_id, cur.message(self.clock()))

    async def ended(self, agent_id: str, call_id: str) -> int:
        """The pop stays (phase ``ended``) until the agent submits the wrap-up."""
        cur = self._current.get(agent_id)
        if cur is None or cur.call_id != call_id:
            return 0
        if cur.answered_at is None:        # rang but was not answered: nothing to wrap up
            del self._current[agent_id]
            return await self.sockets.send_agent(agent_id, json.dumps({"type": "pop_cleared",
                                                                       "call_id": call_id}))
        cur.phase, cur.ended_at = "ended", self.clock()
        if not cur.pop:
            return 0
        return await self.sockets.send_agent(agent_id, cur.message(self.clock()))

    async def clear(self, agent_id: str, call_id: str) -> None:
        cur = self._current.get(agent_id)
        if cur is not None and cur.call_id == call_id:
            del self._current[agent_id]
        await self.sockets.send_agent(agent_id, json.dumps({"type": "pop_cleared", "call_id": call_id}))

    async def transfer_event(self, agent_id: str, event: Mapping[str, Any]) -> int:
        """A step of the agent's transfer (consulted agent ringing/answered, consultation ended, transferred)."""
        return await self.sockets.send_agent(agent_id, json.dumps({"type": "transfer", **event}, default=str))

    async def agent_state(self, agent_id: str, state: Any) -> int:
        """Push a state change (a status dict, an ``AgentStatus`` or routing's ``AgentStateChanged``)."""
        plain = _plain(state)
        if "new" in plain and "state" not in plain:
            plain = {"agent_id": agent_id, "state": plain["new"], "reason": plain.get("reason"),
                     "call_id": plain.get("call_id"), "since": self.clock()}
        self._states[agent_id] = plain
        return await self.sockets.send_agent(agent_id, json.dumps({"type": "state", "state": plain},
                                                                  default=str))

    def last_state(self, agent_id: str) -> dict[str, Any] | None:
        return self._states.get(agent_id)

    async def greet(self, agent_id: str, ws: Any, state: dict[str, Any] | None) -> None:
        """What a freshly (re)connected desktop gets at once: its state and the current pop, if any."""
        if state is not None:
            await ws.send_str(json.dumps({"type": "state", "state": state}, default=str))
        cur = self._current.get(agent_id)
        if cur is not None and cur.pop:
            await ws.send_str(cur.message(self.clock()))
            await self._viewed(agent_id, cur.pop)
