"""The routing engine: sans-IO, events and the current time in, actions and events out.

Invariant kept after every public call: no AVAILABLE agent is eligible for a WAITING call's current
requirement. So a new call only needs the head of its requirement's agent pool, and a freed agent only needs
the heads of the call buckets it qualifies for. An agent holds at most one call (``Agent.call_id``), and the
state machine only lets AVAILABLE agents be offered, so no agent is ever offered two calls.

Priority with aging: effective = base + waited * aging_per_second. Within a queue the aging rate is constant,
so ``score = base - arrived_at * aging`` orders calls once and for all; a call can be overtaken only by calls
that arrived less than (their base - its base) / aging seconds after it, which bounds every wait.

The engine is split by concern: ``matching`` (pools, buckets, offers), ``transfers``, ``deadlines`` (timers);
this module holds the public calls, agent states and queries.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import count
from typing import Any, Iterable, Mapping

from routing.calls import CallEntry, CallState, consult_id
from routing.config import RoutingConfig
from routing.errors import BadRequest, DuplicateCall, IllegalTransition, UnknownAgent, UnknownCall, UnknownQueue
from routing.events import (Announce, AnnouncementKind, CallAbandoned, CallAnswered, CallbackScheduled, CallEnded,
                            CallEndedBy, CallLeftQueue, CallQueued, CancelOffer,
                            OfferFailure, RoutingEvent, RoutingStepApplied)
from routing.ewt import QueueStats, erlang_c_asa, position_ewt
from routing.index import AgentPool, SkillIndex, SortedIndex
from routing.model import STAFFED, Agent, AgentProfile, AgentState, Phone, Requirement, check_levels
from routing.store import InMemoryRoutingStore, RoutingStateStore
from routing.strategies import StrategyRegistry, default_registry
from routing.timers import TimerKind, TimerQueue

from .deadlines import DeadlineMixin
from .matching import MatchingMixin, _Bucket
from .transfers import TransferMixin

log = logging.getLogger(__name__)
S = AgentState
Actions = list[RoutingEvent]


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """What the wallboard shows for one queue."""

    queue: str
    waiting: int
    callbacks_waiting: int
    longest_wait: float
    offered: int
    answered: int
    answered_within_sl: int
    service_level: float | None
    abandoned: int
    avg_abandon_wait: float | None
    overflowed: int
    staffed: int
    available: int
    avg_handle_seconds: float
    ewt_seconds: float


def _frozen_skills(skills: Mapping[str, int] | None, who: str) -> tuple[tuple[str, int], ...] | None:
    if skills is None:
        return None
    return tuple(sorted(check_levels(skills, who).items()))


class RoutingEngine(MatchingMixin, TransferMixin, DeadlineMixin):
    def __init__(self, config: RoutingConfig, strategy_registry: StrategyRegistry | None = None,
                 store: RoutingStateStore | None = None, *, load_roster: bool = True) -> None:
        self.config = config
        self.strategies = strategy_registry or default_registry
        self.store: RoutingStateStore = store if store is not None else InMemoryRoutingStore()
        for q in config.queues:
            self.strategies.get(config.strategy(q))      # fail at start, not on the first call
        self._agent_seq = count(1)
        self._call_seq = count(1)
        self._offer_seq = count(1)
        self._timers = TimerQueue(self._timer_live)
        self._skills = SkillIndex()
        self._pools: dict[tuple[Requirement, str], AgentPool] = {}
        self._pools_gen = 0
        self._buckets: dict[tuple[str, Requirement], _Bucket] = {}
        self._by_req: dict[Requirement, list[_Bucket]] = {}
        self._queue_index: dict[str, SortedIndex] = {q: SortedIndex() for q in config.queues}
        self._personal: dict[str, SortedIndex] = {}
        self._req_cache: dict[tuple, Requirement] = {}
        self._base_req = {q: self._requirement(q, 0, None, ()) for q in config.queues}
        self._staffed = {q: 0 for q in config.queues}
        self.stats = {q: QueueStats(q, qc.service_level.seconds) for q, qc in config.queues.items()}
        existing = list(self.store.agents())
        if existing or list(self.store.calls()):
            self._rebuild(existing)
        elif load_roster:
            for a in config.agents:
                phone = Phone(extension=a.phone.extension, uri=a.phone.uri)
                self.add_agent(AgentProfile(a.id, a.name, phone, dict(a.skills)))

    def add_agent(self, profile: AgentProfile) -> None:
        """Add an agent (logged out) to the roster, e.g. from the CRM."""
        if self.store.get_agent(profile.id) is not None:
            raise BadRequest(f"agent {profile.id!r} already exists: use update_agent to change it")
        self._check_skills(profile.skills, f"agent {profile.id!r}")
        self.store.save_agent(Agent(profile, next(self._agent_seq)))

    def update_agent(self, profile: AgentProfile, *, now: float) -> Actions:
        """Change phone or skills; a logged-in agent is re-indexed at once (an available one may get a call)."""
        agent = self._agent(profile.id)
        self._check_skills(profile.skills, f"agent {profile.id!r}")
        acts: Actions = []
        logged_in = agent.state is not S.OFFLINE
        staffed = agent.state in STAFFED
        if staffed:
            self._staffed_change(agent, -1)
        if logged_in:
            self._leave_pools(agent)
            self._skills.remove(agent)
        agent.profile = profile
        agent.pools_gen = -1
        if logged_in:
            self._skills.add(agent)
        if staffed:
            self._staffed_change(agent, +1)
        if agent.state is S.AVAILABLE:
            self._place_available(agent, now, acts)
        self.store.save_agent(agent)
        return acts

    def agent(self, agent_id: str) -> Agent:
        return self._agent(agent_id)

    def agents(self) -> Iterable[Agent]:
        return self.store.agents()

    def agent_login(self, agent_id: str, *, now: float, available: bool = True,
                    pause_reason: str = "login") -> Actions:
        agent = self._agent(agent_id)
        if agent.state is not S.OFFLINE:
            raise IllegalTransition(agent_id, agent.state.value, "logged in", "the agent is already logged in")
        acts: Actions = []
        self._skills.add(agent)
        if available:
            self._set_available(agent, now, acts)
        else:
            self._transition(agent, S.PAUSED, now, acts, reason=pause_reason)
        return acts

    def agent_available(self, agent_id: str, *, now: float) -> Actions:
        """Ready for calls: from pause, not-ready, or ending wrap-up early."""
        agent = self._agent(agent_id)
        if agent.state is S.OFFLINE:
            raise IllegalTransition(agent_id, agent.state.value, S.AVAILABLE.value, "log in first (agent_login)")
        if agent.state in (S.RESERVED, S.ON_CALL):
            raise IllegalTransition(agent_id, agent.state.value, S.AVAILABLE.value,
                                    "the agent has a call; it becomes available after the call and wrap-up")
        acts: Actions = []
        agent.pending_pause = None
        self._set_available(agent, now, acts)
        return acts

    def agent_pause(self, agent_id: str, reason: str, *, now: float) -> Actions:
        """Pause with a reason code; asked during a call (ringing or talking) it applies when the call ends."""
        if not reason or not isinstance(reason, str):
            raise BadRequest("a pause needs a reason code (e.g. 'break', 'lunch', 'training')")
        agent = self._agent(agent_id)
        if agent.state is S.OFFLINE:
            raise IllegalTransition(agent_id, agent.state.value, S.PAUSED.value,
                                    "log in first (agent_login with available=False logs in paused)")
        acts: Actions = []
        if agent.state in (S.RESERVED, S.ON_CALL):
            agent.pending_pause = reason
            self.store.save_agent(agent)
            return acts
        if agent.state is S.AVAILABLE:
            self._leave_pools(agent)
        self._transition(agent, S.PAUSED, now, acts, reason=reason)
        return acts

    def agent_logout(self, agent_id: str, *, now: float) -> Actions:
        agent = self._agent(agent_id)
        if agent.state is S.OFFLINE:
            return []
        if agent.state in (S.RESERVED, S.ON_CALL):
            raise IllegalTransition(agent_id, agent.state.value, S.OFFLINE.value,
                                    "end or reject the call first (or let reconcile() close a dead dialog)")
        acts: Actions = []
        if agent.state is S.AVAILABLE:
            self._leave_pools(agent)
        self._transition(agent, S.OFFLINE, now, acts)
        self._skills.remove(agent)
        personal = self._personal.pop(agent_id, None)
        if personal:
            for call_id in list(personal):
                call = self._call(call_id)
                self._queue_index[call.queue].discard(call_id)
                call.target_agent = None
                self._add_waiting(call)
                self._match_call(call, now, acts)
        return acts

    def enqueue(self, call_id: str, queue: str, *, now: float, priority: float | None = None,
                customer_segment: str | None = None, required_skills: Mapping[str, int] | None = None,
                extra_skills: Mapping[str, int] | None = None, context: Mapping[str, Any] | None = None,
                critical: bool = False) -> Actions:
        """A call asks for an agent of ``queue``. ``required_skills`` replaces the queue's skills,
        ``extra_skills`` adds to them (e.g. language_en); ``critical`` or context['critical'] (IVR flag) and
        the customer segment raise the priority (see defaults.segment_boost)."""
        if self.store.get_call(call_id) is not None:
            raise DuplicateCall(call_id)
        self._queue_cfg(queue)
        req = _frozen_skills(required_skills, f"call {call_id!r} required_skills")
        extra = _frozen_skills(extra_skills, f"call {call_id!r} extra_skills") or ()
        self._check_skills(dict(req or ()) | dict(extra), f"call {call_id!r}")
        ctx = dict(context or {})
        call = CallEntry(call_id=call_id, queue=queue, seq=next(self._call_seq), arrived_at=now,
                         queue_entered_at=now, base_priority=0.0, score=0.0, segment=customer_segment,
                         critical=bool(critical or ctx.get("critical")), explicit_priority=priority,
                         required_skills=req, extra_skills=extra, context=ctx)
        self._set_priority(call)
        self.store.save_call(call)
        acts: Actions = []
        self._enter_queue(call, now, acts, announce=True)
        return acts

    def offer_answered(self, call_id: str, agent_id: str, *, now: float) -> Actions:
        """The agent picked up (for a callback: the agent picked up and the customer is being dialled)."""
        call, agent = self._pending_offer(call_id, agent_id)
        acts: Actions = []
        call.state = CallState.CONNECTED
        call.answered_at = now
        call.offer_epoch += 1
        call.epoch += 1          # steps, max wait and announcements end with the wait
        if call.consult_of is not None:
            self._transition(agent, S.ON_CALL, now, acts, call_id=call_id)
            self.store.save_call(call)
            return acts
        waited = now - call.queue_entered_at
        call.waited_seconds = waited
        qc = self.config.queues[call.queue]
        within = waited <= qc.service_level.seconds
        st = self.stats[call.queue]
        st.answered += 1
        st.answered_within_sl += within
        st.recent_wait.append(waited)
        self._transition(agent, S.ON_CALL, now, acts, call_id=call_id)
        agent.calls_handled += 1
        self.store.save_call(call)
        acts.append(CallAnswered(now, call_id, call.queue, agent_id, waited, within))
        return acts

    def offer_failed(self, call_id: str, agent_id: str, reason: OfferFailure | str, *, now: float) -> Actions:
        """Ring-no-answer, busy or failed: the agent goes NOT_READY and the call goes back to its place."""
        reason = OfferFailure(reason)
        call = self.store.get_call(call_id)
        if call is None or call.state is not CallState.OFFERED or call.agent_id != agent_id:
            log.debug("ignoring late offer_failed(%s, %s): offer no longer pending", call_id, agent_id)
            return []
        acts: Actions = []
        self._fail_offer(call, self._agent(agent_id), reason.value, now, acts)
        return acts

    def call_ended(self, call_id: str, *, now: float, by: CallEndedBy | str = CallEndedBy.CALLER) -> Actions:
        """The connected call ended (BYE from either side): the agent goes to wrap-up. For a call still in line
        or ringing this is an abandon."""
        by = CallEndedBy(by)
        call = self._call(call_id)
        if call.state is not CallState.CONNECTED:
            if call.is_callback and call.state is CallState.WAITING:
                return []
            return self.caller_abandoned(call_id, now=now)
        acts: Actions = []
        self._end_connected(call, now, by.value, acts)
        self._drop_consult(call_id, now, "call_ended", acts)
        return acts

    def caller_abandoned(self, call_id: str, *, now: float) -> Actions:
        """The caller hung up while waiting or while an agent was ringing; the wait is recorded.
        A callback waiting in line has no caller on the line, so this is ignored for it."""
        call = self.store.get_call(call_id)
        if call is None:
            return []
        acts: Actions = []
        if call.state is CallState.CONNECTED:
            self._end_connected(call, now, CallEndedBy.CALLER.value, acts)
            self._drop_consult(call_id, now, "call_ended", acts)
            return acts
        if call.state is CallState.WAITING and call.is_callback:
            return []
        self._abandon(call, now, "caller_hangup", acts)
        return acts

    def leave_queue(self, call_id: str, *, now: float, reason: str) -> Actions:
        """The caller leaves the line by choice (a voicemail key, or voicemail when nobody is logged in): not an
        abandon, like leaving at max wait (CallLeftQueue). A ringing agent is cancelled and free again."""
        call = self._call(call_id)
        if call.state is CallState.CONNECTED or call.is_callback or call.consult_of is not None:
            raise BadRequest(f"call {call_id!r} is {call.state.value}: only a caller waiting in line can leave it")
        acts: Actions = []
        agent = self._agent(call.agent_id) if call.state is CallState.OFFERED and call.agent_id else None
        self._forget(call)
        if agent is not None and agent.call_id == call_id:
            acts.append(CancelOffer(now, call_id, agent.id, reason))
            if agent.state is S.RESERVED:
                self._set_available(agent, now, acts)
        acts.append(CallLeftQueue(now, call_id, call.queue, now - call.queue_entered_at, reason))
        return acts

    def cancel_callback(self, call_id: str, *, now: float) -> Actions:
        call = self._call(call_id)
        if not call.is_callback or call.state is not CallState.WAITING:
            raise BadRequest(f"call {call_id!r} is not a callback waiting in line")
        acts: Actions = []
        self._abandon(call, now, "callback_cancelled", acts)
        return acts

    def request_callback(self, call_id: str, number: str, *, now: float) -> Actions:
        """The caller leaves a number and hangs up; they keep their place and are called back when reached."""
        call = self._call(call_id)
        if call.state is not CallState.WAITING:
            raise BadRequest(f"call {call_id!r} is {call.state.value}: only a waiting call can become a callback")
        if not number or not isinstance(number, str):
            raise BadRequest("a callback needs the number to call")
        call.callback_number = number
        self.stats[call.queue].callbacks_requested += 1
        call.epoch += 1            # no more announcements or max-wait for a caller who left the line
        self.store.save_call(call)
        return [CallbackScheduled(now, call_id, call.queue, number, self.position(call_id))]

    def callback_failed(self, call_id: str, *, now: float, reason: str = "no_answer") -> Actions:
        """The customer did not answer the callback: the agent is freed (not their fault) and the callback
        waits ``callback.retry_seconds`` at its place, until ``callback.max_attempts``."""
        call = self._call(call_id)
        if not call.is_callback or call.state is CallState.WAITING:
            raise BadRequest(f"call {call_id!r} is not a callback being placed")
        acts: Actions = []
        agent = self._agent(call.agent_id) if call.agent_id else None
        call.callback_attempts += 1
        cb = self.config.defaults.callback
        call.state = CallState.WAITING
        call.agent_id = None
        call.offer_epoch += 1
        if agent is not None and agent.call_id == call_id:
            if agent.state is S.ON_CALL:
                self._after_call(agent, call.queue, now, acts)
            elif agent.state is S.RESERVED:
                self._set_available(agent, now, acts)
        if call.callback_attempts >= cb.max_attempts:
            self._forget(call)
            acts.append(CallAbandoned(now, call_id, call.queue, now - call.queue_entered_at,
                                      f"callback_{reason}"))
            return acts
        call.callback_not_before = now + cb.retry_seconds
        call.epoch += 1
        self.store.save_call(call)
        self._timers.schedule(call.callback_not_before, TimerKind.CALLBACK_RETRY, call_id, (call.epoch,))
        return acts

    def reconcile(self, active_call_ids: Iterable[str], *, now: float) -> Actions:
        """Align with the SIP dialogs that really exist: agents ringing or talking on a call that is gone are
        freed (wrap-up after a call, available after a ring), and calls waiting without a dialog are dropped.
        Callbacks waiting in line have no dialog by design and are kept."""
        active = set(active_call_ids)
        active |= {consult_id(c) for c in list(active)}      # a consultation lives as long as its call
        acts: Actions = []
        for call in list(self.store.calls()):      # first, so that freed agents are not offered dead calls
            if call.state is CallState.WAITING and not call.is_callback and call.call_id not in active:
                self._abandon(call, now, "dialog_gone", acts)
        for agent in list(self.store.agents()):
            if agent.state not in (S.RESERVED, S.ON_CALL):
                continue
            call = self.store.get_call(agent.call_id) if agent.call_id else None
            if agent.call_id in active and call is not None and call.agent_id == agent.id:
                continue
            if call is not None and call.agent_id == agent.id:
                if call.state is CallState.CONNECTED:
                    self._end_connected(call, now, CallEndedBy.SYSTEM.value, acts)
                else:
                    self._abandon(call, now, "dialog_gone", acts)
                continue
            log.warning("agent %s was %s on unknown call %s: freeing", agent.id, agent.state.value, agent.call_id)
            if agent.state is S.ON_CALL:
                self._after_call(agent, None, now, acts)
            else:
                self._set_available(agent, now, acts, reason="reconciled")
        for call in list(self.store.calls()):
            if call.call_id in active or (call.is_callback and call.state is CallState.WAITING):
                continue
            if self.store.get_call(call.call_id) is None:
                continue
            if call.state is CallState.CONNECTED:
                self._end_connected(call, now, CallEndedBy.SYSTEM.value, acts)
            else:
                self._abandon(call, now, "dialog_gone", acts)
        return acts

    def get_timer(self) -> float | None:
        """When handle_timer should next be called (None: nothing scheduled)."""
        return self._timers.next_deadline()

    def handle_timer(self, now: float) -> Actions:
        acts: Actions = []
        while (t := self._timers.pop_due(now)) is not None:
            self._fire(t, now, acts)
        return acts

    def call(self, call_id: str) -> CallEntry:
        return self._call(call_id)

    def position(self, call_id: str) -> int:
        """1-based place in its queue's line (0 when not waiting)."""
        call = self._call(call_id)
        idx = self._queue_index[call.queue]
        return idx.rank(call_id) + 1 if call_id in idx else 0

    def estimated_wait(self, *, now: float, call_id: str | None = None, queue: str | None = None) -> float:
        """Seconds a waiting call (or a new caller of ``queue``) should still wait; ``math.inf`` when nobody
        who could take it is staffed."""
        if call_id is not None:
            call = self._call(call_id)
            q, pos = call.queue, self.position(call_id) or 1
        elif queue is not None:
            self._queue_cfg(queue)
            q, pos = queue, len(self._queue_index[queue]) + 1
        else:
            raise BadRequest("estimated_wait needs call_id or queue")
        st = self.stats[q]
        aht = st.avg_handle(self.config.defaults.handle_time_seconds) + self.config.wrap_up(q)
        staffed, available = self._staffed[q], self._available_for(q)
        est = position_ewt(pos, staffed, available, aht)
        if call_id is None:
            asa = erlang_c_asa(staffed, st.arrival_rate(now), aht)
            if math.isfinite(asa) and math.isfinite(est):
                est = max(est, asa)
            measured = st.avg_wait()
            if measured is not None and math.isfinite(est):
                # measured waits describe the recent past; a backlog in front of the caller outweighs them
                w = 1.0 / pos
                est = (1.0 - w) * est + w * measured
        return est

    def queue_snapshot(self, queue: str, *, now: float) -> QueueSnapshot:
        self._queue_cfg(queue)
        st = self.stats[queue]
        waiting = [self._call(c) for c in self._queue_index[queue]]
        longest = max((now - c.queue_entered_at for c in waiting if not c.is_callback), default=0.0)
        return QueueSnapshot(
            queue=queue, waiting=sum(1 for c in waiting if not c.is_callback),
            callbacks_waiting=sum(1 for c in waiting if c.is_callback), longest_wait=longest,
            offered=st.offered, answered=st.answered, answered_within_sl=st.answered_within_sl,
            service_level=st.service_level(), abandoned=st.abandoned,
            avg_abandon_wait=st.abandoned_wait_total / st.abandoned if st.abandoned else None,
            overflowed=st.overflowed, staffed=self._staffed[queue], available=self._available_for(queue),
            avg_handle_seconds=st.avg_handle(self.config.defaults.handle_time_seconds),
            ewt_seconds=self.estimated_wait(now=now, queue=queue))

    def waiting_calls(self, queue: str) -> list[str]:
        """Call ids of ``queue`` in line order (best first)."""
        self._queue_cfg(queue)
        return list(self._queue_index[queue])

    def _agent(self, agent_id: str) -> Agent:
        a = self.store.get_agent(agent_id)
        if a is None:
            raise UnknownAgent(agent_id)
        return a

    def _call(self, call_id: str) -> CallEntry:
        c = self.store.get_call(call_id)
        if c is None:
            raise UnknownCall(call_id)
        return c

    def _queue_cfg(self, queue: str):
        qc = self.config.queues.get(queue)
        if qc is None:
            raise UnknownQueue(queue, list(self.config.queues))
        return qc

    def _check_skills(self, skills: Mapping[str, int], who: str) -> None:
        unknown = set(skills) - set(self.config.skills)
        if unknown:
            raise BadRequest(f"{who}: unknown skills {sorted(unknown)}; declare them in queues.yaml 'skills'")

    def _transition(self, agent: Agent, new: AgentState, now: float, acts: Actions, reason: str | None = None,
                    call_id: str | None = None) -> None:
        old = agent.state
        ev = agent.transition(new, now, reason, call_id)
        if (old in STAFFED) != (new in STAFFED):
            self._staffed_change(agent, +1 if new in STAFFED else -1)
        self.store.save_agent(agent)
        acts.append(ev)

    def _staffed_change(self, agent: Agent, delta: int) -> None:
        for q, req in self._base_req.items():
            if req.accepts(agent.skills):
                self._staffed[q] += delta

    def _available_for(self, queue: str) -> int:
        pool = self._pools.get((self._base_req[queue], self.config.strategy(queue)))
        return len(pool) if pool is not None else 0

    def _step_to_now(self, call: CallEntry, now: float, acts: Actions) -> None:
        """Apply steps whose time has come but whose timer has not been handled yet."""
        steps = self.config.queues[call.queue].steps
        waited = now - call.queue_entered_at
        while call.step < len(steps) and steps[call.step].after <= waited:
            call.step += 1
            acts.append(RoutingStepApplied(now, call.call_id, call.queue, call.step))

    def _enter_queue(self, call: CallEntry, now: float, acts: Actions, announce: bool) -> None:
        """Put a call in line in ``call.queue`` (new, transferred or overflowed) with its timers."""
        q = call.queue
        qc = self.config.queues[q]
        call.epoch += 1
        call.queue_entered_at = now
        call.step = 0
        call.max_wait_done = False
        call.state = CallState.WAITING
        st = self.stats[q]
        st.offered += 1
        st.recent_arrivals.append(now)
        self.store.save_call(call)
        self._add_waiting(call)
        pos = self.position(call.call_id)
        matched: Actions = []
        self._match_call(call, now, matched)
        ewt = 0.0 if matched else self.estimated_wait(now=now, call_id=call.call_id)
        acts.append(CallQueued(now, call.call_id, q, call.base_priority, pos, ewt, qc.announcements.music_on_hold))
        acts.extend(matched)
        v = (call.epoch,)
        for i, step in enumerate(qc.steps):
            self._timers.schedule(now + step.after, TimerKind.ROUTING_STEP, call.call_id, v + (i,))
        if qc.max_wait:
            self._timers.schedule(now + qc.max_wait.seconds, TimerKind.MAX_WAIT, call.call_id, v)
        an = qc.announcements
        if call.state is CallState.WAITING and announce and an.announce_on_entry and (an.position_every or an.ewt_every):
            acts.append(Announce(now, call.call_id, AnnouncementKind.POSITION, pos, ewt))
        for every, kind in ((an.position_every, TimerKind.ANNOUNCE_POSITION), (an.ewt_every, TimerKind.ANNOUNCE_EWT),
                            (an.comfort_every, TimerKind.COMFORT)):
            if every:
                self._timers.schedule(now + every, kind, call.call_id, v)

    def _end_connected(self, call: CallEntry, now: float, by: str, acts: Actions, keep_call: bool = False) -> None:
        agent = self._agent(call.agent_id) if call.agent_id else None
        handle = now - (call.answered_at if call.answered_at is not None else now)
        self.stats[call.queue].recent_handle.append(handle)
        acts.append(CallEnded(now, call.call_id, call.queue, call.agent_id or "", by, handle))
        if agent is not None and agent.call_id == call.call_id and agent.state is S.ON_CALL:
            self._after_call(agent, call.queue, now, acts)
        call.agent_id = None
        call.answered_at = None
        if not keep_call:
            self._forget(call)

    def _after_call(self, agent: Agent, queue: str | None, now: float, acts: Actions) -> None:
        wrap = self.config.wrap_up(queue) if queue else self.config.defaults.wrap_up_seconds
        if wrap > 0:
            self._transition(agent, S.WRAP_UP, now, acts, call_id=agent.call_id)
            agent.wrap_timer_version += 1
            self._timers.schedule(now + wrap, TimerKind.WRAP_UP_END, agent.id, (agent.wrap_timer_version,))
        else:
            self._finish_wrap(agent, now, acts)

    def _finish_wrap(self, agent: Agent, now: float, acts: Actions) -> None:
        if agent.pending_pause:
            reason, agent.pending_pause = agent.pending_pause, None
            self._transition(agent, S.PAUSED, now, acts, reason=reason)
        else:
            self._set_available(agent, now, acts)

    def _abandon(self, call: CallEntry, now: float, reason: str, acts: Actions) -> None:
        waited = now - call.queue_entered_at
        if call.state is CallState.OFFERED and call.agent_id:
            agent = self._agent(call.agent_id)
            acts.append(CancelOffer(now, call.call_id, agent.id, reason))
            call.state = CallState.WAITING
            call.agent_id = None
            if agent.state is S.RESERVED and agent.call_id == call.call_id:
                self._forget(call)
                st = self.stats[call.queue]
                st.abandoned += 1
                st.abandoned_wait_total += waited
                acts.append(CallAbandoned(now, call.call_id, call.queue, waited, reason))
                self._set_available(agent, now, acts)
                return
        self._remove_waiting(call)
        self._forget(call)
        st = self.stats[call.queue]
        st.abandoned += 1
        st.abandoned_wait_total += waited
        acts.append(CallAbandoned(now, call.call_id, call.queue, waited, reason))

    def _forget(self, call: CallEntry) -> None:
        self._remove_waiting(call)
        call.epoch += 1
        call.offer_epoch += 1
        self.store.delete_call(call.call_id)

    def _rebuild(self, agents: list[Agent]) -> None:
        """Derive indexes and timers from a store that already holds state (another node, a restart)."""
        for a in agents:
            a.seq = next(self._agent_seq)
            a.pools_gen = -1
            if a.state is not S.OFFLINE:
                self._skills.add(a)
            if a.state in STAFFED:
                self._staffed_change(a, +1)
            if a.state is S.WRAP_UP:
                self._timers.schedule(a.state_since + self.config.defaults.wrap_up_seconds, TimerKind.WRAP_UP_END,
                                      a.id, (a.wrap_timer_version,))
        calls = sorted(self.store.calls(), key=lambda c: c.seq)
        if calls:
            self._call_seq = count(calls[-1].seq + 1)
        for call in calls:
            if call.state is CallState.OFFERED:
                agent = self.store.get_agent(call.agent_id or "")
                since = agent.state_since if agent is not None else call.queue_entered_at
                self._timers.schedule(since + self.config.ring_timeout(call.queue), TimerKind.RING_TIMEOUT,
                                      call.call_id, (call.offer_epoch,))
                continue
            if call.state is not CallState.WAITING:
                continue
            if call.callback_not_before:
                self._timers.schedule(call.callback_not_before, TimerKind.CALLBACK_RETRY, call.call_id,
                                      (call.epoch,))
                continue
            self._add_waiting(call)
            qc = self.config.queues[call.queue]
            for i, step in enumerate(qc.steps[call.step:], start=call.step):
                self._timers.schedule(call.queue_entered_at + step.after, TimerKind.ROUTING_STEP, call.call_id,
                                      (call.epoch, i))
            if qc.max_wait and not call.max_wait_done and not call.is_callback:
                self._timers.schedule(call.queue_entered_at + qc.max_wait.seconds, TimerKind.MAX_WAIT,
                                      call.call_id, (call.epoch,))
        for a in agents:
            if a.state is S.AVAILABLE:
                for p in self._eligible_pools(a):
                    p.add(a, a.idle_since)
