"""A caller waiting in line: music on hold, position and wait announcements, overflow and voicemail."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any, Callable

from ivr.calls import CallerHungUp
from ivr.flow import actions as A
from routing.errors import RoutingError
from routing.events import Announce, AnnouncementKind, Overflow, OverflowKind

from .state import _Connected, _VoicemailKey, _Waiter
from .texts import _TEXT

log = logging.getLogger(__name__)


class WaitingMixin:
    """The waiting loop of one caller; mixed into ``QueueService``."""

    async def _hold(self, w: _Waiter) -> None:
        if w.ewt > self._callback_threshold() and not w.callback_offered:
            if await self._offer_callback(w):
                return
        if self.leave_when_empty and self._nobody_staffed(w):
            if self._voicemail_of(w.queue) is not None:
                log.info("call %s: nobody is logged in for queue %s: voicemail", w.call.id, w.queue)
                await self._leave_for_voicemail(w, "voicemail_no_agents")
                return
            log.info("call %s: nobody is logged in for queue %s: the caller is asked to call again", w.call.id,
                     w.queue)
            with contextlib.suppress(CallerHungUp):
                await self._say(w, "goodbye")
            w.call.hangup()
            return
        unlisten = await self._offer_voicemail_key(w)
        try:
            while True:
                ev = await self._wait_event(w)
                if isinstance(ev, _Connected):
                    if await self._talk(w, ev):
                        return
                    continue
                if isinstance(ev, Announce):
                    await self._announce(w, ev)
                elif isinstance(ev, Overflow):
                    if await self._overflow(w, ev):
                        return
                elif isinstance(ev, _VoicemailKey):
                    if await self._leave_for_voicemail(w, "voicemail_key"):
                        return
        finally:
            unlisten()

    def _voicemail_of(self, queue: str) -> Any | None:
        qc = self.engine.config.queues.get(queue)
        mw = qc.max_wait if qc is not None else None
        return mw if mw is not None and mw.action.value == "voicemail" else None

    async def _offer_voicemail_key(self, w: _Waiter) -> Callable[[], None]:
        """Tell the caller the queue's voicemail key and listen for it while they wait (not while they talk)."""
        mw = self._voicemail_of(w.queue)
        if mw is None or mw.voicemail_key is None:
            return lambda: None
        key, session = mw.voicemail_key, w.call.session

        def on_digit(_session: Any, digit: Any) -> None:
            if digit.digit == key and w.talk is None and w.connected is None:
                w.events.put_nowait(_VoicemailKey())

        session.add_dtmf_listener(on_digit)
        t = _TEXT.get(w.language, _TEXT["it"])
        with contextlib.suppress(CallerHungUp):
            await w.call.play(await self._render(A.PromptRef(t["voicemail_key"].format(k=key), None, w.language)))
        return lambda: session.remove_dtmf_listener(on_digit)

    async def _leave_for_voicemail(self, w: _Waiter, reason: str) -> bool:
        """The caller leaves the line for the queue's voicemail; False when that is no longer possible."""
        mw = self._voicemail_of(w.queue)
        if mw is None:
            return False
        try:
            self.drive(lambda now: self.engine.leave_queue(w.call.id, now=now, reason=reason))
        except RoutingError as exc:
            log.info("call %s: cannot leave the queue for voicemail: %s", w.call.id, exc)
            return False
        w.call.session.clear_digits()
        return await self._overflow(w, Overflow(self.now(), w.call.id, w.queue, OverflowKind.VOICEMAIL, mw.target,
                                                mw.prompt))

    async def _wait_event(self, w: _Waiter):
        """Music on hold until something happens to this caller; raises CallerHungUp when they leave."""
        call = w.call
        if not w.events.empty():
            return w.events.get_nowait()
        moh = await self._music(w.queue)
        get = asyncio.ensure_future(w.events.get())
        ended = asyncio.ensure_future(call.leg.wait_ended())
        play: asyncio.Future | None = None
        try:
            while True:
                if call.leg.ended:
                    raise CallerHungUp(f"call {call.id} ended while queued")
                play = asyncio.ensure_future(call.session.play(moh))
                done, _ = await asyncio.wait({get, ended, play}, return_when=asyncio.FIRST_COMPLETED)
                if get in done or ended in done:
                    break
        finally:
            if play is not None and not play.done():
                if not call.leg.ended and call.leg.session is not None:
                    call.leg.session.stop_playback()
                play.cancel()
            if not get.done():
                get.cancel()
            ended.cancel()
        if get.done() and not get.cancelled():
            return get.result()
        raise CallerHungUp(f"call {call.id} ended while queued")

    def _nobody_staffed(self, w: _Waiter) -> bool:
        try:
            call = self.engine.call(w.call.id)
        except RoutingError:
            return False
        if call.state.value != "waiting":
            return False
        return self.engine.queue_snapshot(call.queue, now=self.now()).staffed == 0

    async def _announce(self, w: _Waiter, ev: Announce) -> None:
        t = _TEXT.get(w.language, _TEXT["it"])
        if ev.kind is AnnouncementKind.POSITION:
            texts = [t["position"].format(n=ev.position)]
            if math.isfinite(ev.ewt_seconds):
                texts.append(self._ewt_text(t, ev.ewt_seconds))
        elif ev.kind is AnnouncementKind.EWT:
            texts = [self._ewt_text(t, ev.ewt_seconds)] if math.isfinite(ev.ewt_seconds) else []
        else:
            texts = []
            wav = self._resolve(ev.prompt) if ev.prompt else None
            if wav is not None:
                await w.call.play(await self._render(A.PromptRef(None, str(wav), w.language)))
            else:
                texts = [t["comfort"]]
        for text in texts:
            await w.call.play(await self._render(A.PromptRef(text, None, w.language)))
        w.ewt = ev.ewt_seconds
        if ev.ewt_seconds > self._callback_threshold() and not w.callback_offered:
            await self._offer_callback(w)

    @staticmethod
    def _ewt_text(t: dict, seconds: float) -> str:
        minutes = int(math.ceil(seconds / 60.0))
        return t["ewt_short"] if minutes <= 1 else t["ewt"].format(m=minutes)

    async def _overflow(self, w: _Waiter, ev: Overflow) -> bool:
        """True when the caller leaves the line."""
        if ev.kind is OverflowKind.QUEUE:
            w.queue = ev.target or w.queue
            if self.recorder is not None:
                with contextlib.suppress(Exception):
                    await self.recorder.queued(w.call.id, w.queue)
            return False
        if ev.kind is OverflowKind.CALLBACK:
            w.callback_offered = False
            return await self._offer_callback(w)
        key = "voicemail" if ev.kind is OverflowKind.VOICEMAIL else "goodbye"
        with contextlib.suppress(CallerHungUp):
            wav = self._resolve(ev.prompt) if ev.prompt else None
            if wav is not None:
                await w.call.play(await self._render(A.PromptRef(None, str(wav), w.language)))
            else:
                await self._say(w, key)
            if ev.kind is OverflowKind.VOICEMAIL:
                await self._take_voicemail(w, ev)
        w.call.hangup()
        return True

    async def _take_voicemail(self, w: _Waiter, ev: Overflow) -> None:
        qc = self.engine.config.queues.get(ev.from_queue)
        limit = qc.max_wait.max_message_seconds if qc is not None and qc.max_wait is not None else None
        vm = await self.voicemail.take(w.call, queue=ev.from_queue, context=w.context, mailbox=ev.target,
                                       language=w.language, max_seconds=limit)
        if vm is not None:
            self._notify("voicemail", vm.as_dict())
            await self._say(w, "voicemail_thanks")
