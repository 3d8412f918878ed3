"""The survey store on SQLite and PostgreSQL: responses linked to the call record and ticket, answers replaced
when given again, outcomes, the opt-out that reaches the do-not-call list, and the results (distribution,
response rate, CSAT by agent and queue, CSV)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from crm_bridge import campaign_store as cs
from crm_bridge import models as m
from crm_bridge import surveys
from crm_bridge.campaign_models import ContactOptOut
from crm_bridge.recorder import CallRecorder
from crm_bridge.survey_models import SurveyAnswer, SurveyChannel, SurveyResponse, SurveyStatus
from crm_bridge.surveys import SurveyError, SurveyStore
from ivr.campaign.rules import CampaignRules

T0 = 1_742_806_800.0          # Monday 2025-03-24 09:00 UTC


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _customer(db, name: str = "Giulia Bianchi", phone: str = "+393471112233") -> int:
    def add(s):  # type: ignore[no-untyped-def]
        c = m.Customer(name=name)
        s.add(c)
        s.flush()
        s.add(m.PhoneNumber(e164=phone, customer_id=c.id))
        return c.id
    return db.run_sync(add)


async def _call(db, call_id: str, customer_id: int, *, agent: str, queue: str, service: str = "cards",
                ani: str = "+393471112233") -> int:
    rec = CallRecorder(db)
    ticket = await rec.call_arrived(call_id, ani=ani, dnis="800100100", line="retail")
    await rec.identified(call_id, customer_id, "ani")
    await rec.service_selected(call_id, service)
    await rec.queued(call_id, queue, service=service)
    await rec.answered(call_id, agent)
    await rec.ended(call_id, "agent_bye")
    return ticket


async def test_begin_links_call_record_and_ticket_answers_replace_and_end(db) -> None:
    cust = _customer(db)
    ticket = await _call(db, "call-1", cust, agent="2001", queue="cards")
    clock = Clock()
    store = SurveyStore(db, clock=clock)
    rid = await store.begin(survey="csat", channel="post_call", language="en", call_id="call-1")
    r = db.run_sync(lambda s: s.get(SurveyResponse, rid))
    record_id = db.read_sync(lambda s: s.scalar(select(m.CallRecord.id).where(m.CallRecord.call_id == "call-1")))
    assert r.call_record_id == record_id and r.ticket_id == ticket and ticket is not None
    assert (r.customer_id, r.agent_id, r.queue, r.service, r.line) == (cust, "2001", "cards", "cards", "retail")
    assert r.phone == "+393471112233" and r.status is SurveyStatus.STARTED and r.channel is SurveyChannel.POST_CALL
    assert r.language == "en" and r.started_at == datetime.fromtimestamp(T0, timezone.utc) and r.ended_at is None

    clock.t += 5
    await store.answer(rid, "q1", "2", 2)
    clock.t += 5
    await store.answer(rid, "q2", "1", True)
    clock.t += 5
    await store.answer(rid, "q1", "5", 5)           # asked again: replaces the first answer
    await store.answer(rid, "q3", "2", "courtesy")
    answers = db.read_sync(lambda s: {a.question_id: (a.digit, a.value_int, a.value_text, a.answered_at.timestamp())
                                      for a in s.scalars(select(SurveyAnswer)
                                                         .where(SurveyAnswer.response_id == rid))})
    assert answers == {"q1": ("5", 5, None, T0 + 15), "q2": ("1", 1, "yes", T0 + 10),
                       "q3": ("2", None, "courtesy", T0 + 15)}
    clock.t += 3
    await store.end(rid, "completed")
    r = db.run_sync(lambda s: s.get(SurveyResponse, rid))
    assert r.status is SurveyStatus.COMPLETED and r.ended_at.timestamp() == T0 + 18
    assert not await store.opted_out(cust, "+393471112233")


async def test_explicit_values_win_over_the_call_record_and_unknown_calls_link_nothing(db) -> None:
    cust = _customer(db)
    await _call(db, "call-2", cust, agent="2001", queue="cards")
    store = SurveyStore(db, clock=Clock())
    rid = await store.begin(survey="csat", channel="post_call", call_id="call-2", agent_id="2002", queue="loans")
    r = db.run_sync(lambda s: s.get(SurveyResponse, rid))
    assert (r.agent_id, r.queue, r.customer_id) == ("2002", "loans", cust)
    rid = await store.begin(survey="csat", channel="outbound", call_id="no-such-call", phone="+390212345678",
                            campaign_id=7)
    r = db.run_sync(lambda s: s.get(SurveyResponse, rid))
    assert (r.call_record_id, r.ticket_id, r.customer_id, r.campaign_id) == (None, None, None, 7)


async def test_bad_writes_say_what_is_wrong(db) -> None:
    store = SurveyStore(db, clock=Clock())
    with pytest.raises(SurveyError, match="channel 'sms'"):
        await store.begin(survey="csat", channel="sms")
    with pytest.raises(SurveyError, match="no survey response 999"):
        await store.answer(999, "q1", "1", 1)
    rid = await store.begin(survey="csat", channel="post_call", phone="sip:" + "7" * 100 + "@example.com",
                            queue="q" * 80)
    r = db.run_sync(lambda s: s.get(SurveyResponse, rid))
    assert len(r.phone) == 64 and len(r.queue) == 64            # kept, cut to the columns (PostgreSQL refuses)
    with pytest.raises(SurveyError, match="cannot end a survey"):
        await store.end(rid, "started")
    with pytest.raises(SurveyError, match="cannot end a survey"):
        await store.end(rid, "finished")


async def test_opt_out_reaches_the_do_not_call_list_once_and_campaigns_skip_the_customer(db) -> None:
    cust = _customer(db)
    other = _customer(db, "Marco Rossi", "+393479998877")
    cid, _ = db.run_sync(lambda s: cs.create_campaign(
        s, name="c", survey="csat", rules=CampaignRules(),
        contacts=[cs.ContactIn(customer_id=cust), cs.ContactIn(customer_id=other)], start=True, now=T0))
    await _call(db, "call-3", cust, agent="2001", queue="cards")
    store = SurveyStore(db, clock=Clock())
    assert not await store.opted_out(cust, None)
    rid = await store.begin(survey="csat", channel="post_call", call_id="call-3")
    await store.answer(rid, "q1", "9", None)
    await store.end(rid, "opted_out")
    rows = db.read_sync(lambda s: [(o.customer_id, o.e164, o.source) for o in s.scalars(select(ContactOptOut))])
    assert rows == [(cust, "+393471112233", "survey")]
    assert await store.opted_out(cust, None)
    assert await store.opted_out(None, "+39 347 111 2233")        # the number, written as a person would
    assert not await store.opted_out(other, "+393479998877")
    pending = db.read_sync(lambda s: cs.opted_out_pending(s, cid))
    contact = db.read_sync(lambda s: cs.contact_rows(s, cid))
    assert pending == [c["id"] for c in contact if c["customer_id"] == cust]

    rid2 = await store.begin(survey="csat", channel="outbound", customer_id=cust, phone="+393471112233")
    await store.end(rid2, "opted_out")                             # already listed: no second row
    assert db.read_sync(lambda s: len(s.scalars(select(ContactOptOut)).all())) == 1

    anonymous = await store.begin(survey="csat", channel="post_call", phone="anonymous")
    await store.end(anonymous, "opted_out")                         # nothing to list, nothing breaks
    assert db.read_sync(lambda s: len(s.scalars(select(ContactOptOut)).all())) == 1


# ------------------------------------------------------------------------------------------ results

DATA = [
    # (agent, queue, channel, campaign, answers {q: (digit, value)}, status, minutes after T0)
    ("2001", "cards", "post_call", None, {"q1": ("5", 5), "q2": ("1", True)}, "completed", 0),
    ("2001", "cards", "post_call", None, {"q1": ("4", 4), "q2": ("2", False)}, "completed", 10),
    ("2001", "loans", "post_call", None, {"q1": ("2", 2)}, "partial", 20),
    ("2002", "cards", "post_call", None, {"q1": ("3", 3), "q2": ("1", True)}, "completed", 30),
    ("2002", "loans", "post_call", None, {"q1": ("5", 5), "q2": ("1", True)}, "completed", 40),
    ("2002", "loans", "post_call", None, {}, "no_answer", 50),
    (None, None, "outbound", 3, {"q1": ("1", 1), "q2": ("2", False)}, "completed", 60),
    (None, None, "outbound", 3, {"q2": ("1", True)}, "opted_out", 70),
    (None, None, "outbound", 3, {}, "no_answer", 80),
    (None, None, "outbound", 4, {"q1": ("4", 4)}, "partial", 90),
]


async def _load(db) -> None:
    clock = Clock()
    store = SurveyStore(db, clock=clock)
    for agent, queue, channel, campaign, answers, status, minutes in DATA:
        clock.t = T0 + minutes * 60
        rid = await store.begin(survey="csat", channel=channel, agent_id=agent, queue=queue, campaign_id=campaign,
                                service="cards" if queue == "cards" else None, line="retail" if agent else None)
        for q, (digit, value) in answers.items():
            await store.answer(rid, q, digit, value)
        await store.end(rid, status)
    other = await store.begin(survey="nps", channel="post_call", agent_id="2001", queue="cards")
    await store.answer(other, "q1", "1", 1)


async def test_results_on_a_known_data_set(db) -> None:
    await _load(db)
    r = db.read_sync(lambda s: surveys.survey_results(s, "csat", csat_question="q1", csat_scale=(1, 5)))
    assert (r["offered"], r["answered"], r["completed"], r["partial"], r["no_answer"], r["opted_out"]) == \
        (10, 8, 5, 2, 2, 1)
    assert r["response_rate"] == 0.8 and r["completion_rate"] == 0.5 and r["in_progress"] == 0
    assert r["distribution"] == {"q1": {"1": 1, "2": 1, "3": 1, "4": 2, "5": 2},
                                 "q2": {"1": 4, "2": 2}}
    assert r["answers_by_question"] == {"q1": 7, "q2": 6}
    # q1 answered 7 times: 5,4,2,3,5,1,4 -> 4 satisfied (4-5), mean 24/7
    assert r["csat"] == {"responses": 7, "satisfied": 4, "csat": 57.1, "mean": 3.43}
    by = r["csat_by"]
    assert by["agent"] == {"2001": {"responses": 3, "satisfied": 2, "csat": 66.7, "mean": 3.67},
                           "2002": {"responses": 2, "satisfied": 1, "csat": 50.0, "mean": 4.0},
                           "(none)": {"responses": 2, "satisfied": 1, "csat": 50.0, "mean": 2.5}}
    assert by["queue"]["cards"] == {"responses": 3, "satisfied": 2, "csat": 66.7, "mean": 4.0}
    assert by["queue"]["loans"] == {"responses": 2, "satisfied": 1, "csat": 50.0, "mean": 3.5}
    assert by["service"]["cards"]["responses"] == 3 and by["line"]["retail"]["responses"] == 5
    assert by["channel"]["outbound"] == {"responses": 2, "satisfied": 1, "csat": 50.0, "mean": 2.5}

    camp = db.read_sync(lambda s: surveys.survey_results(s, "csat", campaign_id=3, csat_question="q1"))
    assert (camp["offered"], camp["answered"], camp["response_rate"]) == (3, 2, round(2 / 3, 4))
    assert camp["csat"] == {"responses": 1, "satisfied": 0, "csat": 0.0, "mean": 1.0}
    window = db.read_sync(lambda s: surveys.survey_results(s, "csat", since=T0 + 10 * 60, until=T0 + 40 * 60,
                                                           channel="post_call", csat_question="q1"))
    assert window["offered"] == 3 and window["csat"]["satisfied"] == 1        # 4, 2, 3
    plain = db.read_sync(lambda s: surveys.survey_results(s, "csat"))
    assert plain["csat"] is None and plain["distribution"] == r["distribution"]
    ten = db.read_sync(lambda s: surveys.survey_results(s, "csat", csat_question="q1", csat_scale=(1, 10)))
    assert ten["csat"]["satisfied"] == 0                # 9-10 is the top two on a 1-10 scale
    empty = db.read_sync(lambda s: surveys.survey_results(s, "nobody", csat_question="q1"))
    assert empty["offered"] == 0 and empty["response_rate"] is None and empty["csat"]["csat"] is None
    with pytest.raises(SurveyError, match="channel must be"):
        db.read_sync(lambda s: surveys.survey_results(s, "csat", channel="fax"))

    listed = db.read_sync(surveys.list_surveys)
    assert [(x["survey"], x["responses"], x["answered"], x["completed"]) for x in listed] == \
        [("csat", 10, 8, 5), ("nps", 1, 1, 0)]
    assert listed[0]["first_at"].startswith("2025-03-24T09:00")


async def test_csv_one_row_per_response_with_answers_as_columns(db) -> None:
    await _load(db)
    store = SurveyStore(db, clock=Clock(T0 + 100 * 60))
    rid = await store.begin(survey="csat", channel="post_call", queue="=HYPERLINK(\"x\")")
    await store.answer(rid, "q3", "1", "@speed")
    text = db.read_sync(lambda s: surveys.results_csv(s, "csat", questions=["q2", "q1"]))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == surveys.CSV_COLUMNS + ["q2", "q1", "q3"]
    assert len(rows) == 1 + 11
    first = dict(zip(rows[0], rows[1]))
    assert (first["status"], first["agent_id"], first["queue"], first["q1"], first["q2"], first["q3"]) == \
        ("completed", "2001", "cards", "5", "yes", "")
    assert first["started_at"].startswith("2025-03-24T09:00:00") and first["channel"] == "post_call"
    last = dict(zip(rows[0], rows[-1]))
    assert last["queue"] == "'=HYPERLINK(\"x\")" and last["q3"] == "'@speed"     # no formulas in a spreadsheet
    only = db.read_sync(lambda s: surveys.results_csv(s, "csat", campaign_id=3))
    assert len(list(csv.reader(io.StringIO(only)))) == 1 + 3
