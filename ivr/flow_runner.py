"""Runs the sans-IO IVR interpreter on a real call: actions become media operations and service calls.

The interpreter decides; this module only performs. Each awaiting action maps to exactly one await here and its
answer goes back as the matching event, so the loop below is the whole contract. What lies outside the call
(CRM look-ups, voice verification, queues) sits behind the ``IvrServices`` protocol so the wiring in ``app.py``
can plug in the real CRM, voiceauth and routing, and degrade (CRM down, model failed) without dropping the call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from ivr.calls import Call, CallerHungUp
from ivr.flow import actions as A
from ivr.flow.context import CallContext
from ivr.flow.holder import ConfigHolder
from ivr.flow.trace import IvrTrace

log = logging.getLogger(__name__)

BUFFERED_DIGIT_WAIT = 0.05  # the digit is already in the buffer: taking it never waits this long


class PromptSource(Protocol):
    async def render_async(self, prompt: A.PromptRef) -> np.ndarray: ...


class IvrServices(Protocol):
    """Everything the IVR needs from outside the call; every method must degrade rather than raise."""

    async def call_started(self, call: Call, ctx: CallContext) -> None: ...

    async def lookup_caller(self, call: Call, ani: str) -> dict[str, Any] | None: ...

    async def verify_pin(self, call: Call, account: str, pin: str) -> A.PinResult: ...

    async def verify_voice(self, call: Call, action: A.VerifyVoice) -> A.VoiceResult: ...

    async def enroll_voice(self, call: Call, action: A.EnrollVoice) -> A.VoiceResult: ...

    async def queue(self, call: Call, action: A.Queue, ctx: CallContext, trace: IvrTrace) -> None: ...

    async def transfer(self, call: Call, uri: str) -> None: ...

    async def ivr_progress(self, call: Call, ctx: CallContext, trace: IvrTrace) -> None: ...

    async def ivr_finished(self, call: Call, ctx: CallContext, trace: IvrTrace, outcome: A.Finished) -> None: ...


class FlowCallApplication:
    """The production call application: answer, run the flow of the dialed line, hand off."""

    def __init__(self, holder: ConfigHolder, prompts: PromptSource, services: IvrServices,
                 clock: Callable[[], float] = time.time):
        """``clock`` is the wall clock the flow sees (opening hours, holidays); tests pass a fixed one."""
        self.holder = holder
        self.prompts = prompts
        self.services = services
        self.clock = clock

    async def run(self, call: Call) -> None:
        await call.answer()
        ctx = CallContext(call_id=call.id, ani_e164=call.identity.ani_e164, ani_raw=call.identity.ani_raw,
                          dnis=call.dnis)
        call.variables["ivr_context"] = ctx
        run = self.holder.new_run(ctx, self.clock())
        call.variables["ivr_run"] = run
        await self.services.call_started(call, ctx)
        outcome: A.Finished | None = None
        terminal: A.Action | None = None
        try:
            actions = run.start(self.clock())
            while True:
                event = None
                for action in actions:
                    if isinstance(action, A.Finished):
                        outcome = action
                    elif isinstance(action, (A.Queue, A.Transfer, A.Hangup)):
                        terminal = action
                    else:
                        event = await self._perform(call, action)
                if event is None:
                    break
                actions = run.handle(event, self.clock())
                if not isinstance(event, A.PlayFinished) and not run.finished:
                    await self.services.ivr_progress(call, ctx, run.trace)
        except CallerHungUp:
            if not run.finished:
                run.handle(A.CallerHungUp(), self.clock())
            outcome = run.outcome
        finally:
            trace: IvrTrace = run.trace
            call.variables["ivr_trace"] = trace
            await self.services.ivr_finished(call, ctx, trace, outcome or run.outcome
                                             or A.Finished(A.IvrExit.ERROR, "no outcome"))
        if isinstance(terminal, A.Queue):
            await self.services.queue(call, terminal, ctx, trace)
        elif isinstance(terminal, A.Transfer):
            await self.services.transfer(call, terminal.uri)
        elif isinstance(terminal, A.Hangup):
            call.hangup()

    async def _perform(self, call: Call, action: A.Action):
        if isinstance(action, A.Play):
            return await self._play(call, action)
        if isinstance(action, A.CollectDigits):
            result = await call.collect_digits(action.max_digits, action.first_timeout,
                                               action.inter_digit_timeout, action.terminator)
            return A.DigitsCollected(result.digits, result.reason.value)
        if isinstance(action, A.LookupCaller):
            return A.CallerLookedUp(await self.services.lookup_caller(call, action.ani))
        if isinstance(action, A.VerifyPin):
            return await self.services.verify_pin(call, action.account, action.pin)
        if isinstance(action, A.VerifyVoice):
            return await self.services.verify_voice(call, action)
        if isinstance(action, A.EnrollVoice):
            return await self.services.enroll_voice(call, action)
        raise TypeError(f"unknown IVR action {action!r}")

    async def _play(self, call: Call, action: A.Play) -> A.PlayFinished:
        for prompt in action.prompts:
            pcm = await self.prompts.render_async(prompt)
            result = await call.play(pcm, barge_in=action.barge_in)
            digit = getattr(result, "digit", None)
            if digit:
                # the media layer leaves the barge-in digit buffered, but the interpreter takes it from
                # PlayFinished: consume it here or the next menu reads it a second time
                await call.collect_digits(1, BUFFERED_DIGIT_WAIT, BUFFERED_DIGIT_WAIT, None)
                return A.PlayFinished(interrupted_digit=digit)
        return A.PlayFinished()


@dataclass
class GreetingApplication:
    """Answer, play one prompt, hang up: the smallest useful application (and the SIP load benchmark's)."""

    pcm: np.ndarray
    hold_after: float = 0.0

    async def run(self, call: Call) -> None:
        await call.answer()
        await call.play(self.pcm)
        if self.hold_after:
            await call.sleep(self.hold_after)
        call.hangup()
