"""KPIs on hand-made call records; every expected value is worked out by hand in the comments."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from crm_bridge import models as m
from crm_bridge.db import Database
from crm_bridge.kpi import compute_kpis, kpi_report

D = datetime(2025, 3, 3, tzinfo=timezone.utc)  # Europe/Rome is UTC+1 on this day
START, END = D, D + timedelta(days=1)


def call(call_id: str, hour: float, *, customer: int | None = None, service: str | None = None,
         queue: str | None = None, line: str = "retail", by: str = "none", decision: str | None = None,
         ivr: float | None = None, exit: str | None = None, wait: float | None = None, answered: bool = False,
         talk: float | None = None, wrap: float | None = None, transfers: int = 0, day: int = 0) -> m.CallRecord:
    arrived = D + timedelta(days=day, hours=hour)
    queued = arrived + timedelta(seconds=ivr or 0) if queue else None
    answered_at = queued + timedelta(seconds=wait or 0) if answered and queued else None
    ended = (answered_at + timedelta(seconds=talk or 0) if answered_at else
             (queued + timedelta(seconds=wait or 0) if queued else arrived + timedelta(seconds=ivr or 0)))
    return m.CallRecord(call_id=call_id, arrived_at=arrived, customer_id=customer, service=service, queue=queue,
                        line=line, identified_by=m.IdentifiedBy(by), verification_decision=decision,
                        ivr_seconds=ivr, ivr_exit=m.IvrExit(exit) if exit else None, queued_at=queued,
                        answered_at=answered_at, ended_at=ended, wait_seconds=wait, talk_seconds=talk,
                        wrapup_seconds=wrap, transfers=transfers, status=m.CallStatus.ENDED,
                        agent_id="a1" if answered else None)


def seed(db: Database) -> None:
    def add(s):  # type: ignore[no-untyped-def]
        for i in (1, 2, 3):
            s.add(m.Customer(id=i, name=f"C{i}"))
        s.flush()
        s.add_all([
            call("A", 8, customer=1, service="cards", queue="cards", by="ani", decision="accept", ivr=30,
                 exit="queued", wait=10, answered=True, talk=100, wrap=20),
            call("B", 9, customer=2, service="cards", queue="cards", by="pin", decision="reject", ivr=40,
                 exit="queued", wait=30, answered=True, talk=200, transfers=1),
            call("C", 10, queue="cards", ivr=20, exit="queued", wait=50),            # abandoned after T
            call("D", 11, queue="cards", wait=5),                                      # abandoned before T
            call("E", 12, customer=3, service="accounts", queue="accounts", line="business", by="ani",
                 decision="accept", ivr=10, exit="queued", wait=20, answered=True, talk=300, wrap=60),
            call("F", 13, customer=1, service="balance", by="ani", ivr=60, exit="completed"),
            call("G", 23.5, ivr=15, exit="hung_up"),                                   # 00:30 on the 4th in Rome
            call("H", 8, customer=1, service="cards", queue="cards", by="ani", wait=3, answered=True, talk=50,
                 day=2),                                                               # repeat of A after 2 days
            call("I", 12, customer=3, service="accounts", queue="accounts", by="ani", wait=3, answered=True,
                 talk=50, day=10),                                                     # E's repeat, too late
        ])
    db.run_sync(add)


async def test_kpis_for_the_day(db: Database) -> None:
    seed(db)
    r = (await db.run(lambda s: kpi_report(s, START, END)))[None]
    assert (r.calls, r.offered, r.answered, r.abandoned, r.short_abandoned) == (7, 5, 3, 2, 0)
    # within T=20: A (10 s) and E (20 s); abandoned after T: C (50 s); SL = 2 / (3 + 1)
    assert (r.answered_within_t, r.abandoned_after_t, r.service_level) == (2, 1, 0.5)
    assert r.sl_offered == pytest.approx(2 / 5)
    assert r.asa == pytest.approx((10 + 30 + 20) / 3)
    assert r.abandon_rate == pytest.approx(2 / 5)
    assert r.aht == pytest.approx(((100 + 20) + (200 + 0) + (300 + 60)) / 3)
    # IVR: A 30, B 40, C 20, E 10, F 60, G 15; only F completed in self-service, G hung up
    assert (r.ivr_calls, r.contained, r.ivr_hangups) == (6, 1, 1)
    assert r.ivr_time == pytest.approx(175 / 6) and r.containment == pytest.approx(1 / 6)
    assert (r.transferred_calls, r.transfers, r.transfer_rate) == (1, 1, pytest.approx(1 / 3))
    # FCR eligible: A, B, E, F; A has a repeat (H, 2 days later on cards); E's repeat (I) is after 10 days
    assert (r.fcr_eligible, r.fcr_resolved, r.fcr) == (4, 3, 0.75)
    assert (r.identified, r.identification_rate) == (4, pytest.approx(4 / 7))
    assert (r.verification_attempted, r.verified) == (3, 2)
    assert r.verification_rate == pytest.approx(2 / 3) and r.verification_attempt_rate == pytest.approx(3 / 4)


async def test_short_abandons_and_fcr_window(db: Database) -> None:
    seed(db)
    r = (await db.run(lambda s: kpi_report(s, START, END, short_abandon=10, fcr_days=1)))[None]
    # D (5 s) becomes a short abandon: offered 4, abandoned 1; SL unchanged
    assert (r.offered, r.abandoned, r.short_abandoned, r.service_level) == (4, 1, 1, 0.5)
    assert r.abandon_rate == pytest.approx(1 / 4) and r.sl_offered == pytest.approx(2 / 4)
    # with a 1-day window, H (2 days after A) is no longer a repeat
    assert (r.fcr_eligible, r.fcr_resolved) == (4, 4)


async def test_kpis_per_queue_line_and_day(db: Database) -> None:
    seed(db)
    per_queue = await db.run(lambda s: kpi_report(s, START, END, group_by="queue"))
    assert set(per_queue) == {"cards", "accounts", None}
    cards = per_queue["cards"]
    # cards: A (10 s), B (30 s) answered, C abandoned after T, D before: SL = 1 / (2 + 1)
    assert (cards.calls, cards.answered, cards.abandoned) == (4, 2, 2)
    assert cards.service_level == pytest.approx(1 / 3) and cards.asa == 20.0
    assert (cards.fcr_eligible, cards.fcr_resolved) == (2, 1)
    assert per_queue["accounts"].service_level == 1.0 and per_queue["accounts"].aht == 360.0
    assert per_queue[None].offered == 0 and per_queue[None].service_level is None
    per_line = await db.run(lambda s: kpi_report(s, START, END, group_by="line"))
    assert per_line["business"].calls == 1 and per_line["retail"].calls == 6
    per_day = await db.run(lambda s: kpi_report(s, START, END, group_by="day"))
    assert {k: v.calls for k, v in per_day.items()} == {"2025-03-03": 6, "2025-03-04": 1}
    only_cards = (await db.run(lambda s: kpi_report(s, START, END, queue="cards")))[None]
    assert only_cards == cards


def test_empty_population_gives_none_not_zero() -> None:
    r = compute_kpis([])
    assert r.calls == 0 and r.service_level is None and r.asa is None and r.fcr is None


async def test_unknown_grouping_is_refused(db: Database) -> None:
    seed(db)
    with pytest.raises(ValueError, match="group_by"):
        await db.run(lambda s: kpi_report(s, START, END, group_by="week"))  # type: ignore[arg-type]
