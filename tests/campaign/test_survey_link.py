"""``SurveyStoreRecorder`` (outbound answers into the survey store) on SQLite and PostgreSQL: the response
carries the campaign, customer, number and the contact's language; the outcome's status ends it, and a survey
cut without an outcome ends partial or no_answer by what was answered."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from crm_bridge import campaign_store as cs
from crm_bridge import models as m
from crm_bridge import surveys
from crm_bridge.campaign_models import ContactOptOut
from crm_bridge.survey_models import SurveyAnswer, SurveyResponse
from ivr.campaign.rules import CampaignRules
from ivr.campaign.survey_link import SurveyStoreRecorder, status_of
from ivr.survey.interpreter import SurveyOutcome as Outcome

T0 = 1_742_806_800.0


def _campaign(db) -> tuple[int, int]:
    def add(s):  # type: ignore[no-untyped-def]
        c = m.Customer(name="Anna Verdi", language="en")
        s.add(c)
        s.flush()
        s.add(m.PhoneNumber(e164="+393470000001", customer_id=c.id))
        s.flush()
        cid, _ = cs.create_campaign(s, name="CSAT", survey="csat", rules=CampaignRules(), start=True, now=T0,
                                    contacts=[cs.ContactIn(customer_id=c.id), cs.ContactIn(phone="+390212345678")])
        return cid, c.id
    return db.run_sync(add)


def _response(db, rid: int) -> tuple[SurveyResponse, dict[str, tuple[str, Any]]]:
    def read(s):  # type: ignore[no-untyped-def]
        r = s.get(SurveyResponse, rid)
        answers = {a.question_id: (a.digit, a.value_int if a.value_int is not None else a.value_text)
                   for a in s.scalars(select(SurveyAnswer).where(SurveyAnswer.response_id == rid))}
        return r, answers
    return db.run_sync(read)


async def test_outbound_survey_recorded_with_campaign_customer_and_language(db) -> None:
    campaign, customer = _campaign(db)
    rec = SurveyStoreRecorder(db, clock=lambda: T0 + 60)
    rid = await rec.begin(campaign_id=campaign, survey="csat", customer_id=customer, phone="+393470000001",
                          call_id="camp-1-1")
    await rec.answer(rid, "q1", "4", 4)
    await rec.answer(rid, "q2", "2", False)
    await rec.end(rid, Outcome({"q1": 4, "q2": False}, completed=True))
    r, answers = _response(db, rid)
    assert (r.channel.value, r.campaign_id, r.customer_id, r.phone, r.call_id, r.language, r.status.value) == \
        ("outbound", campaign, customer, "+393470000001", "camp-1-1", "en", "completed")
    assert answers == {"q1": ("4", 4), "q2": ("2", 0)}
    results = db.read_sync(lambda s: surveys.survey_results(s, "csat", channel="outbound", campaign_id=campaign,
                                                            csat_question="q1"))
    assert results["completed"] == 1 and results["csat"]["satisfied"] == 1


async def test_cut_surveys_end_partial_or_no_answer_and_opt_out_lists_the_number(db) -> None:
    campaign, _ = _campaign(db)
    rec = SurveyStoreRecorder(db, clock=lambda: T0)
    cut = await rec.begin(campaign_id=campaign, survey="csat", customer_id=None, phone="+390212345678",
                          call_id="camp-1-2")
    await rec.answer(cut, "q1", "3", 3)
    await rec.end(cut, None)
    assert _response(db, cut)[0].status.value == "partial"
    assert _response(db, cut)[0].language == "it"                  # the campaign's language
    silent = await rec.begin(campaign_id=campaign, survey="csat", customer_id=None, phone="+390212345678",
                             call_id="camp-1-3")
    await rec.end(silent, None)
    assert _response(db, silent)[0].status.value == "no_answer"
    out = await rec.begin(campaign_id=campaign, survey="csat", customer_id=None, phone="+390212345678",
                          call_id="camp-1-4")
    await rec.answer(out, "q1", "9", None)
    await rec.end(out, Outcome({}, opted_out=True))
    assert _response(db, out)[0].status.value == "opted_out"
    assert db.read_sync(lambda s: [(o.customer_id, o.e164) for o in s.scalars(select(ContactOptOut))]) == \
        [(None, "+390212345678")]
    await rec.answer(None, "q1", "1", 1)                           # begin failed: nothing to write to
    await rec.end(None, None)


def test_status_of_outcomes_without_a_status() -> None:
    class Bare:
        def __init__(self, **kw: bool) -> None:
            self.__dict__.update(kw)
    assert status_of(Bare(opted_out=True, completed=False), True) == "opted_out"
    assert status_of(Bare(opted_out=False, completed=True), True) == "completed"
    assert status_of(Bare(opted_out=False, completed=False), True) == "partial"
    assert status_of(None, False) == "no_answer"
    assert status_of(Outcome({"q1": 1}), True) == "partial"
