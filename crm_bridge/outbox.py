"""The durable outbox: writes owed to an external CRM are committed locally first, then delivered.

Producers call ``enqueue`` inside the same transaction as their own change (the ticket, the call record), so a
write is either fully recorded locally with its delivery owed, or not at all. ``OutboxDeliverer`` then delivers
items in id order with exponential backoff. Items sharing an ``ordering_key`` (``ticket:42``) are delivered
strictly in order: a failing item holds back the later ones of its key only. Each attempt carries the item's
idempotency key, so an item delivered just before a crash and delivered again after the restart is applied once.

One deliverer per database is assumed for now; several nodes on PostgreSQL would claim rows with
``FOR UPDATE SKIP LOCKED`` (a later step).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import models as m
from .coltypes import utcnow
from .crm import NewInteraction, NewTicket
from .db import Database
from .errors import CrmRejectedError, CrmUnavailableError

log = logging.getLogger(__name__)

TICKET_CREATE = "ticket.create"
TICKET_UPDATE = "ticket.update"
TICKET_CLOSE = "ticket.close"
INTERACTION = "interaction"
CALL_RECORD = "call_record"
KINDS = frozenset({TICKET_CREATE, TICKET_UPDATE, TICKET_CLOSE, INTERACTION, CALL_RECORD})


def enqueue(session: Session, kind: str, payload: Mapping[str, Any], *, ordering_key: str | None = None,
            idempotency_key: str | None = None, now: datetime | None = None) -> m.OutboxItem:
    """Add an item to the outbox in the caller's transaction (it is durable when that transaction commits)."""
    if kind not in KINDS:
        raise ValueError(f"unknown outbox kind {kind!r}; known: {sorted(KINDS)}")
    now = now or utcnow()
    item = m.OutboxItem(kind=kind, payload=dict(payload), ordering_key=ordering_key,
                        idempotency_key=idempotency_key or f"{kind}:{uuid.uuid4()}", created_at=now,
                        next_attempt_at=now, attempts=0)
    session.add(item)
    return item


@dataclass(frozen=True, slots=True)
class PendingItem:
    id: int
    kind: str
    ordering_key: str | None
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime


class OutboxSink(Protocol):
    """Where outbox items go. Raise ``CrmUnavailableError`` to retry later, ``CrmRejectedError`` to give up."""

    async def deliver(self, item: PendingItem) -> None: ...


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(m.OutboxItem)
                          .where(m.OutboxItem.delivered_at.is_(None), m.OutboxItem.failed_at.is_(None))) or 0


