"""``run_survey`` over a scripted stand-in of the call's media (the SIP/RTP path is covered by
tests/e2e/test_post_call_survey.py): barge-in, answers handed out as given, hang-ups."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ivr.calls import CallerHungUp
from ivr.media.collect import CollectReason, CollectResult
from ivr.media.session import PlayEnd, PlayResult
from ivr.survey.runner import run_survey
from ivr.survey.script import load_survey_scripts
from tests.conftest import REPO

CSAT = load_survey_scripts(REPO / "config" / "surveys")["csat"]


class Prompts:
    def __init__(self):
        self.rendered = []

    async def render_async(self, ref, variables=None):
        self.rendered.append(ref)
        return np.full(80, len(self.rendered), dtype=np.int16)


@dataclass
class Session:
    digits: list[str] = field(default_factory=list)

    def clear_digits(self):
        self.digits.clear()


@dataclass
class Leg:
    session: Session


class ScriptedCall:
    """Plays record what was played; each collect takes the next scripted result. ``"hangup"`` raises
    CallerHungUp there, a digit prefixed with ``>`` barges in on the prompt before the collection."""

    def __init__(self, steps):
        self.id = "call-1"
        self.leg = Leg(Session(["7", "7"]))        # typed to the agent: must not answer question 1
        self.steps = list(steps)
        self.played: list[tuple[int, bool]] = []

    async def play(self, pcm, barge_in=False):
        if self.steps and self.steps[0] == "hangup_in_play":
            raise CallerHungUp("gone")
        self.played.append((int(pcm[0]), barge_in))
        if barge_in and self.steps and str(self.steps[0]).startswith(">"):
            return PlayResult(PlayEnd.INTERRUPTED, self.steps[0][1:], 0)
        return PlayResult(PlayEnd.COMPLETED)

    async def collect_digits(self, max_digits, first_timeout, inter_digit_timeout, terminator="#"):
        assert max_digits == 1 and terminator is None and first_timeout == 8.0
        assert self.leg.session.digits == []
        step = self.steps.pop(0)
        if step == "hangup":
            raise CallerHungUp("gone")
        if step == "closed":
            return CollectResult("", CollectReason.CLOSED)
        if step == "":
            return CollectResult("", CollectReason.TIMEOUT)
        return CollectResult(step.lstrip(">"), CollectReason.MAX)


async def test_completed_with_barge_in_and_answers_recorded_as_given():
    prompts, got = Prompts(), []

    async def on_answer(qid, digit, value):
        got.append((qid, digit, value))

    call = ScriptedCall([">5", "1", "3"])
    out = await run_survey(call, CSAT, prompts, language="en", on_answer=on_answer)
    assert out.status == "completed" and out.answers == {"q1": 5, "q2": True, "q3": "competence"}
    assert got == [("q1", "5", 5), ("q2", "1", True), ("q3", "3", "competence")]
    # intro interrupted by the first digit: question 1 is not played, question 2 and 3 are, then the closing
    texts = [r.text for r in prompts.rendered]
    assert texts == [CSAT.intro.ref("en").text, CSAT.question("q2").text.ref("en").text,
                     CSAT.question("q3").text.ref("en").text, CSAT.closing.ref("en").text]
    assert all(r.language == "en" for r in prompts.rendered)
    assert call.played[-1][1] is False          # the closing is not cut by a key


async def test_hangup_during_a_question_is_partial_with_the_answers_so_far():
    got = []

    async def on_answer(qid, digit, value):
        got.append(qid)

    out = await run_survey(ScriptedCall(["4", "hangup"]), CSAT, Prompts(), on_answer=on_answer)
    assert out.hung_up and out.status == "partial" and out.answers == {"q1": 4} and got == ["q1"]
    out = await run_survey(ScriptedCall(["closed"]), CSAT, Prompts())
    assert out.hung_up and out.status == "no_answer"
    out = await run_survey(ScriptedCall(["hangup_in_play"]), CSAT, Prompts())
    assert out.hung_up and out.status == "no_answer"


async def test_opt_out_and_a_failing_store_do_not_stop_the_survey():
    async def on_answer(qid, digit, value):
        raise RuntimeError("database down")

    prompts = Prompts()
    out = await run_survey(ScriptedCall(["0", "2", "9"]), CSAT, prompts, on_answer=on_answer)
    assert out.status == "opted_out" and out.answers == {"q1": 2}
    assert prompts.rendered[-1].text == CSAT.opt_out_prompt.ref("it").text
    assert CSAT.invalid_prompt.ref("it").text in [r.text for r in prompts.rendered]
