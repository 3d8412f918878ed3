"""Queued callers on real SIP legs: the asyncio shell around the sans-IO ``routing.RoutingEngine``.

The engine decides (who gets which call, when a ring times out, when to announce, overflow); this module only
performs: it rings agents' phones, bridges, plays music on hold and announcements, and reports back what the
network did. One loop timer, re-armed after every engine call (``get_timer``/``handle_timer``, as in aioquic),
drives every engine deadline. Every engine call goes through ``drive`` so the actions it returns are carried out
at once, whoever caused them (a caller, a phone answering, the desktop, a feature code).

The engine owns the ring timeout: ``originate`` is given a few more seconds, so a ring-no-answer always arrives
as the engine's ``CancelOffer`` and the INVITE is cancelled here. A phone that rejects (486, 480, 404...) is
reported with ``offer_failed`` and the engine puts the agent NOT_READY and the call back at its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from ivr.agents import AgentPhoneError, EngineAgentControl, EngineWallboard, FeatureCodeApplication, PhoneCredentials, PhoneDirectory
from ivr.calls import Call, CallerHungUp, Leg, OriginateFailed
from ivr.flow import actions as A
from ivr.media.audio import load_prompt
from ivr.media.bridge import Bridge
from routing.engine import RoutingEngine
from routing.errors import OfferNotPending, RoutingError
from routing.events import (AgentStateChanged, Announce, AnnouncementKind, CallAbandoned, CallAnswered,
                            CallEnded, CallEndedBy, CallLeftQueue, CallQueued, CancelOffer, Offer, OfferFailure,
                            Overflow, OverflowKind, PlaceCallback, RoutingEvent)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MOH = REPO_ROOT / "audio_fixtures" / "moh" / "gentle_tones.wav"
ORIGINATE_GRACE = 5.0          # originate waits longer than the engine's ring timeout: the engine decides RONA
CALLBACK_RING_SECONDS = 30.0
DEFAULT_EXTRA_LEVEL = 5        # minimum level for a skill the IVR adds by name (e.g. language_en)

_TEXT = {
    "it": {
        "position": "Lei è il numero {n} in coda.",
        "ewt": "Il tempo di attesa stimato è di circa {m} minuti.",
        "ewt_short": "Il tempo di attesa stimato è inferiore a un minuto.",
        "comfort": "Tutti i nostri operatori sono occupati. La preghiamo di restare in linea.",
        "offer_callback": "Se preferisce essere richiamato al numero da cui chiama, mantenendo il suo posto, "
                          "prema 1.",
        "callback_ok": "Grazie, la richiameremo appena un operatore sarà libero. Arrivederci.",
        "goodbye": "Al momento non è possibile rispondere. La preghiamo di richiamare più tardi. Arrivederci.",
        "voicemail": "Nessun operatore disponibile. La richiameremo appena possibile. Arrivederci.",
    },
    "en": {
        "position": "You are number {n} in the queue.",
        "ewt": "The estimated wait is about {m} minutes.",
        "ewt_short": "The estimated wait is less than a minute.",
        "comfort": "All our agents are busy. Please stay on the line.",
        "offer_callback": "To be called back on the number you are calling from, keeping your place, press 1.",
        "callback_ok": "Thank you, we will call you back as soon as an agent is free. Goodbye.",
        "goodbye": "We cannot take your call right now. Please call again later. Goodbye.",
        "voicemail": "No agent is available. We will call you back as soon as possible. Goodbye.",
    },
}


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


@dataclass(slots=True)
class _Connected:
    leg: Leg
    agent_id: str


@dataclass(slots=True)
class _Leave:
    reason: str
    prompt: str | None = None          # key of _TEXT or a wav path


@dataclass
class _Waiter:
    """One caller held in line by ``QueueService.queue``."""

    call: Call
    queue: str
    language: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    ewt: float = 0.0
    callback_offered: bool = False
    connected: _Connected | None = None


@dataclass
class _OfferTask:
    call_id: str
    agent_id: str
    task: asyncio.Task | None = None
    cancelled_by_engine: bool = False


class QueueService:
    """``QueueHandoff`` over the routing engine and the call manager.

    ``QueueService(engine, manager, phones, prompts, recorder=None, hub=None, from_host="127.0.0.1")``;
    ``start()`` arms the loop timer and the reconciliation task, ``await stop()`` ends them.
    """

    def __init__(self, engine: RoutingEngine, manager: Any, phones: PhoneDirectory, prompts: Any, *,
                 recorder: Any | None = None, hub: Any | None = None, from_host: str = "127.0.0.1",
                 base_dir: Path | None = None, reconcile_every: float = 15.0, db: Any | None = None,
                 clock: Callable[[], float] | None = None, wall_clock: Callable[[], float] = time.time,
                 leave_when_empty: bool = True):
        """``leave_when_empty``: a caller who arrives when nobody who could answer is logged in (and who does not
        take the callback) hears "call again later" instead of waiting for nobody."""
        self.engine = engine
        self.leave_when_empty = leave_when_empty
        self.manager = manager
        self.phones = phones
        self.prompts = prompts
        self.recorder = recorder
        self.hub = hub
        self.db = db
        self.from_host = from_host
        self.base_dir = base_dir or REPO_ROOT
        self.reconcile_every = reconcile_every
        self.wall_clock = wall_clock
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: dict[str, _Waiter] = {}
        self._offers: dict[str, _OfferTask] = {}
        self._callbacks: dict[str, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._moh: dict[str, np.ndarray] = {}
        self._reconciler: asyncio.Task | None = None
        self.history: list[RoutingEvent] = []        # recent events for tests and the desktop's first load
        self.max_history = 2000
        # ``await post_call(call, context, agent_id)`` runs when the agent hung up first and the caller is still
        # on the line (the post-call survey); the agent is already in wrap-up by then.
        self.post_call: Callable[[Call, dict, str], Awaitable[None]] | None = None

    # ------------------------------------------------------------------------------------------ driving
    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def drive(self, fn: Callable[[float], list[RoutingEvent]]) -> list[RoutingEvent]:
        """Call the engine at the current time, carry out its actions, re-arm the timer; returns the actions."""
        try:
            acts = fn(self.now())
        finally:
            self._arm()
        self._apply(acts)
        return acts

    def start(self) -> None:
        self._arm()
        if self._reconciler is None and self.reconcile_every > 0:
            self._reconciler = asyncio.get_running_loop().create_task(self._reconcile_loop())

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = [t for t in (self._reconciler, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._reconciler = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.engine.get_timer()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._timer = loop.call_at(deadline, self._on_timer)
        else:
            self._timer = loop.call_later(max(0.0, deadline - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.drive(lambda now: self.engine.handle_timer(now))
        except Exception:
            log.exception("routing timer failed")

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("routing task %s failed", task.get_name(), exc_info=task.exception())

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_every)
            try:
                self.reconcile()
            except Exception:
                log.exception("routing reconciliation failed")

    def active_call_ids(self) -> set[str]:
        live = {c.id for c in self.manager.calls.values()}
        return (live & set(self._waiters)) | set(self._callbacks)

    def reconcile(self) -> list[RoutingEvent]:
        """Align the engine with the dialogs that exist (no agent stays 'on call' after the dialog ended)."""
        active = self.active_call_ids()
        return self.drive(lambda now: self.engine.reconcile(active, now=now))

    # ------------------------------------------------------------------------------------------ actions
    def _apply(self, acts: list[RoutingEvent]) -> None:
        for act in acts:
            self.history.append(act)
            try:
                self._apply_one(act)
            except Exception:
                log.exception("routing action %s failed", type(act).__name__)
        if len(self.history) > self.max_history:
            del self.history[: len(self.history) - self.max_history]

    def _apply_one(self, act: RoutingEvent) -> None:
        if isinstance(act, Offer):
            ot = _OfferTask(act.call_id, act.agent_id)
            self._offers[act.call_id] = ot
            ot.task = self._spawn(self._ring_agent(act, ot), f"offer {act.call_id} -> {act.agent_id}")
        elif isinstance(act, PlaceCallback):
            self._callbacks[act.call_id] = self._spawn(self._place_callback(act), f"callback {act.call_id}")
        elif isinstance(act, CancelOffer):
            ot = self._offers.get(act.call_id)
            if ot is not None and ot.agent_id == act.agent_id and ot.task is not None and not ot.task.done():
                ot.cancelled_by_engine = True
                ot.task.cancel()
            cb = self._callbacks.get(act.call_id)
            if cb is not None and act.reason == OfferFailure.RONA.value:
                cb.cancel()
        elif isinstance(act, (Announce, Overflow)):
            w = self._waiters.get(act.call_id)
            if w is not None:
                w.events.put_nowait(act)
        elif isinstance(act, CallQueued):
            w = self._waiters.get(act.call_id)
            if w is not None:
                w.ewt = act.ewt_seconds
        elif isinstance(act, AgentStateChanged):
            self._record_agent_state(act)
            self._notify("agent_state", act.agent_id, act)
        elif isinstance(act, (CallAnswered, CallEnded, CallAbandoned, CallLeftQueue)):
            log.info("routing: %s", act)

    def _notify(self, method: str, *args) -> None:
        fn = getattr(self.hub, method, None) if self.hub is not None else None
        if fn is None:
            return

        async def run():
            try:
                res = fn(*args)
                if asyncio.iscoroutine(res):
                    await res
            except Exception:
                log.exception("desktop hub %s failed", method)
        self._spawn(run(), f"hub {method}")

    def _record_agent_state(self, ev: AgentStateChanged) -> None:
        if self.db is None:
            return
        from crm_bridge import models as m

        at = _utc(self.wall_clock())

        def write(s):
            s.add(m.AgentStateEvent(agent_id=ev.agent_id, state=ev.new, reason=ev.reason, call_id=ev.call_id,
                                    at=at))

        async def run():
            try:
                await self.db.run(write)
            except Exception:
                log.exception("agent state event not stored")
        self._spawn(run(), "agent state event")

    # ------------------------------------------------------------------------------------------ the caller
    async def queue(self, call: Call, action: A.Queue, ctx: Any, trace: Any) -> None:
        """Hold the caller until an agent answers and the conversation ends, or the caller leaves."""
        language = action.language or "it"
        w = _Waiter(call, action.queue, language)
        if call.id in self._waiters:
            log.error("call %s is already queued", call.id)
            return
        self._waiters[call.id] = w
        customer = call.variables.get("customer") or {}
        context = {
            "customer": customer or None, "customer_id": action.customer_id, "service": action.service,
            "queue": action.queue,
            "language": language, "identified_by": action.identified_by, "verified": action.verified,
            "ivr_path": list(getattr(trace, "path", []) or []), "ani": call.ani, "dnis": call.dnis,
            "origin": list(call.source), "queued_wall": self.wall_clock(),
            "critical": bool(action.variables.get("critical")),
        }
        qc = self.engine.config.queues.get(action.queue)
        priority = (qc.priority + action.priority) if (qc is not None and action.priority) else None
        extra = {s: DEFAULT_EXTRA_LEVEL for s in action.skills if s in self.engine.config.skills}
        try:
            self.drive(lambda now: self.engine.enqueue(
                call.id, action.queue, now=now, priority=priority, customer_segment=customer.get("segment"),
                extra_skills=extra or None, context=context, critical=context["critical"]))
        except RoutingError as exc:
            self._waiters.pop(call.id, None)
            log.error("call %s could not be queued to %s: %s", call.id, action.queue, exc)
            with contextlib.suppress(CallerHungUp):
                await self._say(w, "goodbye")
            call.hangup()
            return
        if self.recorder is not None:
            try:
                await self.recorder.queued(call.id, action.queue, service=action.service)
            except Exception:
                log.exception("call %s: queued step not recorded", call.id)
        try:
            await self._hold(w)
        except CallerHungUp:
            pass
        finally:
            self._waiters.pop(call.id, None)
            if w.connected is None:
                self._caller_left(call.id)

    def _caller_left(self, call_id: str) -> None:
        try:
            call = self.engine.call(call_id)
        except RoutingError:
            return
        if call.is_callback:
            return
        self.drive(lambda now: self.engine.caller_abandoned(call_id, now=now))

    async def _hold(self, w: _Waiter) -> None:
        if w.ewt > self._callback_threshold() and not w.callback_offered:
            if await self._offer_callback(w):
                return
        if self.leave_when_empty and self._nobody_staffed(w):
            log.info("call %s: nobody is logged in for queue %s: the caller is asked to call again", w.call.id,
                     w.queue)
            with contextlib.suppress(CallerHungUp):
                await self._say(w, "goodbye")
            w.call.hangup()
            return
        while True:
            ev = await self._wait_event(w)
            if isinstance(ev, _Connected):
                await self._talk(w, ev)
                return
            if isinstance(ev, Announce):
                await self._announce(w, ev)
            elif isinstance(ev, Overflow):
                if await self._overflow(w, ev):
                    return

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

    def _callback_threshold(self) -> float:
        return self.engine.config.defaults.callback.offer_when_ewt_over

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
        w.call.hangup()
        return True

    async def _talk(self, w: _Waiter, conn: _Connected) -> None:
        """Caller and agent bridged until one hangs up; the other is then hung up and the agent wraps up."""
        call, leg = w.call, conn.leg
        call.agent_leg = leg
        bridge = Bridge(call.session, leg.session)
        bridge.start()
        call.bridge = bridge
        self._notify("answered", conn.agent_id, call.id)
        if self.recorder is not None:
            try:
                await self.recorder.answered(call.id, conn.agent_id)
            except Exception:
                log.exception("call %s: answer not recorded", call.id)
        caller_end = asyncio.ensure_future(call.leg.wait_ended())
        agent_end = asyncio.ensure_future(leg.wait_ended())
        try:
            await asyncio.wait({caller_end, agent_end}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            by = CallEndedBy.CALLER if call.leg.ended else CallEndedBy.AGENT
            caller_end.cancel()
            agent_end.cancel()
            await bridge.stop()
            call.bridge = None
            if by is CallEndedBy.AGENT and self.recorder is not None:
                with contextlib.suppress(Exception):
                    await self.recorder.ended(call.id, "agent_hangup")
            leg.hangup()
            context = self._context_of(call.id)
            with contextlib.suppress(RoutingError):
                self.drive(lambda now: self.engine.call_ended(call.id, now=now, by=by))
            self._notify("ended", conn.agent_id, call.id)
            if by is CallEndedBy.AGENT and self.post_call is not None and not call.leg.ended:
                try:
                    await self.post_call(call, context, conn.agent_id)
                except CallerHungUp:
                    pass
                except Exception:
                    log.exception("call %s: post-call step failed", call.id)
            call.hangup()

    def _context_of(self, call_id: str) -> dict:
        try:
            return dict(self.engine.call(call_id).context)
        except RoutingError:
            return {}

    # ------------------------------------------------------------------------------------------ the agent
    def _from_uri(self, ctx: dict, queue: str) -> str:
        customer = ctx.get("customer") or {}
        name = str(customer.get("name") or queue)
        display = "".join(ch for ch in f"{queue}: {name}" if ch not in '"\\\r\n')[:60]
        user = ctx.get("ani") or "queue"
        port = getattr(self.manager.sip, "bound_port", None)
        host = f"{self.from_host}:{port}" if port else self.from_host
        return f'"{display}" <sip:{user}@{host}>'

    async def _originate(self, phone: str, from_uri: str, ring: float) -> Leg:
        route = self.phones.route(phone)
        return await self.manager.originate(route.uri, from_uri, destination=route.destination,
                                            ring_timeout=ring + ORIGINATE_GRACE)

    @staticmethod
    def _failure(exc: Exception) -> OfferFailure:
        if isinstance(exc, OriginateFailed):
            if exc.status in (486, 600):
                return OfferFailure.BUSY
            if exc.status in (408, 480, 487):
                return OfferFailure.RONA
        return OfferFailure.FAILED

    async def _ring_agent(self, offer: Offer, ot: _OfferTask) -> None:
        self._notify("ringing", offer.agent_id, offer.call_id, dict(offer.context))
        try:
            leg = await self._originate(offer.phone, self._from_uri(dict(offer.context), offer.queue),
                                        offer.ring_timeout)
        except asyncio.CancelledError:
            if self._offers.get(offer.call_id) is ot:
                del self._offers[offer.call_id]
            if not ot.cancelled_by_engine:
                raise
            return
        except (OriginateFailed, AgentPhoneError, Exception) as exc:
            if self._offers.get(offer.call_id) is ot:
                del self._offers[offer.call_id]
            reason = self._failure(exc)
            log.info("offer of %s to agent %s failed: %s (%s)", offer.call_id, offer.agent_id, reason.value, exc)
            self.drive(lambda now: self.engine.offer_failed(offer.call_id, offer.agent_id, reason, now=now))
            return
        if self._offers.get(offer.call_id) is ot:
            del self._offers[offer.call_id]
        w = self._waiters.get(offer.call_id)
        if w is None or w.call.leg.ended or ot.cancelled_by_engine:
            leg.hangup()
            return
        try:
            self.drive(lambda now: self.engine.offer_answered(offer.call_id, offer.agent_id, now=now))
        except OfferNotPending as exc:
            log.info("agent %s answered too late: %s", offer.agent_id, exc)
            leg.hangup()
            return
        w.connected = _Connected(leg, offer.agent_id)
        w.events.put_nowait(w.connected)

    # ------------------------------------------------------------------------------------------ callbacks
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

    async def _record(self, step) -> None:
        if self.recorder is None:
            return
        try:
            await step(self.recorder)
        except Exception:
            log.exception("callback record step failed")

    async def _record_callback_start(self, record_id: str, pc: PlaceCallback, ctx: dict) -> None:
        queued_wall = ctx.get("queued_wall")
        await self._record(lambda r: r.call_arrived(record_id, ani=pc.number, dnis=ctx.get("dnis"), line="callback"))
        customer_id = ctx.get("customer_id") or (ctx.get("customer") or {}).get("id")
        if customer_id is not None and str(customer_id).isdigit():
            await self._record(lambda r: r.identified(record_id, int(customer_id), ctx.get("identified_by") or "ani"))
        await self._record(lambda r: r.queued(record_id, pc.queue, service=ctx.get("service"),
                                              at=_utc(queued_wall) if queued_wall else None))

    # ------------------------------------------------------------------------------------------ audio
    def _resolve(self, path: str | None) -> Path | None:
        if not path:
            return None
        p = Path(path)
        for cand in ([p] if p.is_absolute() else [self.base_dir / p, REPO_ROOT / p, REPO_ROOT / "audio_fixtures" / p]):
            if cand.is_file():
                return cand
        return None

    async def _music(self, queue: str) -> np.ndarray:
        qc = self.engine.config.queues.get(queue)
        wanted = qc.announcements.music_on_hold if qc is not None else None
        key = wanted or ""
        pcm = self._moh.get(key)
        if pcm is None:
            path = self._resolve(wanted) if wanted else None
            if path is None:
                if wanted:
                    log.warning("music on hold %r of queue %s not found: playing %s", wanted, queue,
                                DEFAULT_MOH.name)
                path = DEFAULT_MOH
            pcm = self._moh[key] = await asyncio.to_thread(load_prompt, path)
        return pcm

    async def _render(self, prompt: A.PromptRef) -> np.ndarray:
        return await self.prompts.render_async(prompt)

    async def _say(self, w: _Waiter, key: str) -> None:
        t = _TEXT.get(w.language, _TEXT["it"])
        await w.call.play(await self._render(A.PromptRef(t[key], None, w.language)))


# ---------------------------------------------------------------------------------------------- wiring


async def attach_routing(server: Any, services: Any, queues_path: Path, prompts: Any, *, hub: Any | None = None,
                         phones_path: Path | None = None, registrar_secret: bytes | None = None) -> QueueService:
    """Build the routing engine from ``queues_path``, the agent phones' registrar (HA1 from
    ``agent_phones.yaml`` next to it), the queue service (``services.queue_handoff``), the feature-code
    wrapper around the IVR app, and the desktop/wallboard adapters; all are left in ``server.extras``."""
    import secrets

    from ivr.sip.digest import DigestAuthenticator
    from ivr.sip.registrar import Registrar
    from routing.config import load_routing_config

    cfg = server.cfg
    config = load_routing_config(queues_path)
    engine = RoutingEngine(config)
    loop = asyncio.get_running_loop()
    creds = PhoneCredentials.load(phones_path or Path(queues_path).with_name("agent_phones.yaml"), cfg.sip.realm)
    registrar = Registrar(DigestAuthenticator(cfg.sip.realm, registrar_secret or secrets.token_bytes(32)), creds)
    ua = server.sip.ua
    set_registrar = getattr(ua, "set_registrar", None)
    if set_registrar is not None:
        set_registrar(registrar)
    else:
        ua.config.registrar = registrar
    phones = PhoneDirectory(registrar, loop.time)
    service = QueueService(engine, server.manager, phones, prompts, recorder=services.recorder, hub=hub,
                           from_host=cfg.sip.advertised_host or cfg.sip.host, base_dir=cfg.base_dir, db=server.db)
    services.queue_handoff = service
    control = EngineAgentControl(service, services.recorder)
    wallboard = EngineWallboard(service)
    server.manager.app = FeatureCodeApplication(server.manager.app, control, phones, prompts)
    service.start()
    server.extras.update({"routing_engine": engine, "queue_service": service, "agent_control": control,
                          "wallboard": wallboard, "registrar": registrar, "phone_credentials": creds})
    log.info("routing ready: %d queues, %d agents, %d phone credentials", len(config.queues),
             len(config.agents), len(creds.extensions()))
    return service