class OutboxDeliverer:
    """Delivers the outbox to a sink; ``run()`` as a task for the life of the server, ``deliver_due()`` once.

    A pass stops early after ``pause_after`` consecutive "CRM unavailable" failures: a dead CRM should not cost
    one timeout per pending item.
    """

    def __init__(self, db: Database, sink: OutboxSink, *, clock: Callable[[], datetime] = utcnow,
                 batch: int = 100, backoff: float = 1.0, backoff_max: float = 300.0,
                 poll_interval: float = 1.0, pause_after: int = 3) -> None:
        self.db = db
        self.sink = sink
        self.clock = clock
        self.batch = batch
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.pause_after = pause_after
        self._wake = asyncio.Event()
        self._stopping = False

    def retry_delay(self, attempts: int) -> float:
        return min(self.backoff_max, self.backoff * 2 ** max(0, attempts - 1))

    def _load(self, s: Session) -> list[PendingItem]:
        rows = s.scalars(select(m.OutboxItem)
                         .where(m.OutboxItem.delivered_at.is_(None), m.OutboxItem.failed_at.is_(None))
                         .order_by(m.OutboxItem.id).limit(self.batch))
        return [PendingItem(r.id, r.kind, r.ordering_key, r.idempotency_key, dict(r.payload), r.attempts,
                            r.next_attempt_at) for r in rows]

    def _mark(self, item_id: int, **values: Any) -> Callable[[Session], None]:
        def apply(s: Session) -> None:
            s.execute(update(m.OutboxItem).where(m.OutboxItem.id == item_id).values(**values))
        return apply

    async def deliver_due(self) -> int:
        """One pass over the due items; returns how many were delivered."""
        items = await self.db.run(self._load)
        blocked: set[str] = set()
        delivered = 0
        unavailable = 0
        for item in items:
            if item.ordering_key is not None and item.ordering_key in blocked:
                continue
            now = self.clock()
            if item.next_attempt_at > now:
                if item.ordering_key is not None:
                    blocked.add(item.ordering_key)
                continue
            try:
                await self.sink.deliver(item)
            except CrmRejectedError as exc:
                log.error("outbox item %d (%s) rejected by the CRM, kept as failed: %s", item.id, item.kind, exc)
                await self.db.run(self._mark(item.id, failed_at=self.clock(), attempts=item.attempts + 1,
                                             last_error=str(exc)[:1000]))
                continue
            except Exception as exc:  # noqa: BLE001 - any failure of the CRM leaves the item owed, never lost
                attempts = item.attempts + 1
                retry_at = self.clock() + timedelta(seconds=self.retry_delay(attempts))
                await self.db.run(self._mark(item.id, attempts=attempts, next_attempt_at=retry_at,
                                             last_error=f"{type(exc).__name__}: {exc}"[:1000]))
                if item.ordering_key is not None:
                    blocked.add(item.ordering_key)
                if isinstance(exc, CrmUnavailableError):
                    unavailable += 1
                    if unavailable >= self.pause_after:
                        log.info("CRM unavailable, outbox delivery paused: %s", exc)
                        break
                    continue
                log.warning("outbox item %d (%s) failed, retry in %.1f s: %s", item.id, item.kind,
                            self.retry_delay(attempts), exc)
                continue
            await self.db.run(self._mark(item.id, delivered_at=self.clock(), attempts=item.attempts + 1,
                                         last_error=None))
            delivered += 1
            unavailable = 0
        return delivered

    def wake(self) -> None:
        """Producers call this after enqueueing so delivery starts without waiting for the next poll."""
        self._wake.set()

    async def run(self) -> None:
        self._stopping = False
        while not self._stopping:
            try:
                await self.deliver_due()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the delivery task
                log.exception("outbox pass failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()


class CrmOutboxSink:
    """Delivers outbox items to a ``RestCrmAdapter``, translating local ids into the CRM's ids.

    A created ticket's CRM id is stored in ``tickets.external_id``; later updates of that ticket (ordered after
    the create by their ordering key) use it. Customers are sent by their ``external_id`` when they have one.
    """

    def __init__(self, db: Database, remote: Any) -> None:
        self.db = db
        self.remote = remote

    def _ids(self, ticket_id: int | None, customer_id: int | None) -> Callable[[Session], tuple[Any, Any]]:
        def q(s: Session) -> tuple[Any, Any]:
            ext_ticket = None
            if ticket_id is not None:
                t = s.get(m.Ticket, ticket_id)
                ext_ticket = t.external_id if t else None
            ext_customer: Any = customer_id
            if customer_id is not None:
                c = s.get(m.Customer, customer_id)
                if c is not None and c.external_id:
                    ext_customer = c.external_id
            return ext_ticket, ext_customer
        return q

    async def deliver(self, item: PendingItem) -> None:
        p = item.payload
        key = item.idempotency_key
        if item.kind == TICKET_CREATE:
            _, customer = await self.db.run(self._ids(None, p.get("customer_id")))
            linked, _ = await self.db.run(self._ids(p.get("linked_ticket_id"), None))
            ticket = NewTicket(customer_id=customer, service=p.get("service"), call_id=p.get("call_id"),
                               line=p.get("line"), dnis=p.get("dnis"), notes=p.get("notes"),
                               linked_ticket_id=linked, status=p.get("status", "open"))
            ext_id = await self.remote.create_ticket(ticket, idempotency_key=key,
                                                     extra={"reference": p["ticket_id"]})
            local_id = int(p["ticket_id"])

            def store(s: Session) -> None:
                s.execute(update(m.Ticket).where(m.Ticket.id == local_id).values(external_id=str(ext_id)))
            await self.db.run(store)
        elif item.kind in (TICKET_UPDATE, TICKET_CLOSE):
            ext_ticket, _ = await self.db.run(self._ids(int(p["ticket_id"]), None))
            if ext_ticket is None:
                raise CrmRejectedError(f"ticket {p['ticket_id']} was never created in the CRM; cannot update it")
            if item.kind == TICKET_CLOSE:
                await self.remote.close_ticket(ext_ticket, p["disposition"], p.get("notes"), idempotency_key=key)
            else:
                changes = dict(p["changes"])
                if changes.get("customer_id") is not None:
                    _, changes["customer_id"] = await self.db.run(self._ids(None, int(changes["customer_id"])))
                if changes.get("linked_ticket_id") is not None:
                    # the linked ticket has its own ordering key; if its create is still owed, send no link
                    changes["linked_ticket_id"], _ = await self.db.run(
                        self._ids(int(changes["linked_ticket_id"]), None))
                await self.remote.update_ticket(ext_ticket, idempotency_key=key, **changes)
        elif item.kind == INTERACTION:
            ext_ticket, customer = await self.db.run(self._ids(p.get("ticket_id"), p["customer_id"]))
            at = datetime.fromisoformat(p["at"]) if p.get("at") else None
            await self.remote.log_interaction(
                NewInteraction(customer_id=customer, summary=p.get("summary", ""), channel=p.get("channel", "voice"),
                               direction=p.get("direction", "inbound"), ticket_id=ext_ticket,
                               call_id=p.get("call_id"), agent_id=p.get("agent_id"), at=at),
                idempotency_key=key)
        elif item.kind == CALL_RECORD:
            await self.remote.post("call_record", p, idempotency_key=key)
        else:
            raise CrmRejectedError(f"outbox kind {item.kind!r} has no delivery rule")
