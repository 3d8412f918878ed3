"""``SurveyRun``: one caller going through a survey script, sans-IO.

Events in (``Digits``, ``Timeout``, ``Hangup``), actions out (``Play``, ``Collect``, ``Answer``, ``Done``), no
clock and no media: the media layer owns the digit timer, the asyncio runner (``ivr.survey.runner``) carries
the actions out. That keeps every path of a survey (retries, opt-out, a hang-up between two questions) testable
without a call.

Rules: each question is asked, then one digit is collected within the question's ``timeout``. A digit that is
not an answer ("not valid" prompt) or no digit at all ("no answer" prompt) asks again, up to ``retries`` more
times. When the retries are used up, a question answered only with wrong digits is skipped (the caller is there
and the next question may suit them); silence ends the survey, closing prompt included (nobody is listening, or
nobody wants to). The opt-out digit, at any question, ends the survey after a confirmation prompt. The outcome
is ``completed`` when the end of the script was reached.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ivr.errors import IvrError
from ivr.flow.actions import PromptRef

from .script import SurveyScript


class SurveyStateError(IvrError):
    """An event the survey cannot take now (digits when no digit was asked for): a bug in the shell."""


# ---------------------------------------------------------------- events

@dataclass(frozen=True, slots=True)
class Digits:
    digits: str


@dataclass(frozen=True, slots=True)
class Timeout:
    pass


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


Event = Digits | Timeout | Hangup


# ---------------------------------------------------------------- actions

@dataclass(frozen=True, slots=True)
class Play:
    prompt: PromptRef
    barge_in: bool = True


@dataclass(frozen=True, slots=True)
class Collect:
    timeout: float
    max_digits: int = 1


@dataclass(frozen=True, slots=True)
class Answer:
    question_id: str
    digit: str
    value: Any


@dataclass
class SurveyOutcome:
    answers: dict[str, Any] = field(default_factory=dict)
    completed: bool = False
    opted_out: bool = False
    hung_up: bool = False

    @property
    def status(self) -> str:
        """``completed``, ``opted_out``, ``partial`` (some answers, then a hang-up or silence) or
        ``no_answer``: the value the survey store keeps."""
        if self.opted_out:
            return "opted_out"
        if self.completed:
            return "completed"
        return "partial" if self.answers else "no_answer"


@dataclass(frozen=True, slots=True)
class Done:
    outcome: SurveyOutcome


Action = Play | Collect | Answer | Done


class _State(enum.Enum):
    NEW = "new"
    ASKING = "asking"
    DONE = "done"


class SurveyRun:
    """``SurveyRun(script, language)``; ``start()`` then ``handle(event)`` until an action list ends in
    ``Done``. ``language`` falls back to the script's first language when the script does not speak it."""

    def __init__(self, script: SurveyScript, language: str | None = None):
        self.script = script
        self.language = script.language(language)
        self.answers: dict[str, Any] = {}
        self.outcome: SurveyOutcome | None = None
        self._state = _State.NEW
        self._index = 0
        self._failures = 0           # failed tries of the current question
        self._wrong_digit = False    # the last failure was a wrong digit (not silence)

    @property
    def finished(self) -> bool:
        return self._state is _State.DONE

    @property
    def current_question(self) -> str | None:
        return self.script.questions[self._index].id if self._state is _State.ASKING else None

    def _say(self, prompt, barge_in: bool = True) -> Play:
        return Play(prompt.ref(self.language), barge_in)

    def _ask(self) -> list[Action]:
        q = self.script.questions[self._index]
        return [self._say(q.text), Collect(q.timeout)]

    def _finish(self, *, completed: bool = False, opted_out: bool = False, hung_up: bool = False) -> Done:
        self._state = _State.DONE
        self.outcome = SurveyOutcome(dict(self.answers), completed, opted_out, hung_up)
        return Done(self.outcome)

    def _next(self) -> list[Action]:
        self._index += 1
        self._failures = 0
        self._wrong_digit = False
        if self._index < len(self.script.questions):
            return self._ask()
        return [self._say(self.script.closing, barge_in=False), self._finish(completed=True)]

    def start(self) -> list[Action]:
        if self._state is not _State.NEW:
            raise SurveyStateError("the survey has already started")
        self._state = _State.ASKING
        out: list[Action] = []
        if self.script.intro is not None:
            out.append(self._say(self.script.intro))
        return out + self._ask()

    def handle(self, event: Event) -> list[Action]:
        if self._state is _State.DONE:
            return []
        if isinstance(event, Hangup):
            return [self._finish(hung_up=True)]
        if self._state is not _State.ASKING:
            raise SurveyStateError(f"{event!r} before start()")
        q = self.script.questions[self._index]
        digit = event.digits[:1] if isinstance(event, Digits) else ""
        if digit and digit == self.script.opt_out_digit:
            return [self._say(self.script.opt_out_prompt, barge_in=False), self._finish(opted_out=True)]
        option = q.option(digit) if digit else None
        if option is not None:
            self.answers[q.id] = option.value
            return [Answer(q.id, digit, option.value), *self._next()]
        self._failures += 1
        self._wrong_digit = bool(digit)
        if self._failures <= q.retries:
            sorry = self.script.invalid_prompt if digit else self.script.no_input_prompt
            return [self._say(sorry), *self._ask()]
        if self._wrong_digit:
            return self._next()
        return [self._say(self.script.closing, barge_in=False), self._finish()]
