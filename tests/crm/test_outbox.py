"""CRM down -> writes queued durably -> CRM back -> every write delivered once, in order per ticket."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from crm_bridge import models as m
from crm_bridge.db import Database
from crm_bridge.external import OutboxCrmAdapter
from crm_bridge.outbox import CrmOutboxSink, OutboxDeliverer, pending_count
from crm_bridge.recorder import CallRecorder
from crm_bridge.rest import RestCrmAdapter, RestCrmConfig

from .fake_crm import FakeCrm

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


def remote(crm: FakeCrm) -> RestCrmAdapter:
    # a huge failure threshold keeps the breaker out of these tests: the outbox alone must cope
    return RestCrmAdapter(RestCrmConfig(base_url=crm.url, timeout=1.0, retries=0, breaker_failures=1000))


async def drain(deliverer: OutboxDeliverer, db: Database, clock: Clock, passes: int = 20) -> None:
    for _ in range(passes):
        await deliverer.deliver_due()
        if await db.run(pending_count) == 0:
            return
        clock.advance(600)
    raise AssertionError("outbox did not drain")


async def place_calls(rec: CallRecorder, clock: Clock, customer_id: int, n: int) -> None:
    for k in range(n):
        cid = f"call-{k}"
        await rec.call_arrived(cid, ani="+393401112233", dnis="800", line="retail", at=clock())
        await rec.identified(cid, customer_id, "ani", at=clock())
        await rec.queued(cid, "cards_q", service="cards", at=clock())
        await rec.answered(cid, "agent-1", at=clock())
        await rec.ended(cid, "caller_hangup", at=clock())
        await rec.wrapped_up(cid, "solved", f"notes {k}", at=clock())
        clock.advance(60)


def _customer(db: Database, external_id: str) -> int:
    def add(s):  # type: ignore[no-untyped-def]
        c = m.Customer(name="Anna Neri", external_id=external_id)
        s.add(c)
        s.flush()
        return c.id
    return db.run_sync(add)


async def test_crm_down_then_back_delivers_everything_once_in_order(db: Database, fake_crm: FakeCrm) -> None:
    fake_crm.add_customer("C-9", "Anna Neri", ["+393401112233"])
    clock = Clock()
    cid = _customer(db, "C-9")
    await fake_crm.stop()  # the CRM is down for the whole busy period
    rec = CallRecorder(db, mirror_to_crm=True, clock=clock)
    await place_calls(rec, clock, cid, 3)
    async with remote(fake_crm) as rest:
        deliverer = OutboxDeliverer(db, CrmOutboxSink(db, rest), clock=clock, backoff=5)
        assert await deliverer.deliver_due() == 0
        queued = await db.run(pending_count)
        assert queued > 0
        first = await db.run(lambda s: s.scalars(select(m.OutboxItem).order_by(m.OutboxItem.id)).first())
        assert first.attempts == 1 and first.last_error and first.next_attempt_at == T0 + timedelta(minutes=3, seconds=5)
        await fake_crm.start()  # same port
        await drain(deliverer, db, clock)
    assert fake_crm.duplicates == 0
    assert len(fake_crm.tickets) == 3 and len(fake_crm.call_records) == 3 and len(fake_crm.interactions) == 3
    assert all(t["status"] == "closed" and t["disposition"] == "solved" for t in fake_crm.tickets.values())
    assert {t["customer_id"] for t in fake_crm.tickets.values()} == {"C-9"}  # sent by the CRM's own id
    for tid in fake_crm.tickets:
        ops = [op for t, op in fake_crm.ticket_ops if t == tid]
        assert ops[0] == "create" and ops.index("close") > max(i for i, o in enumerate(ops) if o == "update")
    # local tickets learned their CRM ids
    ext = await db.run(lambda s: sorted(t.external_id for t in s.scalars(select(m.Ticket))))
    assert ext == sorted(fake_crm.tickets)
    delivered = await db.run(lambda s: s.scalars(select(m.OutboxItem)).all())
    assert len(delivered) == queued and all(i.delivered_at is not None for i in delivered)


async def test_redelivery_after_crash_is_applied_once(db: Database, fake_crm: FakeCrm) -> None:
    clock = Clock()
    rec = CallRecorder(db, mirror_to_crm=True, clock=clock)
    await rec.call_arrived("c1", ani=None, dnis="800", at=clock())
    async with remote(fake_crm) as rest:
        await OutboxDeliverer(db, CrmOutboxSink(db, rest), clock=clock).deliver_due()
        assert len(fake_crm.tickets) == 1
        # the process died after the CRM applied the item but before delivered_at was committed
        db.run_sync(lambda s: s.execute(m.OutboxItem.__table__.update().values(delivered_at=None)))
        await OutboxDeliverer(db, CrmOutboxSink(db, rest), clock=clock).deliver_due()
    assert len(fake_crm.tickets) == 1 and fake_crm.duplicates == 1
    assert await db.run(pending_count) == 0


async def test_pending_items_delivered_after_restart(db: Database, db_url: str, fake_crm: FakeCrm) -> None:
    clock = Clock()
    await fake_crm.stop()
    rec = CallRecorder(db, mirror_to_crm=True, clock=clock)
    await rec.call_arrived("c1", ani=None, dnis="800", at=clock())
    await rec.ended("c1", "caller_hangup", at=clock())
    db.close()  # server stops with the CRM still down
    await fake_crm.start()
    db2 = Database.from_url(db_url)
    try:
        async with remote(fake_crm) as rest:
            await drain(OutboxDeliverer(db2, CrmOutboxSink(db2, rest), clock=clock), db2, clock)
    finally:
        db2.close()
    assert len(fake_crm.tickets) == 1 and len(fake_crm.call_records) == 1
    assert next(iter(fake_crm.tickets.values()))["status"] == "closed"


async def test_a_failing_ticket_holds_back_only_its_own_items(db: Database, fake_crm: FakeCrm) -> None:
    clock = Clock()
    rec = CallRecorder(db, mirror_to_crm=True, clock=clock)
    await rec.call_arrived("a", ani=None, dnis="800", at=clock())
    async with remote(fake_crm) as rest:
        deliverer = OutboxDeliverer(db, CrmOutboxSink(db, rest), clock=clock, backoff=30)
        await deliverer.deliver_due()
        await rec.queued("a", "q", service="cards", at=clock())       # ticket A update
        await rec.call_arrived("b", ani=None, dnis="800", at=clock())  # ticket B create
        await rec.ended("a", "caller_hangup", at=clock())              # ticket A close + call record
        fake_crm.fail_next["PATCH /tickets/"] = 1                      # A's update fails once
        await deliverer.deliver_due()
        assert [op for _, op in fake_crm.ticket_ops] == ["create", "create"]  # B went on, A's close waited
        assert len(fake_crm.call_records) == 1  # other keys are not held back either
        await drain(deliverer, db, clock)
    ops_a = [op for t, op in fake_crm.ticket_ops if t == "T-1"]
    assert ops_a == ["create", "update", "close"]


async def test_run_task_delivers_when_woken(db: Database, fake_crm: FakeCrm) -> None:
    fake_crm.add_customer("C-5", "Ugo Riva", ["+39340555"])
    async with remote(fake_crm) as rest:
        deliverer = OutboxDeliverer(db, CrmOutboxSink(db, rest), poll_interval=30)
        adapter = OutboxCrmAdapter(db, rest, on_enqueue=deliverer.wake)
        task = asyncio.create_task(deliverer.run())
        try:
            customer = await adapter.lookup_by_phone("+39340555")
            assert customer is not None and customer.external_id == "C-5" and isinstance(customer.id, int)
            tid = await adapter.create_ticket(
                __import__("crm_bridge.crm", fromlist=["NewTicket"]).NewTicket(customer_id=customer.id,
                                                                               service="loans"))
            await adapter.close_ticket(tid, "info_given", "rates sent")
            for _ in range(200):
                if fake_crm.tickets and next(iter(fake_crm.tickets.values()))["status"] == "closed":
                    break
                await asyncio.sleep(0.02)
        finally:
            deliverer.stop()
            await task
    ticket = next(iter(fake_crm.tickets.values()))
    assert ticket["customer_id"] == "C-5" and ticket["status"] == "closed" and ticket["notes"] == "rates sent"
    # the CRM goes down: the pop still gets the mirrored customer, marked stale
    await fake_crm.stop()
    async with remote(fake_crm) as rest:
        adapter = OutboxCrmAdapter(db, rest)
        stale = await adapter.lookup_by_phone("+39340555")
        assert stale is not None and stale.stale and stale.name == "Ugo Riva"
        assert [t.id for t in await adapter.open_tickets(stale.id)] == []
