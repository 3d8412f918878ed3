"""Call records and tickets through a call's life.

Every step is its own committed transaction, so what was known about a call survives a crash; at start-up
``close_stale_calls`` ends the records a crash left active and ``close_stale_agent_states`` logs out, in the
agents' state history, the agents a crash left on a call (routing starts with everybody offline). With an external CRM (``mirror_to_crm``) each ticket
change, the final call record and the contact-history line are also enqueued in the outbox, in the same
transaction as the local change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import models as m
from . import outbox
from .coltypes import utcnow
from .crm import NewInteraction, NewTicket, create_ticket_sync, log_interaction_sync
from .db import Database
from .errors import CallRecordError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TicketLink:
    ticket_id: int
    linked_ticket_id: int | None


def _secs(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else max(0.0, (b - a).total_seconds())


def record_snapshot(r: m.CallRecord) -> dict[str, Any]:
    """The call record as JSON for the external CRM."""
    def iso(d: datetime | None) -> str | None:
        return d.isoformat() if d else None
    return {
        "call_id": r.call_id, "ani": r.ani, "dnis": r.dnis, "line": r.line, "customer_id": r.customer_id,
        "ticket_id": r.ticket_id, "identified_by": r.identified_by.value,
        "verification": {"decision": r.verification_decision, "score": r.verification_score,
                         "threshold": r.verification_threshold, "model": r.verification_model,
                         "flags": list(r.verification_flags or [])},
        "service": r.service, "queue": r.queue, "ivr_path": r.ivr_path, "ivr_seconds": r.ivr_seconds,
        "ivr_exit": r.ivr_exit.value if r.ivr_exit else None, "arrived_at": iso(r.arrived_at),
        "queued_at": iso(r.queued_at), "answered_at": iso(r.answered_at), "ended_at": iso(r.ended_at),
        "agent_id": r.agent_id, "wait_seconds": r.wait_seconds, "talk_seconds": r.talk_seconds,
        "wrapup_seconds": r.wrapup_seconds, "end_reason": r.end_reason, "transfers": r.transfers,
        "status": r.status.value, "disposition": r.disposition,
    }


class CallRecorder:
    """Writes the call record and its ticket as the call progresses. Methods take ``at`` (aware datetime,
    defaults to the clock) so that replayed or simulated events keep their own times."""

    def __init__(self, db: Database, *, mirror_to_crm: bool = False, clock: Callable[[], datetime] = utcnow,
                 on_enqueue: Callable[[], None] | None = None) -> None:
        self.db = db
        self.mirror = mirror_to_crm
        self.clock = clock
        self.on_enqueue = on_enqueue

    # -- helpers run in the database thread --

    @staticmethod
    def _record(s: Session, call_id: str) -> m.CallRecord:
        rec = s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == call_id).with_for_update()).first()
        if rec is None:
            raise CallRecordError(f"no call record for call {call_id!r}: call_arrived must come first")
        return rec

    def _ticket_changed(self, s: Session, ticket: m.Ticket, changes: dict[str, Any], now: datetime) -> None:
        for key, value in changes.items():
            setattr(ticket, key, value)
        ticket.updated_at = now
        if self.mirror and changes:
            wire = {k: (v.value if isinstance(v, m.TicketStatus) else v) for k, v in changes.items()}
            outbox.enqueue(s, outbox.TICKET_UPDATE, {"ticket_id": ticket.id, "changes": wire},
                           ordering_key=f"ticket:{ticket.id}", now=now)

    def _close_ticket(self, s: Session, ticket: m.Ticket, disposition: str, notes: str | None,
                      now: datetime) -> None:
        if ticket.status is m.TicketStatus.CLOSED:
            return
        ticket.status = m.TicketStatus.CLOSED
        ticket.disposition = disposition
        if notes is not None:
            ticket.notes = notes
        ticket.closed_at = now
        ticket.updated_at = now
        if self.mirror:
            outbox.enqueue(s, outbox.TICKET_CLOSE,
                           {"ticket_id": ticket.id, "disposition": disposition, "notes": ticket.notes},
                           ordering_key=f"ticket:{ticket.id}", idempotency_key=f"ticket:{ticket.id}:close",
                           now=now)

    def _link(self, s: Session, rec: m.CallRecord, ticket: m.Ticket | None, now: datetime) -> int | None:
        """Link this call's ticket to the customer's open ticket on the same service (a repeat caller)."""
        if ticket is None or rec.customer_id is None or rec.service is None or ticket.linked_ticket_id:
            return ticket.linked_ticket_id if ticket else None
        s.flush()
        rows = s.scalars(select(m.Ticket).where(
            m.Ticket.customer_id == rec.customer_id, m.Ticket.service == rec.service,
            m.Ticket.status != m.TicketStatus.CLOSED, m.Ticket.id != ticket.id)
            .order_by(m.Ticket.created_at.desc(), m.Ticket.id.desc()))
        previous = rows.first()
        if previous is not None:
            self._ticket_changed(s, ticket, {"linked_ticket_id": previous.id}, now)
            return previous.id
        return None

    async def _step(self, fn: Callable[[Session], Any]) -> Any:
        result = await self.db.run(fn)
        if self.mirror and self.on_enqueue is not None:
            self.on_enqueue()
        return result

    # -- lifecycle --

    async def call_arrived(self, call_id: str, *, ani: str | None, dnis: str | None, line: str | None = None,
                           at: datetime | None = None) -> int:
        """Create the record (active) and its ticket; returns the ticket id."""
        now = at or self.clock()

        def fn(s: Session) -> int:
            if s.scalars(select(m.CallRecord.id).where(m.CallRecord.call_id == call_id)).first() is not None:
                raise CallRecordError(f"call {call_id!r} already has a record")
            ticket = create_ticket_sync(s, NewTicket(customer_id=None, call_id=call_id, line=line, dnis=dnis), now)
            s.add(m.CallRecord(call_id=call_id, ani=ani, dnis=dnis, line=line, ticket_id=ticket.id,
                               arrived_at=now, status=m.CallStatus.ACTIVE, identified_by=m.IdentifiedBy.NONE))
            if self.mirror:
                outbox.enqueue(s, outbox.TICKET_CREATE,
                               {"ticket_id": ticket.id, "call_id": call_id, "line": line, "dnis": dnis,
                                "status": "open", "customer_id": None, "service": None},
                               ordering_key=f"ticket:{ticket.id}", idempotency_key=f"ticket:{ticket.id}:create",
                               now=now)
            return ticket.id
        return await self._step(fn)

    async def identified(self, call_id: str, customer_id: int, by: m.IdentifiedBy | str,
                         at: datetime | None = None) -> TicketLink:
        now = at or self.clock()

        def fn(s: Session) -> TicketLink:
            rec = self._record(s, call_id)
            rec.customer_id = int(customer_id)
            rec.identified_by = m.IdentifiedBy(by)
            ticket = s.get(m.Ticket, rec.ticket_id) if rec.ticket_id else None
            if ticket is not None:
                self._ticket_changed(s, ticket, {"customer_id": rec.customer_id}, now)
            linked = self._link(s, rec, ticket, now)
            return TicketLink(rec.ticket_id or 0, linked)
        return await self._step(fn)

    async def verified(self, call_id: str, decision: str, *, score: float | None = None,
                       threshold: float | None = None, model: str | None = None, flags: Iterable[str] = (),
                       at: datetime | None = None) -> None:
        def fn(s: Session) -> None:
            rec = self._record(s, call_id)
            rec.verification_decision = decision
            rec.verification_score = score
            rec.verification_threshold = threshold
            rec.verification_model = model
            rec.verification_flags = list(flags)
        await self._step(fn)

    async def service_selected(self, call_id: str, service: str, at: datetime | None = None) -> TicketLink:
        now = at or self.clock()

        def fn(s: Session) -> TicketLink:
            rec = self._record(s, call_id)
            rec.service = service
            ticket = s.get(m.Ticket, rec.ticket_id) if rec.ticket_id else None
            if ticket is not None and ticket.service != service:
                self._ticket_changed(s, ticket, {"service": service}, now)
            linked = self._link(s, rec, ticket, now)
            return TicketLink(rec.ticket_id or 0, linked)
        return await self._step(fn)

    async def ivr_progress(self, call_id: str, path: Sequence[Any]) -> None:
        """The IVR path so far, committed while the caller is still in the IVR (a crash keeps it)."""
        def fn(s: Session) -> None:
            self._record(s, call_id).ivr_path = list(path)
        await self._step(fn)

    async def ivr_finished(self, call_id: str, path: Sequence[Any], exit: m.IvrExit | str,
                           at: datetime | None = None) -> None:
        now = at or self.clock()

        def fn(s: Session) -> None:
            rec = self._record(s, call_id)
            rec.ivr_path = list(path)
            rec.ivr_exit = m.IvrExit(exit)
            rec.ivr_seconds = _secs(rec.arrived_at, now)
        await self._step(fn)

    async def queued(self, call_id: str, queue: str, *, service: str | None = None,
                     at: datetime | None = None) -> TicketLink:
        now = at or self.clock()

        def fn(s: Session) -> TicketLink:
            rec = self._record(s, call_id)
            rec.queue = queue
            if rec.queued_at is None:
                rec.queued_at = now
            ticket = s.get(m.Ticket, rec.ticket_id) if rec.ticket_id else None
            if service is not None and rec.service != service:
                rec.service = service
                if ticket is not None:
                    self._ticket_changed(s, ticket, {"service": service}, now)
            s.add(m.QueueEvent(call_id=call_id, queue=queue, event="queued", at=now))
            linked = self._link(s, rec, ticket, now)
            return TicketLink(rec.ticket_id or 0, linked)
        return await self._step(fn)

    async def answered(self, call_id: str, agent_id: str, at: datetime | None = None) -> None:
        now = at or self.clock()

        def fn(s: Session) -> None:
            rec = self._record(s, call_id)
            if rec.answered_at is None:
                rec.answered_at = now
                rec.wait_seconds = _secs(rec.queued_at, now) if rec.queued_at else 0.0
            rec.agent_id = agent_id
            if rec.queue:
                s.add(m.QueueEvent(call_id=call_id, queue=rec.queue, event="answered", agent_id=agent_id, at=now))
        await self._step(fn)

    async def transferred(self, call_id: str, target: str, at: datetime | None = None) -> None:
        now = at or self.clock()

        def fn(s: Session) -> None:
            rec = self._record(s, call_id)
            rec.transfers += 1
            s.add(m.QueueEvent(call_id=call_id, queue=rec.queue or "", event="transferred",
                               agent_id=rec.agent_id, detail={"target": target}, at=now))
        await self._step(fn)

    def _end(self, s: Session, rec: m.CallRecord, reason: str, now: datetime) -> None:
        rec.status = m.CallStatus.ENDED
        rec.ended_at = now
        rec.end_reason = reason
        if rec.answered_at is not None:
            rec.talk_seconds = _secs(rec.answered_at, now)
        elif rec.queued_at is not None:
            rec.wait_seconds = _secs(rec.queued_at, now)
            if rec.queue:
                s.add(m.QueueEvent(call_id=rec.call_id, queue=rec.queue, event="abandoned", at=now))
        ticket = s.get(m.Ticket, rec.ticket_id) if rec.ticket_id else None
        if ticket is not None and ticket.status is not m.TicketStatus.CLOSED:
            if rec.answered_at is not None:
                self._ticket_changed(s, ticket, {"status": m.TicketStatus.PENDING}, now)
            else:
                if rec.queued_at is not None:
                    disposition = "abandoned"
                elif rec.ivr_exit is m.IvrExit.COMPLETED:
                    disposition = "self_service"
                else:
                    disposition = reason
                rec.disposition = disposition
                self._close_ticket(s, ticket, disposition, None, now)
        if rec.customer_id is not None:
            what = rec.service or "no service chosen"
            outcome = "answered by " + rec.agent_id if rec.agent_id else (rec.disposition or reason)
            inter = log_interaction_sync(s, NewInteraction(
                customer_id=rec.customer_id, summary=f"Call on {what}: {outcome}", ticket_id=rec.ticket_id,
                call_id=rec.call_id, agent_id=rec.agent_id, at=rec.arrived_at), now)
            if self.mirror:
                outbox.enqueue(s, outbox.INTERACTION,
                               {"customer_id": rec.customer_id, "summary": inter.summary, "channel": "voice",
                                "direction": "inbound", "ticket_id": rec.ticket_id, "call_id": rec.call_id,
                                "agent_id": rec.agent_id, "at": rec.arrived_at.isoformat()},
                               ordering_key=f"ticket:{rec.ticket_id}" if rec.ticket_id else None,
                               idempotency_key=f"call:{rec.call_id}:interaction", now=now)
        if self.mirror:
            s.flush()
            outbox.enqueue(s, outbox.CALL_RECORD, record_snapshot(rec), ordering_key=f"call:{rec.call_id}",
                           idempotency_key=f"call:{rec.call_id}:record:{rec.end_reason}", now=now)

    async def ended(self, call_id: str, reason: str, at: datetime | None = None) -> None:
        now = at or self.clock()

        def fn(s: Session) -> None:
            rec = self._record(s, call_id)
            if rec.status is m.CallStatus.ENDED:
                log.info("call %s ended twice (%s); keeping the first end", call_id, reason)
                return
            self._end(s, rec, reason, now)
        await self._step(fn)

    async def wrapped_up(self, call_id: str, disposition: str, notes: str | None = None,
                         at: datetime | None = None, agent_id: str | None = None) -> None:
        """The agent's disposition closes the ticket. An agent who transferred the call (``agent_id`` is not the
        agent who has it now) only adds their note: the ticket stays open for the agent who took the call."""
        now = at or self.clock()

        def fn(s: Session) -> None:
            rec = self._record(s, call_id)
            ticket = s.get(m.Ticket, rec.ticket_id) if rec.ticket_id else None
            if agent_id is not None and rec.transfers > 0 and self._holder(s, call_id) != agent_id:
                if ticket is not None and notes:
                    line = f"[{agent_id}, {disposition}] {notes}"
                    self._ticket_changed(s, ticket, {"notes": (ticket.notes + "\n" if ticket.notes else "") + line},
                                         now)
                return
            closing_notes = notes
            if ticket is not None and notes is not None and ticket.notes and rec.transfers > 0 \
                    and ticket.status is not m.TicketStatus.CLOSED:
                closing_notes = ticket.notes + "\n" + notes   # keep what the transferring agents wrote
            rec.disposition = disposition
            if rec.ended_at is not None:
                rec.wrapup_seconds = _secs(rec.ended_at, now)
            if ticket is not None:
                self._close_ticket(s, ticket, disposition, closing_notes, now)
        await self._step(fn)

    @staticmethod
    def _holder(s: Session, call_id: str) -> str | None:
        """Who has the call now: the agent of the last answer, unless a transfer came after it."""
        last = s.scalars(select(m.QueueEvent).where(m.QueueEvent.call_id == call_id,
                                                    m.QueueEvent.event.in_(("answered", "transferred")))
                         .order_by(m.QueueEvent.id.desc())).first()
        return last.agent_id if last is not None and last.event == "answered" else None

    async def close_stale_agent_states(self, reason: str = "server_restart", at: datetime | None = None) -> list[str]:
        """Agents whose last recorded state is anything but offline (on a call, ringing, wrap-up, available...
        when the process died) get an ``offline`` event, so the history says what routing knows after a
        restart: nobody is on a call. Returns their ids. Call once at start-up, before routing writes."""
        now = at or self.clock()

        def fn(s: Session) -> list[str]:
            last = (select(m.AgentStateEvent.agent_id, func.max(m.AgentStateEvent.id).label("id"))
                    .group_by(m.AgentStateEvent.agent_id).subquery())
            rows = s.execute(select(m.AgentStateEvent).join(last, m.AgentStateEvent.id == last.c.id)).scalars()
            stale = [r for r in rows if r.state != "offline"]
            for r in stale:
                s.add(m.AgentStateEvent(agent_id=r.agent_id, state="offline", reason=reason, call_id=r.call_id,
                                        at=now))
            return sorted(r.agent_id for r in stale)
        agents = await self._step(fn)
        if agents:
            log.warning("agents left in a state by the previous run set offline (%s): %s", reason,
                        ", ".join(agents))
        return agents

    async def close_stale_calls(self, reason: str = "server_restart", at: datetime | None = None) -> int:
        """End every record still active (left by a crash); returns how many. Call once at start-up."""
        now = at or self.clock()

        def fn(s: Session) -> int:
            recs = list(s.scalars(select(m.CallRecord).where(m.CallRecord.status == m.CallStatus.ACTIVE)
                                  .with_for_update()))
            for rec in recs:
                self._end(s, rec, reason, now)
            return len(recs)
        count = await self._step(fn)
        if count:
            log.warning("closed %d call records left active (%s)", count, reason)
        return count
