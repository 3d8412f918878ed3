"""Concurrent writers through the thread pool: no lost update, no 'database is locked'."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from crm_bridge import models as m
from crm_bridge.crm import PinPolicy, SqlCrmAdapter
from crm_bridge.db import Database
from crm_bridge.recorder import CallRecorder
from crm_bridge.security import fast_hasher, hash_secret

H = fast_hasher()


async def test_parallel_wrong_pins_count_every_failure(db_url: str) -> None:
    from crm_bridge.migrate import upgrade_database
    upgrade_database(db_url)
    db = Database.from_url(db_url, workers=8)
    try:
        db.run_sync(lambda s: s.add(m.Customer(name="X", account_number="555", pin_hash=hash_secret("9999", H))))
        crm = SqlCrmAdapter(db, pin_policy=PinPolicy(3, timedelta(minutes=5)), hasher=H)
        results = await asyncio.gather(*(crm.verify_pin("555", "0000") for _ in range(12)))
        assert not any(r.ok for r in results)
        assert sorted(r.attempts_left for r in results if not r.locked) == [1, 2]
        assert sum(r.locked for r in results) == 10
        assert not (await crm.verify_pin("555", "9999")).ok  # locked even for the right PIN
    finally:
        db.close()


async def test_many_calls_recorded_concurrently(db_url: str) -> None:
    from crm_bridge.migrate import upgrade_database
    upgrade_database(db_url)
    db = Database.from_url(db_url, workers=8)
    try:
        rec = CallRecorder(db)

        async def one(k: int) -> None:
            cid = f"c{k}"
            await rec.call_arrived(cid, ani=f"+39{k}", dnis="800")
            await rec.queued(cid, "q", service="cards")
            await rec.answered(cid, "a1")
            await rec.transferred(cid, "sip:x")
            await rec.ended(cid, "caller_hangup")
        await asyncio.gather(*(one(k) for k in range(40)))
        ended = db.run_sync(lambda s: s.scalar(select(func.count()).select_from(m.CallRecord)
                                               .where(m.CallRecord.status == m.CallStatus.ENDED,
                                                      m.CallRecord.transfers == 1)))
        assert ended == 40
    finally:
        db.close()


async def test_lookups_do_not_wait_for_a_writer(db: Database) -> None:
    db.run_sync(lambda s: s.add(m.Customer(name="Y", phone_numbers=[m.PhoneNumber(e164="+39347000")])))
    crm = SqlCrmAdapter(db)
    with db.sessions.begin() as writer:  # a long write transaction holds the write lock
        writer.add(m.Customer(name="Z"))
        writer.flush()
        found = await asyncio.wait_for(crm.lookup_by_phone("+39347000"), timeout=4)
        assert found is not None and found.name == "Y"
