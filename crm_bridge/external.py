"""``CrmAdapter`` for an external CRM: reads go to the CRM, writes are committed locally and queued.

Lookups ask the remote CRM (through its cache and circuit breaker) and keep a local mirror of the customer, so
tickets and call records reference a local row and the last known record can still be shown (marked stale)
when the CRM is down. Ticket and interaction writes are committed to the local tables and the outbox in one
transaction; ``OutboxDeliverer`` with ``CrmOutboxSink`` carries them to the CRM later. Ids returned are local.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import models as m
from . import outbox
from .coltypes import utcnow
from .crm import (ContactInfo, Customer, Id, NewInteraction, NewTicket, PinCheck, TicketInfo, create_ticket_sync,
                  customer_from_row, find_open_ticket_sync, get_customer_sync, log_interaction_sync,
                  lookup_by_phone_sync, open_tickets_sync, recent_contacts_sync, ticket_from_row,
                  update_ticket_sync)
from .db import Database
from .errors import CrmUnavailableError
from .rest import RestCrmAdapter

log = logging.getLogger(__name__)


def _segment(value: str) -> m.Segment:
    try:
        return m.Segment(value)
    except ValueError:
        return m.Segment.RETAIL


def mirror_customer_sync(s: Session, remote: Customer) -> Customer:
    """Insert or refresh the local copy of a CRM customer (keyed by its CRM id); returns it with the local id."""
    ext = str(remote.external_id or remote.id)
    row = s.scalars(select(m.Customer).where(m.Customer.external_id == ext)).first()
    if row is None:
        row = m.Customer(external_id=ext, name=remote.name)
        s.add(row)
    row.name, row.first_name, row.last_name = remote.name, remote.first_name, remote.last_name
    row.segment, row.language = _segment(remote.segment), remote.language
    s.flush()
    for e164 in remote.phones:
        phone = s.scalars(select(m.PhoneNumber).where(m.PhoneNumber.e164 == e164)).first()
        if phone is None:
            s.add(m.PhoneNumber(e164=e164, customer_id=row.id, verified=True))
        elif phone.customer_id != row.id:
            phone.customer_id = row.id
    s.flush()
    s.refresh(row)
    local = customer_from_row(row)
    return replace(local, accounts=remote.accounts, account_number=remote.account_number, stale=remote.stale)


class OutboxCrmAdapter:
    def __init__(self, db: Database, remote: RestCrmAdapter, *, clock: Callable[[], datetime] = utcnow,
                 on_enqueue: Callable[[], None] | None = None) -> None:
        self.db = db
        self.remote = remote
        self.clock = clock
        self.on_enqueue = on_enqueue

    def _queued(self) -> None:
        if self.on_enqueue is not None:
            self.on_enqueue()

    async def lookup_by_phone(self, e164: str) -> Customer | None:
        try:
            found = await self.remote.lookup_by_phone(e164)
        except CrmUnavailableError:
            local = await self.db.run(lambda s: lookup_by_phone_sync(s, e164))
            if local is None or local.external_id is None:
                raise
            return replace(local, stale=True)
        if found is None:
            return None
        return await self.db.run(lambda s: mirror_customer_sync(s, found))

    async def _external_id(self, customer_id: Id) -> str | None:
        c = await self.db.run(lambda s: get_customer_sync(s, customer_id))
        return c.external_id if c else None

    async def get_customer(self, customer_id: Id) -> Customer | None:
        local = await self.db.run(lambda s: get_customer_sync(s, customer_id))
        if local is None or local.external_id is None:
            return local
        try:
            found = await self.remote.get_customer(local.external_id)
        except CrmUnavailableError:
            return replace(local, stale=True)
        if found is None:
            return None
        return await self.db.run(lambda s: mirror_customer_sync(s, found))

    async def verify_pin(self, account_number: str, pin: str) -> PinCheck:
        check = await self.remote.verify_pin(account_number, pin)
        if check.customer is None:
            return check
        customer = check.customer
        local = await self.db.run(lambda s: mirror_customer_sync(s, customer))
        return replace(check, customer=local)

    async def create_ticket(self, ticket: NewTicket) -> Id:
        now = self.clock()

        def fn(s: Session) -> int:
            row = create_ticket_sync(s, ticket, now)
            outbox.enqueue(s, outbox.TICKET_CREATE,
                           {"ticket_id": row.id, "customer_id": row.customer_id, "service": row.service,
                            "call_id": row.call_id, "line": row.line, "dnis": row.dnis, "notes": row.notes,
                            "linked_ticket_id": row.linked_ticket_id, "status": row.status.value},
                           ordering_key=f"ticket:{row.id}", idempotency_key=f"ticket:{row.id}:create", now=now)
            return row.id
        tid = await self.db.run(fn)
        self._queued()
        return tid

    async def update_ticket(self, ticket_id: Id, **changes: Any) -> None:
        now = self.clock()

        def fn(s: Session) -> None:
            row = update_ticket_sync(s, ticket_id, changes, now)
            outbox.enqueue(s, outbox.TICKET_UPDATE, {"ticket_id": row.id, "changes": dict(changes)},
                           ordering_key=f"ticket:{row.id}", now=now)
        await self.db.run(fn)
        self._queued()

    async def close_ticket(self, ticket_id: Id, disposition: str, notes: str | None = None) -> None:
        now = self.clock()

        def fn(s: Session) -> None:
            changes: dict[str, Any] = {"status": "closed", "disposition": disposition}
            if notes is not None:
                changes["notes"] = notes
            row = update_ticket_sync(s, ticket_id, changes, now)
            outbox.enqueue(s, outbox.TICKET_CLOSE,
                           {"ticket_id": row.id, "disposition": disposition, "notes": row.notes},
                           ordering_key=f"ticket:{row.id}", idempotency_key=f"ticket:{row.id}:close", now=now)
        await self.db.run(fn)
        self._queued()

    async def log_interaction(self, interaction: NewInteraction) -> Id:
        now = self.clock()

        def fn(s: Session) -> int:
            row = log_interaction_sync(s, interaction, now)
            outbox.enqueue(s, outbox.INTERACTION,
                           {"customer_id": row.customer_id, "summary": row.summary, "channel": row.channel,
                            "direction": row.direction, "ticket_id": row.ticket_id, "call_id": row.call_id,
                            "agent_id": row.agent_id, "at": row.at.isoformat()},
                           ordering_key=f"ticket:{row.ticket_id}" if row.ticket_id else None,
                           idempotency_key=f"interaction:{row.id}", now=now)
            return row.id
        iid = await self.db.run(fn)
        self._queued()
        return iid

    async def open_tickets(self, customer_id: Id) -> list[TicketInfo]:
        ext = await self._external_id(customer_id)
        if ext is not None:
            try:
                return await self.remote.open_tickets(ext)
            except CrmUnavailableError:
                log.info("CRM unavailable: showing locally known open tickets")
        return await self.db.run(lambda s: open_tickets_sync(s, customer_id))

    async def recent_contacts(self, customer_id: Id, n: int = 5) -> list[ContactInfo]:
        ext = await self._external_id(customer_id)
        if ext is not None:
            try:
                return await self.remote.recent_contacts(ext, n)
            except CrmUnavailableError:
                log.info("CRM unavailable: showing locally known contacts")
        return await self.db.run(lambda s: recent_contacts_sync(s, customer_id, n))

    async def find_open_ticket(self, customer_id: Id, service: str) -> TicketInfo | None:
        """Local tickets only: a call can link only to a ticket whose local id it knows."""
        def q(s: Session) -> TicketInfo | None:
            row = find_open_ticket_sync(s, customer_id, service)
            return ticket_from_row(row) if row else None
        return await self.db.run(q)
