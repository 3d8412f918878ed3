"""The CRM adapter protocol, its value types, and the built-in SQL adapter.

Every method is async and every implementation keeps the event loop free: the SQL adapter runs its queries in
the database thread pool, the REST adapter (``crm_bridge.rest``) uses aiohttp.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from . import models as m
from .coltypes import utcnow
from .db import Database
from .errors import NotFoundError
from .security import verify_secret

log = logging.getLogger(__name__)

Id = int | str


@dataclass(frozen=True, slots=True)
class AccountSummary:
    iban_masked: str
    balance_bucket: str | None
    products: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Customer:
    id: Id
    name: str
    segment: str
    language: str
    first_name: str | None = None
    last_name: str | None = None
    account_number: str | None = None
    phones: tuple[str, ...] = ()
    accounts: tuple[AccountSummary, ...] = ()
    external_id: str | None = None
    stale: bool = False
    """True when the CRM could not be reached and this is the last known copy."""


@dataclass(frozen=True, slots=True)
class PinCheck:
    ok: bool
    customer: Customer | None
    locked: bool
    attempts_left: int | None
    """None when the account is unknown: the IVR counts those attempts itself."""


@dataclass(frozen=True, slots=True)
class TicketInfo:
    id: Id
    customer_id: Id | None
    service: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    call_id: str | None = None
    line: str | None = None
    disposition: str | None = None
    notes: str | None = None
    linked_ticket_id: Id | None = None


@dataclass(frozen=True, slots=True)
class ContactInfo:
    at: datetime
    channel: str
    direction: str
    summary: str
    agent_id: str | None = None
    ticket_id: Id | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewTicket:
    customer_id: Id | None
    service: str | None = None
    call_id: str | None = None
    line: str | None = None
    dnis: str | None = None
    notes: str | None = None
    linked_ticket_id: Id | None = None
    status: str = "open"


@dataclass(frozen=True, slots=True)
class NewInteraction:
    customer_id: Id
    summary: str
    channel: str = "voice"
    direction: str = "inbound"
    ticket_id: Id | None = None
    call_id: str | None = None
    agent_id: str | None = None
    at: datetime | None = None


TICKET_FIELDS = frozenset({"service", "line", "dnis", "status", "disposition", "notes", "customer_id",
                           "linked_ticket_id", "call_id"})


@dataclass(frozen=True, slots=True)
class PinPolicy:
    max_failures: int = 3
    lockout: timedelta = field(default_factory=lambda: timedelta(minutes=15))


@runtime_checkable
class CrmAdapter(Protocol):
    async def lookup_by_phone(self, e164: str) -> Customer | None: ...

    async def get_customer(self, customer_id: Id) -> Customer | None: ...

    async def verify_pin(self, account_number: str, pin: str) -> PinCheck: ...

    async def create_ticket(self, ticket: NewTicket) -> Id: ...

    async def update_ticket(self, ticket_id: Id, **changes: Any) -> None: ...

    async def close_ticket(self, ticket_id: Id, disposition: str, notes: str | None = None) -> None: ...

    async def log_interaction(self, interaction: NewInteraction) -> Id: ...

    async def open_tickets(self, customer_id: Id) -> list[TicketInfo]: ...

    async def recent_contacts(self, customer_id: Id, n: int = 5) -> list[ContactInfo]: ...

    async def find_open_ticket(self, customer_id: Id, service: str) -> TicketInfo | None: ...


def customer_from_row(row: m.Customer, *, stale: bool = False) -> Customer:
    return Customer(
        id=row.id, name=row.name, segment=row.segment.value, language=row.language,
        first_name=row.first_name, last_name=row.last_name, account_number=row.account_number,
        phones=tuple(p.e164 for p in row.phone_numbers),
        accounts=tuple(AccountSummary(a.iban_masked, a.balance_bucket, tuple(a.products or ()))
                       for a in row.accounts),
        external_id=row.external_id, stale=stale,
    )


def ticket_from_row(row: m.Ticket) -> TicketInfo:
    return TicketInfo(id=row.id, customer_id=row.customer_id, service=row.service, status=row.status.value,
                      created_at=row.created_at, updated_at=row.updated_at, call_id=row.call_id, line=row.line,
                      disposition=row.disposition, notes=row.notes, linked_ticket_id=row.linked_ticket_id)


def _customer_query():  # type: ignore[no-untyped-def]
    return select(m.Customer).options(selectinload(m.Customer.phone_numbers), selectinload(m.Customer.accounts))


# --- synchronous operations on a session, shared by the SQL adapter, the recorder and the outbox adapter ---

def lookup_by_phone_sync(s: Session, e164: str) -> Customer | None:
    row = s.scalars(_customer_query().join(m.PhoneNumber).where(m.PhoneNumber.e164 == e164)).first()
    return customer_from_row(row) if row else None


def get_customer_sync(s: Session, customer_id: Id) -> Customer | None:
    try:
        cid = int(customer_id)
    except (TypeError, ValueError):
        return None
    row = s.scalars(_customer_query().where(m.Customer.id == cid)).first()
    return customer_from_row(row) if row else None


def find_open_ticket_sync(s: Session, customer_id: Id, service: str) -> m.Ticket | None:
    return s.scalars(
        select(m.Ticket)
        .where(m.Ticket.customer_id == int(customer_id), m.Ticket.service == service,
               m.Ticket.status != m.TicketStatus.CLOSED)
        .order_by(m.Ticket.created_at.desc(), m.Ticket.id.desc())
    ).first()


def create_ticket_sync(s: Session, t: NewTicket, now: datetime) -> m.Ticket:
    row = m.Ticket(customer_id=None if t.customer_id is None else int(t.customer_id), service=t.service,
                   call_id=t.call_id, line=t.line, dnis=t.dnis, notes=t.notes,
                   linked_ticket_id=None if t.linked_ticket_id is None else int(t.linked_ticket_id),
                   status=m.TicketStatus(t.status), created_at=now, updated_at=now)
    s.add(row)
    s.flush()
    return row


def update_ticket_sync(s: Session, ticket_id: Id, changes: dict[str, Any], now: datetime) -> m.Ticket:
    unknown = set(changes) - TICKET_FIELDS
    if unknown:
        raise ValueError(f"cannot update ticket fields {sorted(unknown)}; allowed: {sorted(TICKET_FIELDS)}")
    row = s.get(m.Ticket, int(ticket_id), with_for_update=True)
    if row is None:
        raise NotFoundError(f"ticket {ticket_id} does not exist")
    for key, value in changes.items():
        if key == "status":
            value = m.TicketStatus(value)
            row.closed_at = now if value is m.TicketStatus.CLOSED else None
        setattr(row, key, value)
    row.updated_at = now
    return row


def log_interaction_sync(s: Session, i: NewInteraction, now: datetime) -> m.Interaction:
    row = m.Interaction(customer_id=int(i.customer_id), summary=i.summary, channel=i.channel,
                        direction=i.direction, ticket_id=None if i.ticket_id is None else int(i.ticket_id),
                        call_id=i.call_id, agent_id=i.agent_id, at=i.at or now)
    s.add(row)
    s.flush()
    return row


def open_tickets_sync(s: Session, customer_id: Id) -> list[TicketInfo]:
    rows = s.scalars(select(m.Ticket).where(m.Ticket.customer_id == int(customer_id),
                                            m.Ticket.status != m.TicketStatus.CLOSED)
                     .order_by(m.Ticket.created_at.desc(), m.Ticket.id.desc()))
    return [ticket_from_row(r) for r in rows]


def recent_contacts_sync(s: Session, customer_id: Id, n: int) -> list[ContactInfo]:
    rows = s.scalars(select(m.Interaction).where(m.Interaction.customer_id == int(customer_id))
                     .order_by(m.Interaction.at.desc(), m.Interaction.id.desc()).limit(max(0, n)))
    return [ContactInfo(at=r.at, channel=r.channel, direction=r.direction, summary=r.summary,
                        agent_id=r.agent_id, ticket_id=r.ticket_id, call_id=r.call_id) for r in rows]


def verify_pin_sync(s: Session, account_number: str, pin: str, policy: PinPolicy, now: datetime,
                    hasher: PasswordHasher | None = None) -> PinCheck:
    row = s.scalars(_customer_query().where(m.Customer.account_number == account_number)
                    .with_for_update()).first()
    if row is None or row.pin_hash is None:
        return PinCheck(ok=False, customer=None, locked=False, attempts_left=None)
    if row.locked_until is not None:
        if row.locked_until > now:
            return PinCheck(ok=False, customer=None, locked=True, attempts_left=0)
        row.locked_until = None
        row.pin_failures = 0
    if verify_secret(row.pin_hash, pin, hasher):
        row.pin_failures = 0
        return PinCheck(ok=True, customer=customer_from_row(row), locked=False,
                        attempts_left=policy.max_failures)
    row.pin_failures += 1
    left = policy.max_failures - row.pin_failures
    if left <= 0:
        row.locked_until = now + policy.lockout
        log.warning("account %s locked after %d wrong PINs", account_number[-4:].rjust(len(account_number), "*"),
                    row.pin_failures)
        return PinCheck(ok=False, customer=None, locked=True, attempts_left=0)
    return PinCheck(ok=False, customer=None, locked=False, attempts_left=left)


class SqlCrmAdapter:
    """The built-in CRM: the project's own database."""

    def __init__(self, db: Database, *, pin_policy: PinPolicy | None = None,
                 hasher: PasswordHasher | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.pin_policy = pin_policy or PinPolicy()
        self.hasher = hasher
        self.clock = clock

    async def lookup_by_phone(self, e164: str) -> Customer | None:
        return await self.db.read(lambda s: lookup_by_phone_sync(s, e164))

    async def get_customer(self, customer_id: Id) -> Customer | None:
        return await self.db.read(lambda s: get_customer_sync(s, customer_id))

    async def verify_pin(self, account_number: str, pin: str) -> PinCheck:
        now = self.clock()
        return await self.db.run(
            lambda s: verify_pin_sync(s, account_number, pin, self.pin_policy, now, self.hasher))

    async def create_ticket(self, ticket: NewTicket) -> Id:
        now = self.clock()
        return await self.db.run(lambda s: create_ticket_sync(s, ticket, now).id)

    async def update_ticket(self, ticket_id: Id, **changes: Any) -> None:
        now = self.clock()
        await self.db.run(lambda s: update_ticket_sync(s, ticket_id, changes, now))

    async def close_ticket(self, ticket_id: Id, disposition: str, notes: str | None = None) -> None:
        changes: dict[str, Any] = {"status": "closed", "disposition": disposition}
        if notes is not None:
            changes["notes"] = notes
        await self.update_ticket(ticket_id, **changes)

    async def log_interaction(self, interaction: NewInteraction) -> Id:
        now = self.clock()
        return await self.db.run(lambda s: log_interaction_sync(s, interaction, now).id)

    async def open_tickets(self, customer_id: Id) -> list[TicketInfo]:
        return await self.db.read(lambda s: open_tickets_sync(s, customer_id))

    async def recent_contacts(self, customer_id: Id, n: int = 5) -> list[ContactInfo]:
        return await self.db.read(lambda s: recent_contacts_sync(s, customer_id, n))

    async def find_open_ticket(self, customer_id: Id, service: str) -> TicketInfo | None:
        def q(s: Session) -> TicketInfo | None:
            row = find_open_ticket_sync(s, customer_id, service)
            return ticket_from_row(row) if row else None
        return await self.db.read(q)
