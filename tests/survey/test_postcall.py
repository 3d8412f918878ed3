"""The post-call offer over the real survey store (SQLite): who is asked, what is stored, opt-outs respected.
The SIP/RTP path is in tests/e2e/test_post_call_survey.py."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm_bridge import models as m
from crm_bridge.db import Database
from crm_bridge.migrate import upgrade_database
from crm_bridge.metrics import REGISTRY
from crm_bridge.survey_models import SurveyResponse
from crm_bridge.surveys import SurveyStore
from ivr.survey.postcall import PostCallSurvey, ShareSampler
from ivr.survey.script import load_survey_scripts
from routing.config import SurveyOffer
from tests.conftest import REPO
from tests.survey.test_runner import Prompts, ScriptedCall

SCRIPTS = load_survey_scripts(REPO / "config" / "surveys")
PHONE = "+393471112233"


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    upgrade_database(url)
    database = Database.from_url(url, workers=2)
    yield database
    database.close()


class Caller(ScriptedCall):
    def __init__(self, steps, call_id: str):
        super().__init__(steps)
        self.id = call_id
        self.ani, self.dnis = PHONE, "800100"
        self.variables = {}


def customer(db) -> int:
    def add(s):
        c = m.Customer(name="Giulia Bianchi")
        s.add(c)
        s.flush()
        s.add(m.PhoneNumber(e164=PHONE, customer_id=c.id))
        return c.id
    return db.run_sync(add)


def responses(db) -> list[dict]:
    def read(s):
        return [{"survey": r.survey, "channel": r.channel.value, "status": r.status.value, "call_id": r.call_id,
                 "agent_id": r.agent_id, "queue": r.queue, "service": r.service, "line": r.line,
                 "customer_id": r.customer_id, "phone": r.phone, "language": r.language,
                 "answers": [(a.question_id, a.digit, a.value_int, a.value_text) for a in r.answers]}
                for r in s.scalars(select(SurveyResponse).order_by(SurveyResponse.id))]
    return db.read_sync(read)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"channel": "post_call"}) or 0.0


def post_call(db, share: float, offers=None) -> PostCallSurvey:
    offer = SurveyOffer(script="csat", share=share)
    return PostCallSurvey(offers or (lambda q, s: offer if q == "cards" else None), SCRIPTS.__getitem__, Prompts(),
                          SurveyStore(db))


def context(cid: int | None, queue: str = "cards", language: str = "en") -> dict:
    return {"queue": queue, "service": "card_limits", "customer_id": str(cid) if cid else None,
            "language": language}


async def test_offered_survey_is_stored_with_call_agent_queue_service_line_and_answers(db):
    cid = customer(db)
    offered, completed = metric("contact_surveys_offered_total"), metric("contact_surveys_completed_total")
    await post_call(db, 1.0)(Caller(["5", "1", "2"], "c1"), context(cid), "2001")
    [r] = responses(db)
    assert r == {"survey": "csat", "channel": "post_call", "status": "completed", "call_id": "c1", "agent_id": "2001",
                 "queue": "cards", "service": "card_limits", "line": "800100", "customer_id": cid, "phone": PHONE,
                 "language": "en", "answers": [("q1", "5", 5, None), ("q2", "1", 1, "yes"),
                                               ("q3", "2", None, "courtesy")]}
    assert metric("contact_surveys_offered_total") == offered + 1
    assert metric("contact_surveys_completed_total") == completed + 1


async def test_hang_up_mid_survey_is_partial(db):
    cid = customer(db)
    await post_call(db, 1.0)(Caller(["3", "hangup"], "c2"), context(cid, language="it"), "2002")
    [r] = responses(db)
    assert r["status"] == "partial" and r["answers"] == [("q1", "3", 3, None)] and r["language"] == "it"


async def test_share_zero_other_queue_or_unknown_script_offer_nothing(db):
    cid = customer(db)
    call = Caller(["5", "1", "2"], "c3")
    await post_call(db, 0.0)(call, context(cid), "2001")
    await post_call(db, 1.0)(call, context(cid, queue="general"), "2001")
    bad = SurveyOffer(script="nps", share=1.0)
    await post_call(db, 1.0, offers=lambda q, s: bad)(call, context(cid), "2001")
    assert responses(db) == [] and call.played == []


async def test_agent_handing_the_caller_to_the_survey_skips_the_share_and_falls_back_to_csat(db):
    cid = customer(db)
    survey = post_call(db, 0.0)
    await survey(Caller(["4", "2", "1"], "c7"), {**context(cid), "survey_requested": True}, "2001")
    await survey(Caller(["2", "1", "3"], "c8"), {**context(cid, queue="general"), "survey_requested": True}, "2003")
    got = [(r["call_id"], r["queue"], r["survey"], r["status"], r["agent_id"]) for r in responses(db)]
    assert got == [("c7", "cards", "csat", "completed", "2001"), ("c8", "general", "csat", "completed", "2003")]


async def test_opted_out_customer_is_never_offered_again(db):
    cid = customer(db)
    survey = post_call(db, 1.0)
    await survey(Caller(["9"], "c4"), context(cid), "2001")
    assert [r["status"] for r in responses(db)] == ["opted_out"]
    later = Caller(["5", "1", "2"], "c5")
    await survey(later, context(cid), "2001")
    assert len(responses(db)) == 1 and later.played == []
    anonymous = Caller(["5", "1", "2"], "c6")      # same number, customer not identified: the number counts
    await survey(anonymous, context(None), "2001")
    assert len(responses(db)) == 1 and anonymous.played == []


def test_sampler_is_deterministic_per_call_and_close_to_the_share():
    s = ShareSampler()
    ids = [f"call-{i}@10.0.0.1" for i in range(4000)]
    picks = [s.offered(c, 0.25) for c in ids]
    assert picks == [s.offered(c, 0.25) for c in ids]
    assert 0.22 < sum(picks) / len(ids) < 0.28
    assert all(s.offered(c, 1.0) for c in ids[:50]) and not any(s.offered(c, 0.0) for c in ids[:50])
    assert [ShareSampler("other").offered(c, 0.25) for c in ids] != picks
