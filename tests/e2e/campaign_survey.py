"""The survey side of the campaign e2e tests: the script the customers answer and where their answers are
read back.

TEMPORARY: until the survey package (``ivr.survey``, ``crm_bridge.surveys``, migration ``0003_surveys``) is
in the tree, a minimal keypad survey stands in for it (two questions, one digit each) and the answers are kept
in memory. Everything the campaign does (dialling, outcomes, retries, pacing, restart) is the real code either
way.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

SURVEY_NAME = "e2e_csat"
REAL = importlib.util.find_spec("ivr.survey") is not None

SURVEY_FILES: dict[str, str] = {}
_ANSWERS: dict[tuple[int, str], list[tuple[str, str]]] = {}


class _Outcome:
    def __init__(self, answers: dict[str, Any], completed: bool):
        self.answers, self.completed, self.opted_out, self.hung_up = answers, completed, False, not completed


async def _run_survey(call, script, prompts, *, language="it", on_answer=None):
    answers: dict[str, Any] = {}
    for qid in ("q1", "q2"):
        await call.play(np.zeros(2400, dtype=np.int16))
        res = await call.collect_digits(1, 10.0, 3.0, None)
        digits = getattr(res, "digits", "") or ""
        if not digits:
            return _Outcome(answers, False)
        answers[qid] = int(digits)
        if on_answer is not None:
            await on_answer(qid, digits, int(digits))
    return _Outcome(answers, True)


class _MemoryRecorder:
    def __init__(self, db, clock=None):
        self._open: dict[int, tuple[int, str]] = {}

    async def begin(self, *, campaign_id, survey, customer_id, phone, call_id):
        rid = len(self._open) + 1 + sum(1 for _ in _ANSWERS)
        self._open[rid] = (campaign_id, phone)
        _ANSWERS.setdefault((campaign_id, phone), [])
        return rid

    async def answer(self, response_id, question_id, digit, value):
        _ANSWERS[self._open[response_id]].append((question_id, digit))

    async def end(self, response_id, outcome):
        pass


def _install_stand_ins() -> None:
    pkg = types.ModuleType("ivr.survey")
    pkg.__path__ = []  # type: ignore[attr-defined]
    runner = types.ModuleType("ivr.survey.runner")
    runner.run_survey = _run_survey  # type: ignore[attr-defined]
    script = types.ModuleType("ivr.survey.script")
    script.load_survey_scripts = lambda directory: {SURVEY_NAME: object()}  # type: ignore[attr-defined]
    link = types.ModuleType("ivr.campaign.survey_link")
    link.SurveyStoreRecorder = _MemoryRecorder  # type: ignore[attr-defined]
    sys.modules.update({"ivr.survey": pkg, "ivr.survey.runner": runner, "ivr.survey.script": script,
                        "ivr.campaign.survey_link": link})


if not REAL:
    _install_stand_ins()


def prepare_database(path: Path) -> None:
    """A fresh database at the latest schema (campaign tables included: migration 0004_campaigns)."""
    from crm_bridge.migrate import upgrade_database

    upgrade_database(f"sqlite:///{path}")


def stored_answers(srv, campaign_id: int) -> dict[str, list[tuple[str, str]]]:
    """phone -> [(question id, digit)] of the answers stored for the campaign."""
    return {phone: list(a) for (cid, phone), a in _ANSWERS.items() if cid == campaign_id and a}
