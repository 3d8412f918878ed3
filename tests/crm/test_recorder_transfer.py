"""A transferred call's ticket: the first agent's wrap-up adds their note but leaves the ticket open for the agent
who took the call, whose wrap-up closes it with both notes; the record counts the transfer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from crm_bridge import models as m
from crm_bridge.db import Database
from crm_bridge.recorder import CallRecorder

T0 = datetime(2025, 3, 3, 10, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_first_agents_wrap_up_does_not_close_the_ticket_of_a_transferred_call(db: Database) -> None:
    cid = db.run_sync(lambda s: (s.add(c := m.Customer(name="Marco Rossi")), s.flush(), c.id)[2])
    rec = CallRecorder(db)
    tid = await rec.call_arrived("x-1", ani="+393331234567", dnis="800100", line="retail", at=at(0))
    await rec.identified("x-1", cid, "ani", at=at(2))
    await rec.queued("x-1", "retail_accounts", service="accounts", at=at(10))
    await rec.answered("x-1", "2001", at=at(20))
    await rec.transferred("x-1", "queue:general", at=at(60))
    await rec.queued("x-1", "general", at=at(60))
    await rec.wrapped_up("x-1", "transferred", "asks about a mortgage", at=at(70), agent_id="2001")
    await rec.answered("x-1", "2002", at=at(75))
    # 2001 wraps up after 2002 took the call too: still only a note
    await rec.wrapped_up("x-1", "resolved", "second thoughts", at=at(80), agent_id="2001")
    ticket = db.run_sync(lambda s: s.get(m.Ticket, tid))
    assert ticket.status is not m.TicketStatus.CLOSED and ticket.disposition is None
    assert "[2001, transferred] asks about a mortgage" in ticket.notes
    await rec.ended("x-1", "agent_hangup", at=at(200))
    await rec.wrapped_up("x-1", "resolved", "mortgage appointment booked", at=at(230), agent_id="2002")
    r = db.run_sync(lambda s: s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == "x-1")).one())
    assert (r.transfers, r.agent_id, r.queue, r.disposition) == (1, "2002", "general", "resolved")
    assert r.wait_seconds == 10.0                                  # the first answer counts for the wait
    ticket = db.run_sync(lambda s: s.get(m.Ticket, tid))
    assert ticket.status is m.TicketStatus.CLOSED and ticket.disposition == "resolved"
    assert ticket.notes.index("asks about a mortgage") < ticket.notes.index("mortgage appointment booked")


async def test_wrap_up_without_an_agent_id_closes_as_before(db: Database) -> None:
    rec = CallRecorder(db)
    tid = await rec.call_arrived("x-2", ani=None, dnis="800100", at=at(0))
    await rec.service_selected("x-2", "cards", at=at(5))
    await rec.queued("x-2", "cards", at=at(6))
    await rec.answered("x-2", "2001", at=at(8))
    await rec.ended("x-2", "caller_hangup", at=at(30))
    await rec.wrapped_up("x-2", "resolved", "ok", at=at(40))
    tid = db.run_sync(lambda s: s.scalars(select(m.CallRecord.ticket_id).where(m.CallRecord.call_id == "x-2")).one())
    ticket = db.run_sync(lambda s: s.get(m.Ticket, tid))
    assert ticket.status is m.TicketStatus.CLOSED and ticket.notes == "ok"
