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
from ivr.errors import IvrError
from ivr.flow import actions as A
from ivr.media.audio import load_prompt
from ivr.media.bridge import Bridge
from ivr.voicemail import VoicemailBox
from routing.calls import consult_id
from routing.engine import RoutingEngine
from routing.errors import (AgentUnavailable, OfferNotPending, RoutingError, UnknownAgent, UnknownCall,
                            UnknownQueue)
from routing.events import (AgentStateChanged, Announce, AnnouncementKind, CallAbandoned, CallAnswered,
                            CallEnded, CallEndedBy, CallLeftQueue, CallQueued, CancelOffer, ConsultEnded, Offer,
                            OfferFailure, Overflow, OverflowKind, PlaceCallback, RoutingEvent)

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
        "voicemail": "Nessun operatore disponibile. Lasci un messaggio dopo il segnale acustico; "
                     "per terminare, riagganci o resti in silenzio.",
        "voicemail_thanks": "Grazie, il suo messaggio è stato registrato. La richiameremo. Arrivederci.",
        "transferring": "Attenda in linea, la stiamo trasferendo.",
        "voicemail_key": "Per lasciare un messaggio invece di attendere, prema {k}.",
    },
    "en": {
        "position": "You are number {n} in the queue.",
        "ewt": "The estimated wait is about {m} minutes.",
        "ewt_short": "The estimated wait is less than a minute.",
        "comfort": "All our agents are busy. Please stay on the line.",
        "offer_callback": "To be called back on the number you are calling from, keeping your place, press 1.",
        "callback_ok": "Thank you, we will call you back as soon as an agent is free. Goodbye.",
        "goodbye": "We cannot take your call right now. Please call again later. Goodbye.",
        "voicemail": "No agent is available. Please leave a message after the tone; to finish, hang up or "
                     "stay silent.",
        "voicemail_thanks": "Thank you, your message has been recorded. We will call you back. Goodbye.",
        "transferring": "Please hold, we are transferring your call.",
        "voicemail_key": "To leave a message instead of waiting, press {k}.",
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


class TransferRefused(IvrError):
    """A transfer or consultation the agent asked for cannot be done; ``status`` is the HTTP answer and
    ``sip_status`` the sipfrag status reported to a phone that sent REFER."""

    def __init__(self, status: int, message: str, sip_status: int = 403):
        super().__init__(message)
        self.status = status
        self.sip_status = sip_status


@dataclass(slots=True)
class _VoicemailKey:
    """The caller pressed the queue's voicemail key while waiting."""


@dataclass(slots=True)
class _Consult:
    target: dict
    agent_id: str | None = None
    leg: Leg | None = None
    bridge: Bridge | None = None


@dataclass(slots=True)
class _Talk:
    """The conversation of one caller: the agent on the line, and a consultation while the caller holds."""

    conn: _Connected
    consult: _Consult | None = None
    moh: asyncio.Task | None = None


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
    context: dict = field(default_factory=dict)
    commands: asyncio.Queue = field(default_factory=asyncio.Queue)   # transfer steps for the talk loop
    talk: _Talk | None = None


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
        self._consults: dict[str, str] = {}          # consultation id -> the caller's call id
        self.voicemail = VoicemailBox(self.base_dir / "var" / "voicemail", db=db, wall_clock=wall_clock)

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
        elif isinstance(act, ConsultEnded):
            self._consults.pop(act.consult_id, None)
            if act.agent_id:
                self._notify("clear", act.agent_id, act.call_id)      # the consulted agent's pop goes away
            w = self._waiters.get(act.call_id)
            if w is not None:
                w.commands.put_nowait(("consult_ended", act.reason))
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
        w.context = context
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

    async def _talk(self, w: _Waiter, conn: _Connected) -> bool:
        """Caller and agent bridged until one hangs up (True: the other is hung up and the agent wraps up) or
        the agent transfers the call blind (False: the caller is back in routing, the agent in wrap-up).

        Transfer steps arrive on ``w.commands`` after the engine has agreed to them (``transfer``,
        ``consult``...); this loop only moves the audio: a consultation puts the caller on music on hold and
        bridges the agent with the consulted agent; "completed" bridges the caller with the consulted agent;
        "consult_ended" (cancel, no answer, busy) bridges the caller back with the agent."""
        call = w.call
        t = _Talk(conn)
        w.talk = t
        self._bridge_caller(call, conn)
        await self._record_answer(call.id, conn.agent_id)
        caller_end = asyncio.ensure_future(call.leg.wait_ended())
        transferred = False
        try:
            while True:
                agent_end = asyncio.ensure_future(t.conn.leg.wait_ended())
                cmd = asyncio.ensure_future(w.commands.get())
                cons_end = None
                waits = {caller_end, agent_end, cmd}
                if t.consult is not None and t.consult.leg is not None:
                    cons_end = asyncio.ensure_future(t.consult.leg.wait_ended())
                    waits.add(cons_end)
                try:
                    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for f in (agent_end, cmd, cons_end):
                        if f is not None and not f.done():
                            f.cancel()
                if caller_end in done:
                    break
                if cmd in done:
                    if await self._talk_step(w, t, cmd.result()):
                        transferred = True
                        break
                    continue
                if cons_end is not None and cons_end in done:      # the consulted agent hung up
                    with contextlib.suppress(RoutingError):
                        self.drive(lambda now: self.engine.consult_cancel(call.id, now=now, reason="hangup"))
                    await self._consult_over(w, t)
                    self._notify("transfer_event", t.conn.agent_id, {"event": "consult_ended", "call_id": call.id,
                                                                    "reason": "hangup"})
                    continue
                if agent_end in done:
                    if not w.commands.empty():         # a transfer step came first: carry it out
                        continue
                    if t.consult is not None and t.consult.leg is not None and not t.consult.leg.ended:
                        try:        # hanging up during a consultation hands the caller over (attended)
                            self.drive(lambda now: self.engine.consult_complete(call.id, now=now))
                        except RoutingError as exc:
                            log.info("call %s: consultation not completed on hang-up: %s", call.id, exc)
                        else:
                            await self._hand_over(w, t)
                            continue
                    break
        finally:
            caller_end.cancel()
            w.talk = None
            if t.consult is not None:
                with contextlib.suppress(RoutingError):
                    self.drive(lambda now: self.engine.consult_cancel(call.id, now=now, reason="call_ended"))
                await self._consult_over(w, t, rebridge=False)
            if call.bridge is not None:
                await call.bridge.stop()
                call.bridge = None
            if not transferred:
                await self._talk_ended(w, t.conn)
        return not transferred

    async def _talk_ended(self, w: _Waiter, conn: _Connected) -> None:
        call, leg = w.call, conn.leg
        by = CallEndedBy.CALLER if call.leg.ended else CallEndedBy.AGENT
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

    def _bridge_caller(self, call: Call, conn: _Connected) -> None:
        call.agent_leg = conn.leg
        bridge = Bridge(call.session, conn.leg.session)
        bridge.start()
        call.bridge = bridge
        self._notify("answered", conn.agent_id, call.id)

    async def _record_answer(self, call_id: str, agent_id: str) -> None:
        if self.recorder is not None:
            try:
                await self.recorder.answered(call_id, agent_id)
            except Exception:
                log.exception("call %s: answer not recorded", call_id)

    async def _talk_step(self, w: _Waiter, t: _Talk, step: tuple) -> bool:
        """Carry out one transfer step on the media; True when the caller left this conversation."""
        call, kind = w.call, step[0]
        if kind == "blind":
            if call.bridge is not None:
                await call.bridge.stop()
                call.bridge = None
            t.conn.leg.hangup()
            self._notify("ended", t.conn.agent_id, call.id)
            if w.connected is t.conn:          # not the next agent, should they have answered already
                w.connected = None
            with contextlib.suppress(CallerHungUp):
                await self._say(w, "transferring")
            return True
        if kind == "consult":
            if call.bridge is not None:
                await call.bridge.stop()
                call.bridge = None
            t.consult = _Consult(step[1])
            t.moh = self._spawn(self._hold_music(w), f"hold {call.id}")
            self._notify("transfer_event", t.conn.agent_id, {"event": "consult_ringing", "call_id": call.id,
                                                            **step[1]})
        elif kind == "consult_answered":
            _, leg, agent_id = step
            if t.consult is None or t.conn.leg.ended:
                leg.hangup()
                with contextlib.suppress(RoutingError):
                    self.drive(lambda now: self.engine.consult_cancel(call.id, now=now, reason="gone"))
                return False
            t.consult.leg, t.consult.agent_id = leg, agent_id
            t.consult.bridge = Bridge(t.conn.leg.session, leg.session)
            t.consult.bridge.start()
            self._notify("answered", agent_id, call.id)
            self._notify("transfer_event", t.conn.agent_id, {"event": "consult_answered", "call_id": call.id,
                                                            "agent_id": agent_id})
        elif kind == "consult_ended":
            if t.consult is not None:
                await self._consult_over(w, t)
                self._notify("transfer_event", t.conn.agent_id, {"event": "consult_ended", "call_id": call.id,
                                                                "reason": step[1]})
        elif kind == "completed":
            if t.consult is not None and t.consult.leg is not None:
                await self._hand_over(w, t)
        return False

    async def _hold_music(self, w: _Waiter) -> None:
        moh = await self._music(w.queue)
        while not w.call.leg.ended:
            await w.call.session.play(moh)

    async def _stop_music(self, call: Call, t: _Talk) -> None:
        if t.moh is None:
            return
        task, t.moh = t.moh, None
        task.cancel()
        if not call.leg.ended and call.leg.session is not None:
            call.leg.session.stop_playback()
        with contextlib.suppress(BaseException):
            await task

    async def _consult_over(self, w: _Waiter, t: _Talk, rebridge: bool = True) -> None:
        """The consultation ended without a hand-over: back to the caller (music stops, bridge again)."""
        cons, t.consult = t.consult, None
        if cons is None:
            return
        if cons.bridge is not None:
            await cons.bridge.stop()
        if cons.leg is not None:
            cons.leg.hangup()
        if cons.agent_id is not None:
            self._notify("clear", cons.agent_id, w.call.id)
        await self._stop_music(w.call, t)
        if rebridge and not w.call.leg.ended and not t.conn.leg.ended:
            self._bridge_caller(w.call, t.conn)

    async def _hand_over(self, w: _Waiter, t: _Talk) -> None:
        """The engine completed the consultation: the consulted agent takes the caller, the first hangs up."""
        call, cons = w.call, t.consult
        assert cons is not None and cons.leg is not None and cons.agent_id is not None
        t.consult = None
        self._consults.pop(consult_id(call.id), None)
        if cons.bridge is not None:
            await cons.bridge.stop()
        await self._stop_music(call, t)
        old, t.conn = t.conn, _Connected(cons.leg, cons.agent_id)
        w.connected = t.conn
        old.leg.hangup()
        self._notify("ended", old.agent_id, call.id)
        self._bridge_caller(call, t.conn)
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await self.recorder.transferred(call.id, f"agent:{cons.agent_id}")
        await self._record_answer(call.id, cons.agent_id)

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
        parent = self._consults.get(offer.call_id)
        self._notify("ringing", offer.agent_id, parent or offer.call_id, dict(offer.context))
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
        if parent is not None:
            self._consult_answered(parent, offer, ot, leg)
            return
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

    def _consult_answered(self, parent: str, offer: Offer, ot: _OfferTask, leg: Leg) -> None:
        w = self._waiters.get(parent)
        if w is None or w.talk is None or w.call.leg.ended or ot.cancelled_by_engine \
                or self._consults.get(offer.call_id) != parent:
            leg.hangup()
            with contextlib.suppress(RoutingError):
                self.drive(lambda now: self.engine.consult_cancel(parent, now=now, reason="gone"))
            return
        try:
            self.drive(lambda now: self.engine.offer_answered(offer.call_id, offer.agent_id, now=now))
        except OfferNotPending as exc:
            log.info("consulted agent %s answered too late: %s", offer.agent_id, exc)
            leg.hangup()
            return
        w.commands.put_nowait(("consult_answered", leg, offer.agent_id))

    # ------------------------------------------------------------------------------------------ transfers
    def call_of_agent(self, agent_id: str) -> str | None:
        """The call the agent is talking on (as the first agent of a conversation), if any."""
        for call_id, w in self._waiters.items():
            if w.talk is not None and w.talk.conn.agent_id == agent_id:
                return call_id
        return None

    def _mine(self, call_id: str | None, agent_id: str) -> _Waiter:
        call_id = call_id or self.call_of_agent(agent_id)
        w = self._waiters.get(call_id) if call_id else None
        if w is None or w.talk is None or w.call.leg.ended:
            raise TransferRefused(404, f"agent {agent_id} has no call in conversation"
                                  + (f" with id {call_id}" if call_id else ""), 481)
        if w.talk.conn.agent_id != agent_id:
            raise TransferRefused(403, f"call {call_id} is not yours to transfer", 403)
        return w

    @staticmethod
    def _refused(exc: RoutingError) -> TransferRefused:
        if isinstance(exc, (UnknownQueue, UnknownAgent, UnknownCall)):
            return TransferRefused(404, str(exc), 404)
        if isinstance(exc, AgentUnavailable):
            return TransferRefused(409, str(exc), 480)
        return TransferRefused(409, str(exc), 403)

    def _target(self, to_queue: str | None, to_agent: str | None, note: str | None) -> dict:
        if (to_queue is None) == (to_agent is None):
            raise TransferRefused(400, "name exactly one of to_queue or to_agent", 400)
        if note is not None and (not isinstance(note, str) or len(note) > 1000):
            raise TransferRefused(400, "note must be text of at most 1000 characters", 400)
        return {"to_queue": to_queue, "to_agent": to_agent, "note": note or None}

    def start_transfer(self, call_id: str | None, by_agent: str, *, to_queue: str | None = None,
                       to_agent: str | None = None, note: str | None = None) -> dict:
        """Blind transfer, synchronous part: the engine moves the call (the agent goes to wrap-up, the
        target is offered it) and the talk loop is told to unbridge and hang up the agent's leg. Raises
        TransferRefused, leaving everything as it was."""
        target = self._target(to_queue, to_agent, note)
        w = self._mine(call_id, by_agent)
        call_id = w.call.id
        if w.talk is not None and w.talk.consult is not None:
            raise TransferRefused(409, "a consultation is in progress: complete or cancel it first", 491)
        ctx: dict = {"queue": to_queue} if to_queue else {}
        if target["note"]:
            notes = self._context_of(call_id).get("notes")
            notes = list(notes) if isinstance(notes, list) else ([notes] if notes else [])
            ctx["notes"] = notes + [{"by": by_agent, "note": target["note"]}]
        try:
            self.drive(lambda now: self.engine.transfer(call_id, now=now, to_queue=to_queue, to_agent=to_agent,
                                                        context=ctx or None, note=target["note"]))
        except RoutingError as exc:
            raise self._refused(exc) from None
        if to_queue is not None:
            w.queue = to_queue
        w.commands.put_nowait(("blind", target))
        self._notify("transfer_event", by_agent, {"event": "transferred", "call_id": call_id, **target})
        return {"call_id": call_id, "mode": "blind", **target}

    async def _record_transfer(self, call_id: str, target: dict) -> None:
        if self.recorder is None:
            return
        try:
            dest = f"queue:{target['to_queue']}" if target.get("to_queue") else f"agent:{target['to_agent']}"
            await self.recorder.transferred(call_id, dest)
            if target.get("to_queue"):
                await self.recorder.queued(call_id, target["to_queue"])
        except Exception:
            log.exception("call %s: transfer not recorded", call_id)

    async def transfer(self, call_id: str | None, by_agent: str, *, to_queue: str | None = None,
                       to_agent: str | None = None, note: str | None = None) -> dict:
        """Blind transfer of ``by_agent``'s call (``call_id`` None: their current call) to a queue or an agent."""
        result = self.start_transfer(call_id, by_agent, to_queue=to_queue, to_agent=to_agent, note=note)
        await self._record_transfer(result["call_id"], result)
        return result

    async def consult(self, call_id: str | None, by_agent: str, *, to_queue: str | None = None,
                      to_agent: str | None = None, note: str | None = None) -> dict:
        """Warm transfer: the caller holds (music), the target agent's phone rings, then agent and target talk."""
        target = self._target(to_queue, to_agent, note)
        w = self._mine(call_id, by_agent)
        call_id = w.call.id
        cid = consult_id(call_id)
        self._consults[cid] = call_id
        try:
            self.drive(lambda now: self.engine.consult(call_id, now=now, to_queue=to_queue, to_agent=to_agent,
                                                       note=target["note"]))
        except RoutingError as exc:
            if self._consults.get(cid) == call_id and cid not in self._offers:
                self._consults.pop(cid, None)
            raise self._refused(exc) from None
        w.commands.put_nowait(("consult", target))
        return {"call_id": call_id, "mode": "consult", "state": "ringing", **target}

    async def consult_complete(self, call_id: str | None, by_agent: str) -> dict:
        w = self._mine(call_id, by_agent)
        call_id = w.call.id
        cons = w.talk.consult if w.talk is not None else None
        if cons is None:
            raise TransferRefused(409, "there is no consultation to complete")
        try:
            self.drive(lambda now: self.engine.consult_complete(call_id, now=now))
        except RoutingError as exc:
            raise self._refused(exc) from None
        self._consults.pop(consult_id(call_id), None)
        w.commands.put_nowait(("completed",))
        return {"call_id": call_id, "mode": "consult", "state": "completed", "to_agent": cons.agent_id}

    async def consult_cancel(self, call_id: str | None, by_agent: str) -> dict:
        w = self._mine(call_id, by_agent)
        call_id = w.call.id
        if w.talk is None or w.talk.consult is None:
            raise TransferRefused(409, "there is no consultation to cancel")
        self.drive(lambda now: self.engine.consult_cancel(call_id, now=now, reason="cancelled"))
        return {"call_id": call_id, "mode": "consult", "state": "cancelled"}

    def on_refer(self, leg: Leg, ev: Any) -> None:
        """REFER from an agent's phone in the dialog of its leg: blind transfer to the queue named by the
        Refer-To user part, or to the agent whose extension (or id) it is. NOTIFY 200 goes before the BYE."""
        notify = self.manager.sip.notify_refer
        w = next((w for w in self._waiters.values() if w.talk is not None and w.talk.conn.leg is leg), None)
        if w is None:
            notify(leg.handle, 603, "Declined")
            return
        user = (ev.user or "").strip()
        to_queue = to_agent = None
        if user in self.engine.config.queues:
            to_queue = user
        else:
            for a in self.engine.agents():
                if user and user in (a.id, a.profile.phone.extension):
                    to_agent = a.id
                    break
        if to_queue is None and to_agent is None:
            log.info("REFER from agent %s to unknown target %r", w.talk.conn.agent_id, ev.refer_to)
            notify(leg.handle, 404, "Not Found")
            return
        try:
            result = self.start_transfer(w.call.id, w.talk.conn.agent_id, to_queue=to_queue, to_agent=to_agent,
                                         note="transferred from the agent's phone")
        except TransferRefused as exc:
            log.info("REFER from agent %s refused: %s", w.talk.conn.agent_id if w.talk else "?", exc)
            notify(leg.handle, exc.sip_status)
            return
        notify(leg.handle, 200, "OK")
        self._spawn(self._record_transfer(result["call_id"], result), f"record transfer {result['call_id']}")

    def transfer_targets(self) -> dict:
        """What the desktop's picker offers: queues and agents with their state."""
        now = self.now()
        queues = []
        for name, qc in self.engine.config.queues.items():
            snap = self.engine.queue_snapshot(name, now=now)
            queues.append({"name": name, "description": qc.description, "waiting": snap.waiting,
                           "available": snap.available, "staffed": snap.staffed})
        agents = [{"id": a.id, "name": a.profile.name, "state": a.state.value,
                   "extension": a.profile.phone.extension} for a in self.engine.agents()]
        return {"queues": queues, "agents": agents}

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
    server.manager.on_refer = service.on_refer
    control = EngineAgentControl(service, services.recorder)
    wallboard = EngineWallboard(service)
    server.manager.app = FeatureCodeApplication(server.manager.app, control, phones, prompts)
    service.start()
    server.extras.update({"routing_engine": engine, "queue_service": service, "agent_control": control,
                          "wallboard": wallboard, "registrar": registrar, "phone_credentials": creds})
    log.info("routing ready: %d queues, %d agents, %d phone credentials", len(config.queues),
             len(config.agents), len(creds.extensions()))
    return service
