"""The sans-IO survey interpreter: what is played, collected and recorded for each thing a caller can do."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.survey.interpreter import (Answer, Collect, Digits, Done, Hangup, Play, SurveyOutcome, SurveyRun,
                                    SurveyStateError, Timeout)
from ivr.survey.script import load_survey_scripts
from tests.conftest import REPO

CSAT = load_survey_scripts(REPO / "config" / "surveys")["csat"]


def texts(actions) -> list[str]:
    return [a.prompt.text for a in actions if isinstance(a, Play)]


def answers(actions) -> list[tuple[str, str, object]]:
    return [(a.question_id, a.digit, a.value) for a in actions if isinstance(a, Answer)]


def done(actions) -> SurveyOutcome | None:
    ends = [a.outcome for a in actions if isinstance(a, Done)]
    assert len(ends) <= 1 and (not ends or isinstance(actions[-1], Done))
    return ends[0] if ends else None


def q(qid: str, lang: str = "it") -> str:
    return CSAT.question(qid).text.ref(lang).text


def test_start_plays_intro_then_asks_the_first_question_in_the_callers_language():
    run = SurveyRun(CSAT, "en")
    acts = run.start()
    assert texts(acts) == [CSAT.intro.ref("en").text, q("q1", "en")]
    assert all(a.prompt.language == "en" and a.barge_in for a in acts if isinstance(a, Play))
    assert acts[-1] == Collect(8.0, 1)
    assert run.current_question == "q1"
    with pytest.raises(SurveyStateError):
        run.start()


def test_unknown_language_falls_back_to_the_default():
    run = SurveyRun(CSAT, "fr")
    assert run.language == "it"
    assert texts(run.start())[-1] == q("q1")


def test_completed_survey_records_each_answer_with_its_value():
    run = SurveyRun(CSAT, "it")
    run.start()
    a1 = run.handle(Digits("4"))
    assert answers(a1) == [("q1", "4", 4)] and texts(a1) == [q("q2")] and isinstance(a1[-1], Collect)
    a2 = run.handle(Digits("2"))
    assert answers(a2) == [("q2", "2", False)] and texts(a2) == [q("q3")]
    a3 = run.handle(Digits("2"))
    assert answers(a3) == [("q3", "2", "courtesy")]
    assert texts(a3) == [CSAT.closing.ref("it").text]
    assert [a for a in a3 if isinstance(a, Play)][0].barge_in is False
    out = done(a3)
    assert out.answers == {"q1": 4, "q2": False, "q3": "courtesy"}
    assert out.completed and not out.hung_up and not out.opted_out and out.status == "completed"
    assert run.finished and run.handle(Digits("1")) == [] and run.handle(Hangup()) == []


def test_invalid_digit_says_not_valid_and_asks_again_then_accepts():
    run = SurveyRun(CSAT, "it")
    run.start()
    acts = run.handle(Digits("7"))           # 1..5 only
    assert answers(acts) == [] and texts(acts) == [CSAT.invalid_prompt.ref("it").text, q("q1")]
    assert isinstance(acts[-1], Collect)
    acts = run.handle(Digits("5"))
    assert answers(acts) == [("q1", "5", 5)]


def test_no_input_says_so_and_asks_again():
    run = SurveyRun(CSAT, "en")
    run.start()
    acts = run.handle(Timeout())
    assert texts(acts) == [CSAT.no_input_prompt.ref("en").text, q("q1", "en")]
    assert run.handle(Digits(""))[0].prompt.text == CSAT.no_input_prompt.ref("en").text   # empty digits = silence


def test_wrong_digits_after_the_last_retry_skip_the_question():
    run = SurveyRun(CSAT, "it")
    run.start()
    retries = CSAT.question("q1").retries
    for _ in range(retries):
        assert answers(run.handle(Digits("0"))) == [] and run.current_question == "q1"
    acts = run.handle(Digits("#"))
    assert texts(acts) == [q("q2")] and run.current_question == "q2"
    run.handle(Digits("1"))
    out = done(run.handle(Digits("3")))
    assert out.answers == {"q2": True, "q3": "competence"} and out.completed


def test_silence_after_the_last_retry_ends_the_survey_with_the_closing():
    run = SurveyRun(CSAT, "it")
    run.start()
    run.handle(Digits("3"))
    for _ in range(CSAT.question("q2").retries):
        assert done(run.handle(Timeout())) is None
    acts = run.handle(Timeout())
    assert texts(acts) == [CSAT.closing.ref("it").text]
    out = done(acts)
    assert out.answers == {"q1": 3} and not out.completed and not out.hung_up and out.status == "partial"


def test_silence_from_the_start_is_no_answer():
    run = SurveyRun(CSAT, "it")
    run.start()
    out = None
    for _ in range(CSAT.question("q1").retries + 1):
        out = done(run.handle(Timeout()))
    assert out is not None and out.answers == {} and out.status == "no_answer"


def test_opt_out_digit_confirms_and_ends_as_opted_out():
    run = SurveyRun(CSAT, "it")
    run.start()
    run.handle(Digits("5"))
    acts = run.handle(Digits("9"))
    assert answers(acts) == [] and texts(acts) == [CSAT.opt_out_prompt.ref("it").text]
    out = done(acts)
    assert out.opted_out and out.status == "opted_out" and out.answers == {"q1": 5}


def test_hangup_mid_way_keeps_the_answers_so_far():
    run = SurveyRun(CSAT, "it")
    run.start()
    run.handle(Digits("2"))
    run.handle(Digits("1"))
    acts = run.handle(Hangup())
    assert acts == [Done(SurveyOutcome({"q1": 2, "q2": True}, False, False, True))]
    assert acts[0].outcome.status == "partial"


def test_events_before_start_are_refused():
    with pytest.raises(SurveyStateError):
        SurveyRun(CSAT).handle(Digits("1"))


EVENTS = st.one_of(st.sampled_from("0123456789*#").map(Digits), st.just(Timeout()), st.just(Hangup()))


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=40), st.sampled_from(["it", "en", "de"]))
def test_any_event_sequence_ends_consistently(events, language):
    """Whatever the caller does: every batch asks for exactly one digit or ends, answers are valid options of
    the question asked, recorded answers equal the outcome's, and the survey ends within a bounded number of
    events (every question has at most 1 + retries tries)."""
    run = SurveyRun(CSAT, language)
    acts = run.start()
    recorded: dict[str, object] = {}
    outcome = None
    bound = sum(qq.retries + 1 for qq in CSAT.questions)
    for n, ev in enumerate(events):
        collects = [a for a in acts if isinstance(a, Collect)]
        assert (len(collects) == 1 and acts[-1] is collects[0]) != (done(acts) is not None)
        asked = run.current_question
        acts = run.handle(ev)
        for qid, digit, value in answers(acts):
            assert qid == asked and CSAT.question(qid).options[digit].value == value
            recorded[qid] = value
        outcome = done(acts)
        if outcome is not None:
            break
        assert n < bound
    if outcome is None:
        assert not run.finished
        return
    assert run.finished and outcome.answers == recorded
    assert outcome.status in {"completed", "partial", "no_answer", "opted_out"}
    assert (outcome.status == "no_answer") == (not recorded and not outcome.opted_out and not outcome.completed)
    assert run.handle(Timeout()) == []
