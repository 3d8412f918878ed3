from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from crm_bridge import models as m
from crm_bridge.crm import CrmAdapter, NewInteraction, NewTicket, PinPolicy, SqlCrmAdapter
from crm_bridge.db import Database
from crm_bridge.errors import NotFoundError
from crm_bridge.security import fast_hasher, hash_secret

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)
H = fast_hasher()


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def _customer(db: Database) -> int:
    def add(s):  # type: ignore[no-untyped-def]
        c = m.Customer(name="Giulia Bianchi", first_name="Giulia", last_name="Bianchi", segment=m.Segment.CRITICAL,
                       language="it", account_number="IT-0001", pin_hash=hash_secret("4821", H))
        c.phone_numbers.append(m.PhoneNumber(e164="+393471234567", label="mobile", verified=True))
        c.accounts.append(m.Account(iban_masked="IT60***************3456", balance_bucket="10k-50k",
                                    products=["conto", "carta"]))
        s.add(c)
        s.flush()
        return c.id
    return db.run_sync(add)


def adapter(db: Database, clock: Clock) -> SqlCrmAdapter:
    return SqlCrmAdapter(db, pin_policy=PinPolicy(max_failures=3, lockout=timedelta(minutes=15)), hasher=H,
                         clock=clock)


async def test_lookup_by_phone_and_get_customer(db: Database) -> None:
    cid = _customer(db)
    crm = adapter(db, Clock(T0))
    assert isinstance(crm, CrmAdapter)
    c = await crm.lookup_by_phone("+393471234567")
    assert c is not None and c.id == cid and c.name == "Giulia Bianchi" and c.segment == "critical"
    assert c.phones == ("+393471234567",) and c.accounts[0].products == ("conto", "carta")
    assert await crm.lookup_by_phone("+390000000000") is None
    assert (await crm.get_customer(cid)) == c
    assert await crm.get_customer(cid + 100) is None
    assert await crm.get_customer("not-a-number") is None


async def test_pin_attempts_then_timed_lockout(db: Database) -> None:
    cid = _customer(db)
    clock = Clock(T0)
    crm = adapter(db, clock)
    first = await crm.verify_pin("IT-0001", "0000")
    assert (first.ok, first.locked, first.attempts_left) == (False, False, 2)
    ok = await crm.verify_pin("IT-0001", "4821")
    assert ok.ok and ok.customer is not None and ok.customer.id == cid and ok.attempts_left == 3
    results = [await crm.verify_pin("IT-0001", "1111") for _ in range(3)]
    assert [r.attempts_left for r in results] == [2, 1, 0] and results[-1].locked
    # the right PIN is refused while locked
    locked = await crm.verify_pin("IT-0001", "4821")
    assert locked.locked and not locked.ok
    clock.t = T0 + timedelta(minutes=15, seconds=1)
    after = await crm.verify_pin("IT-0001", "4821")
    assert after.ok and not after.locked
    unknown = await crm.verify_pin("NOPE", "4821")
    assert (unknown.ok, unknown.customer, unknown.attempts_left) == (False, None, None)


async def test_ticket_lifecycle_and_history(db: Database) -> None:
    cid = _customer(db)
    clock = Clock(T0)
    crm = adapter(db, clock)
    t1 = await crm.create_ticket(NewTicket(customer_id=cid, service="cards", line="retail", call_id="c1"))
    clock.t = T0 + timedelta(minutes=1)
    t2 = await crm.create_ticket(NewTicket(customer_id=cid, service="cards", linked_ticket_id=t1))
    t3 = await crm.create_ticket(NewTicket(customer_id=cid, service="trading"))
    found = await crm.find_open_ticket(cid, "cards")
    assert found is not None and found.id == t2 and found.linked_ticket_id == t1
    await crm.update_ticket(t2, status="pending", notes="waiting for the card office")
    await crm.close_ticket(t1, "solved", "card blocked")
    open_ = await crm.open_tickets(cid)
    assert [t.id for t in open_] == [t3, t2] or [t.id for t in open_] == [t2, t3]
    assert {t.status for t in open_} == {"open", "pending"}
    await crm.close_ticket(t2, "solved")
    await crm.close_ticket(t3, "solved")
    assert await crm.find_open_ticket(cid, "cards") is None
    closed = db.run_sync(lambda s: s.get(m.Ticket, t1))
    assert closed.status is m.TicketStatus.CLOSED and closed.closed_at == T0 + timedelta(minutes=1) and closed.disposition == "solved"
    with pytest.raises(NotFoundError):
        await crm.update_ticket(9999, notes="x")
    with pytest.raises(ValueError, match="cannot update"):
        await crm.update_ticket(t1, pin_hash="x")

    for k in range(4):
        await crm.log_interaction(NewInteraction(customer_id=cid, summary=f"call {k}",
                                                 at=T0 + timedelta(days=k), agent_id="a1"))
    recent = await crm.recent_contacts(cid, 2)
    assert [c.summary for c in recent] == ["call 3", "call 2"]
