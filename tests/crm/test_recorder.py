from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from crm_bridge import models as m
from crm_bridge.db import Database
from crm_bridge.errors import CallRecordError
from crm_bridge.recorder import CallRecorder

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _customer(db: Database) -> int:
    def add(s):  # type: ignore[no-untyped-def]
        c = m.Customer(name="Marco Rossi")
        s.add(c)
        s.flush()
        return c.id
    return db.run_sync(add)


def _rec(db: Database, call_id: str) -> m.CallRecord:
    return db.run_sync(lambda s: s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == call_id)).one())


def _ticket(db: Database, tid: int) -> m.Ticket:
    return db.run_sync(lambda s: s.get(m.Ticket, tid))


async def test_full_call_lifecycle(db: Database) -> None:
    cid = _customer(db)
    rec = CallRecorder(db)
    tid = await rec.call_arrived("call-1", ani="+393331234567", dnis="0200001", line="retail", at=at(0))
    assert _rec(db, "call-1").status is m.CallStatus.ACTIVE  # committed at arrival
    await rec.identified("call-1", cid, "ani", at=at(2))
    await rec.verified("call-1", "accept", score=0.81, threshold=0.6, model="ecapa", flags=["replay_checked"])
    await rec.service_selected("call-1", "cards", at=at(20))
    await rec.ivr_finished("call-1", [{"node": "welcome"}, {"node": "menu", "digit": "2"}], "queued", at=at(30))
    await rec.queued("call-1", "cards_q", at=at(30))
    await rec.answered("call-1", "agent-7", at=at(45))
    await rec.transferred("call-1", "sip:2001@pbx", at=at(100))
    await rec.ended("call-1", "caller_hangup", at=at(245))
    r = _rec(db, "call-1")
    assert (r.customer_id, r.identified_by, r.service, r.queue, r.agent_id) == (cid, m.IdentifiedBy.ANI, "cards",
                                                                               "cards_q", "agent-7")
    assert (r.verification_decision, r.verification_score, r.verification_flags) == ("accept", 0.81,
                                                                                     ["replay_checked"])
    assert (r.ivr_seconds, r.wait_seconds, r.talk_seconds, r.transfers) == (30.0, 15.0, 200.0, 1)
    assert r.ivr_exit is m.IvrExit.QUEUED and r.ivr_path[1] == {"node": "menu", "digit": "2"}
    assert r.status is m.CallStatus.ENDED and r.end_reason == "caller_hangup" and r.ended_at == at(245)
    t = _ticket(db, tid)
    assert t.status is m.TicketStatus.PENDING and t.customer_id == cid and t.service == "cards"
    await rec.wrapped_up("call-1", "solved", "card blocked", at=at(275))
    t = _ticket(db, tid)
    r = _rec(db, "call-1")
    assert t.status is m.TicketStatus.CLOSED and t.disposition == "solved" and t.notes == "card blocked"
    assert r.disposition == "solved" and r.wrapup_seconds == 30.0
    events = db.run_sync(lambda s: [e.event for e in s.scalars(select(m.QueueEvent).order_by(m.QueueEvent.id))])
    assert events == ["queued", "answered", "transferred"]
    history = db.run_sync(lambda s: s.scalars(select(m.Interaction)).all())
    assert len(history) == 1 and history[0].call_id == "call-1" and "cards" in history[0].summary


async def test_repeat_caller_linked_to_open_ticket_on_same_service(db: Database) -> None:
    cid = _customer(db)
    rec = CallRecorder(db)
    first = await rec.call_arrived("c1", ani="+39333", dnis="1", at=at(0))
    await rec.identified("c1", cid, "ani", at=at(1))
    await rec.queued("c1", "q", service="cards", at=at(5))
    await rec.answered("c1", "a1", at=at(6))
    await rec.ended("c1", "agent_hangup", at=at(60))  # ticket left pending, no wrap-up yet
    second = await rec.call_arrived("c2", ani="+39333", dnis="1", at=at(3600))
    await rec.identified("c2", cid, "ani", at=at(3601))
    link = await rec.service_selected("c2", "cards", at=at(3610))
    assert link.ticket_id == second and link.linked_ticket_id == first
    assert _ticket(db, second).linked_ticket_id == first
    third = await rec.call_arrived("c3", ani="+39333", dnis="1", at=at(7200))
    await rec.service_selected("c3", "trading", at=at(7201))
    link3 = await rec.identified("c3", cid, "pin", at=at(7205))
    assert link3.ticket_id == third and link3.linked_ticket_id is None


async def test_abandoned_and_self_service_calls_close_their_tickets(db: Database) -> None:
    rec = CallRecorder(db)
    t_ab = await rec.call_arrived("ab", ani=None, dnis="1", at=at(0))
    await rec.queued("ab", "q", service="accounts", at=at(10))
    await rec.ended("ab", "caller_hangup", at=at(50))
    r = _rec(db, "ab")
    assert r.wait_seconds == 40.0 and r.answered_at is None and r.disposition == "abandoned"
    assert _ticket(db, t_ab).status is m.TicketStatus.CLOSED
    t_ss = await rec.call_arrived("ss", ani=None, dnis="1", at=at(0))
    await rec.ivr_finished("ss", [], "completed", at=at(40))
    await rec.ended("ss", "flow_hangup", at=at(41))
    assert _ticket(db, t_ss).disposition == "self_service"
    await rec.ended("ss", "again", at=at(99))  # a second end is ignored
    assert _rec(db, "ss").end_reason == "flow_hangup"


async def test_unknown_or_duplicate_calls_are_refused(db: Database) -> None:
    rec = CallRecorder(db)
    with pytest.raises(CallRecordError, match="call_arrived must come first"):
        await rec.answered("nope", "a1")
    await rec.call_arrived("dup", ani=None, dnis=None)
    with pytest.raises(CallRecordError, match="already has a record"):
        await rec.call_arrived("dup", ani=None, dnis=None)


async def test_close_stale_calls_after_a_crash(db: Database, db_url: str) -> None:
    rec = CallRecorder(db)
    await rec.call_arrived("live-1", ani="+39", dnis="1", at=at(0))
    await rec.queued("live-1", "q", at=at(5))
    await rec.answered("live-1", "a1", at=at(8))
    await rec.call_arrived("live-2", ani="+39", dnis="1", at=at(1))
    await rec.call_arrived("done", ani="+39", dnis="1", at=at(0))
    await rec.ended("done", "caller_hangup", at=at(3))
    db.close()  # the process dies; a new one opens the same database
    db2 = Database.from_url(db_url)
    try:
        closed = await CallRecorder(db2).close_stale_calls(at=at(600))
        assert closed == 2
        r1 = db2.run_sync(lambda s: s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == "live-1")).one())
        assert r1.status is m.CallStatus.ENDED and r1.end_reason == "server_restart" and r1.talk_seconds == 592.0
        r3 = db2.run_sync(lambda s: s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == "done")).one())
        assert r3.end_reason == "caller_hangup"
        assert await CallRecorder(db2).close_stale_calls() == 0
    finally:
        db2.close()
