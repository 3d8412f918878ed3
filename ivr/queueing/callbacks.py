"""Keep-your-place callbacks: offered while waiting, placed when an agent is free."""

from __future__ import annotations

import asyncio
import contextlib
import logging


from ivr.calls import CallerHungUp, Leg, OriginateFailed
from ivr.flow import actions as A
from ivr.media.bridge import Bridge
from routing.errors import OfferNotPending, RoutingError
from routing.events import CallEndedBy, PlaceCallback

from .state import _Waiter, _utc
from .texts import _TEXT

log = logging.getLogger(__name__)

CALLBACK_RING_SECONDS = 30.0


class CallbackMixin:
    """Callbacks; mixed into ``QueueService``."""

    def _callback_threshold(self) -> float:
        return self.engine.config.defaults.callback.offer_when_ewt_over

    async def _offer_callback(self, w: _Waiter) -> bool:
        """'Press 1 to be called back': the caller keeps their place and hangs up. True when accepted."""
        w.callback_offered = True
        number = w.call.ani
        if not number:
            return False            # withheld number: nobody to call back
        try:
            if self.engine.call(w.call.id).state.value != "waiting":
                return False
        except RoutingError:
            return False
        t = _TEXT.get(w.language, _TEXT["it"])
        result = await w.call.play(await self._render(A.PromptRef(t["offer_callback"], None, w.language)),
                                   barge_in=True)
        digit = getattr(result, "digit", None)
        if not digit:
            got = await w.call.collect_digits(1, first_timeout=5.0, inter_digit_timeout=1.0, terminator=None)
            digit = got.digits[:1]
        else:
            w.call.session.clear_digits()
        if digit != "1":
            return False
        try:
            self.drive(lambda now: self.engine.request_callback(w.call.id, number, now=now))
        except RoutingError as exc:
            log.info("call %s: callback not possible now: %s", w.call.id, exc)
            return False
        log.info("call %s: callback requested on %s, place kept", w.call.id, number)
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await self.recorder.transferred(w.call.id, f"callback:{number}")
        with contextlib.suppress(CallerHungUp):
            await self._say(w, "callback_ok")
        w.call.hangup()
        return True

    def callback_route(self, number: str, ctx: dict) -> tuple[str, tuple[str, int] | None]:
        """Where the customer is dialled: through the trunk the original call came from."""
        origin = ctx.get("origin")
        if origin:
            host, port = origin[0], int(origin[1])
            return f"sip:{number}@{host}:{port}", (host, port)
        return f"sip:{number}@{self.from_host}", None

    async def _place_callback(self, pc: PlaceCallback) -> None:
        ctx = dict(pc.context)
        record_id = f"{pc.call_id}-cb{int(self.wall_clock() * 1000)}"
        agent_leg: Leg | None = None
        customer_leg: Leg | None = None
        try:
            try:
                agent_leg = await self._originate(pc.phone, self._from_uri(ctx, pc.queue), pc.ring_timeout)
            except asyncio.CancelledError:
                return            # the engine timed the ring out (RONA handled there)
            except Exception as exc:
                reason = self._failure(exc)
                log.info("callback %s: agent %s did not take it: %s", pc.call_id, pc.agent_id, reason.value)
                self.drive(lambda now: self.engine.offer_failed(pc.call_id, pc.agent_id, reason, now=now))
                return
            try:
                self.drive(lambda now: self.engine.offer_answered(pc.call_id, pc.agent_id, now=now))
            except OfferNotPending:
                agent_leg.hangup()
                return
            await self._record_callback_start(record_id, pc, ctx)
            uri, dest = self.callback_route(pc.number, ctx)
            try:
                customer_leg = await self.manager.originate(uri, f"sip:{pc.queue}@{self.from_host}",
                                                            destination=dest, ring_timeout=CALLBACK_RING_SECONDS)
            except (OriginateFailed, Exception) as exc:
                log.info("callback %s: customer %s did not answer (%s)", pc.call_id, pc.number, exc)
                agent_leg.hangup()
                self.drive(lambda now: self.engine.callback_failed(pc.call_id, now=now, reason="no_answer"))
                await self._record(lambda r: r.ended(record_id, "callback_no_answer"))
                return
            bridge = Bridge(customer_leg.session, agent_leg.session)
            bridge.start()
            self._notify("answered", pc.agent_id, pc.call_id)
            await self._record(lambda r: r.answered(record_id, pc.agent_id))
            ends = [asyncio.ensure_future(customer_leg.wait_ended()), asyncio.ensure_future(agent_leg.wait_ended())]
            try:
                await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for e in ends:
                    e.cancel()
                by = CallEndedBy.CALLER if customer_leg.ended else CallEndedBy.AGENT
                await bridge.stop()
                customer_leg.hangup()
                agent_leg.hangup()
                with contextlib.suppress(RoutingError):
                    self.drive(lambda now: self.engine.call_ended(pc.call_id, now=now, by=by))
                self._notify("ended", pc.agent_id, pc.call_id)
                await self._record(lambda r: r.ended(record_id, "caller_hangup" if by is CallEndedBy.CALLER
                                                     else "agent_hangup"))
        finally:
            self._callbacks.pop(pc.call_id, None)
            for leg in (agent_leg, customer_leg):
                if leg is not None and not leg.ended:
                    leg.hangup()

    async def _record_callback_start(self, record_id: str, pc: PlaceCallback, ctx: dict) -> None:
        queued_wall = ctx.get("queued_wall")
        await self._record(lambda r: r.call_arrived(record_id, ani=pc.number, dnis=ctx.get("dnis"), line="callback"))
        customer_id = ctx.get("customer_id") or (ctx.get("customer") or {}).get("id")
        if customer_id is not None and str(customer_id).isdigit():
            await self._record(lambda r: r.identified(record_id, int(customer_id), ctx.get("identified_by") or "ani"))
        await self._record(lambda r: r.queued(record_id, pc.queue, service=ctx.get("service"),
                                              at=_utc(queued_wall) if queued_wall else None))
