"""``run_survey``: a :class:`~ivr.survey.interpreter.SurveyRun` carried out on a live call.

The thin asyncio shell: prompts rendered by the IVR's prompt source (TTS cached, WAVs resampled), played with
barge-in so a caller who knows the question can answer at once, one digit collected per question, each valid
answer handed to ``on_answer`` as soon as it is given (a caller who hangs up at question 3 has still answered
questions 1 and 2). A hang-up ends the survey with the answers so far; it is never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ivr.calls import CallerHungUp
from ivr.media.collect import CollectReason

from .interpreter import Answer, Collect, Digits, Done, Event, Hangup, Play, SurveyOutcome, SurveyRun, Timeout
from .script import SurveyScript

log = logging.getLogger(__name__)

OnAnswer = Callable[[str, str, Any], Awaitable[None]]

__all__ = ["run_survey", "SurveyOutcome", "OnAnswer"]


async def run_survey(call: Any, script: SurveyScript, prompts: Any, *, language: str = "it",
                     on_answer: OnAnswer | None = None) -> SurveyOutcome:
    """Ask ``script`` on ``call`` (``ivr.calls.Call``: ``play``, ``collect_digits``); ``prompts`` has
    ``await render_async(PromptRef) -> int16 PCM``. Digits typed before the survey began (to the agent) are
    dropped. Returns the outcome; ``outcome.status`` is what the survey store keeps."""
    run = SurveyRun(script, language)
    session = getattr(getattr(call, "leg", None), "session", None)
    if session is not None and hasattr(session, "clear_digits"):
        session.clear_digits()
    actions = run.start()
    try:
        while actions:
            event: Event | None = None
            interrupted = False
            for action in actions:
                if isinstance(action, Play):
                    if interrupted and action.barge_in:
                        continue          # the caller already typed the answer: skip to the collection
                    pcm = await prompts.render_async(action.prompt)
                    result = await call.play(pcm, barge_in=action.barge_in)
                    interrupted = interrupted or bool(getattr(result, "digit", None))
                elif isinstance(action, Collect):
                    res = await call.collect_digits(action.max_digits, action.timeout, action.timeout, None)
                    if res.reason is CollectReason.CLOSED:
                        event = Hangup()
                    else:
                        event = Digits(res.digits) if res.digits else Timeout()
                elif isinstance(action, Answer):
                    if on_answer is not None:
                        try:
                            await on_answer(action.question_id, action.digit, action.value)
                        except CallerHungUp:
                            raise
                        except Exception:
                            log.exception("call %s: survey %s answer to %s not recorded", getattr(call, "id", "?"),
                                          script.name, action.question_id)
                elif isinstance(action, Done):
                    return action.outcome
            if event is None:
                break
            actions = run.handle(event)
    except CallerHungUp:
        if not run.finished:
            run.handle(Hangup())
    if run.outcome is None:          # the loop ended without a Done: cannot happen with a valid script
        run.handle(Hangup())
    assert run.outcome is not None
    return run.outcome
