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
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from ivr.agents import AgentPhoneError, PhoneDirectory
from ivr.calls import Call, CallerHungUp, Leg, OriginateFailed
from ivr.flow import actions as A
from ivr.media.audio import load_prompt
from ivr.media.bridge import Bridge
from ivr.voicemail import VoicemailBox
from routing.engine import RoutingEngine
from routing.errors import OfferNotPending, RoutingError
from routing.events import (AgentStateChanged, Announce, CallAbandoned, CallAnswered, CallEnded, CallEndedBy,
                            CallLeftQueue, CallQueued, CancelOffer, ConsultEnded, Offer,
                            OfferFailure, Overflow, PlaceCallback, RoutingEvent)

from .state import _Connected, _OfferTask, _Talk, _Waiter, _utc
from .texts import _TEXT
from .callbacks import CallbackMixin
from .transfers import TransferMixin
from .waiting import WaitingMixin

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MOH = REPO_ROOT / "audio_fixtures" / "moh" / "gentle_tones.wav"
ORIGINATE_GRACE = 5.0          # originate waits longer than the engine's ring timeout: the engine decides RONA
DEFAULT_EXTRA_LEVEL = 5        # minimum level for a skill the IVR adds by name (e.g. language_en)


class QueueService(WaitingMixin, CallbackMixin, TransferMixin):
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
        self._to_survey: set[str] = set()             # calls an agent handed to the post-call survey
        self.voicemail = VoicemailBox(self.base_dir / "var" / "voicemail", db=db, wall_clock=wall_clock)

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
        if call.id in self._to_survey:
            self._to_survey.discard(call.id)
            context = {**context, "survey_requested": True}
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

    def _context_of(self, call_id: str) -> dict:
        try:
            return dict(self.engine.call(call_id).context)
        except RoutingError:
            return {}

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

    async def _record(self, step) -> None:
        if self.recorder is None:
            return
        try:
            await step(self.recorder)
        except Exception:
            log.exception("callback record step failed")

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
