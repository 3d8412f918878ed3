"""The routing engine: sans-IO, events and the current time in, actions and events out.

Invariant kept after every public call: no AVAILABLE agent is eligible for a WAITING call's current
requirement. So a new call only needs the head of its requirement's agent pool, and a freed agent only needs
the heads of the call buckets it qualifies for. An agent holds at most one call (``Agent.call_id``), and the
state machine only lets AVAILABLE agents be offered, so no agent is ever offered two calls.

Priority with aging: effective = base + waited * aging_per_second. Within a queue the aging rate is constant,
so ``score = base - arrived_at * aging`` orders calls once and for all; a call can be overtaken only by calls
that arrived less than (their base - its base) / aging seconds after it, which bounds every wait.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import count
from typing import Any, Iterable, Mapping

from routing.calls import CallEntry, CallState, consult_id
from routing.config import MaxWaitAction, RoutingConfig
from routing.errors import (AgentUnavailable, BadRequest, DuplicateCall, IllegalTransition, OfferNotPending,
                            UnknownAgent, UnknownCall, UnknownQueue)
from routing.events import (Announce, AnnouncementKind, CallAbandoned, CallAnswered,
                            CallbackScheduled, CallEnded, CallEndedBy, CallLeftQueue, CallQueued, CallRequeued,
                            CallTransferred, CancelOffer, ConsultEnded, Offer, OfferFailure, Overflow, OverflowKind,
                            PlaceCallback, RoutingEvent, RoutingStepApplied)
from routing.ewt import QueueStats, erlang_c_asa, position_ewt
from routing.index import AgentPool, SkillIndex, SortedIndex
from routing.model import STAFFED, Agent, AgentProfile, AgentState, Phone, Requirement, check_levels
from routing.store import InMemoryRoutingStore, RoutingStateStore
from routing.strategies import StrategyRegistry, default_registry
from routing.timers import Timer, TimerKind, TimerQueue

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


class _Bucket:
    """Waiting calls of one queue sharing one requirement, best first."""

    __slots__ = ("queue", "requirement", "aging", "index")

    def __init__(self, queue: str, requirement: Requirement, aging: float) -> None:
        self.queue, self.requirement, self.aging = queue, requirement, aging
        self.index = SortedIndex()


def _frozen_skills(skills: Mapping[str, int] | None, who: str) -> tuple[tuple[str, int], ...] | None:
    if skills is None:
        return None
    return tuple(sorted(check_levels(skills, who).items()))


class RoutingEngine:
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

    # ---------------------------------------------------------------------------------------------- roster
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

    # ------------------------------------------------------------------------------------------ agent state
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

    # ------------------------------------------------------------------------------------------------ calls
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

    def transfer(self, call_id: str, *, now: float, to_queue: str | None = None, to_agent: str | None = None,
                 context: Mapping[str, Any] | None = None, priority: float | None = None,
                 note: str | None = None) -> Actions:
        """Blind transfer to a queue or a named agent; the context (customer, verification, IVR path, notes)
        goes along with a 'transfers' trail (``note`` is kept in its entry). A connected call frees its agent
        into wrap-up; a call still in line keeps its place."""
        if (to_queue is None) == (to_agent is None):
            raise BadRequest("transfer needs exactly one of to_queue or to_agent")
        call = self._call(call_id)
        if call.consult_of is not None:
            raise BadRequest(f"{call_id!r} is a consultation: complete or cancel it instead")
        if self.store.get_call(consult_id(call_id)) is not None:
            raise BadRequest(f"call {call_id!r} has a consultation in progress: complete or cancel it first")
        if to_queue is not None:
            self._queue_cfg(to_queue)
        target = None
        if to_agent is not None:
            target = self._agent(to_agent)
            if target.state is S.OFFLINE:
                raise AgentUnavailable(to_agent, "logged out")
            if to_agent == call.agent_id:
                raise BadRequest(f"call {call_id!r} is already with agent {to_agent!r}")
        if call.state is CallState.OFFERED:
            raise BadRequest(f"call {call_id!r} is ringing agent {call.agent_id!r}: wait for the answer or failure")
        acts: Actions = []
        from_agent = call.agent_id
        from_queue = call.queue
        if priority is not None:
            call.explicit_priority = priority
        if context:
            call.context.update(context)
        call.context.setdefault("transfers", []).append(
            {"at": now, "from_queue": from_queue, "from_agent": from_agent, "to_queue": to_queue,
             "to_agent": to_agent, "note": note, "warm": False})
        if call.state is CallState.CONNECTED:
            self._end_connected(call, now, CallEndedBy.TRANSFER.value, acts, keep_call=True)
            call.arrived_at = now
            call.seq = next(self._call_seq)
        else:
            self._remove_waiting(call)
        acts.append(CallTransferred(now, call_id, from_queue, from_agent, to_queue, to_agent))
        call.state = CallState.WAITING
        call.agent_id = None
        if to_queue is not None:
            call.queue = to_queue
            call.target_agent = None
            self._set_priority(call)
            self._enter_queue(call, now, acts, announce=False)
        else:
            call.target_agent = to_agent
            self._set_priority(call)
            call.epoch += 1
            call.queue_entered_at = now
            self.store.save_call(call)
            self._add_waiting(call)
            self._match_call(call, now, acts)
        return acts

    # ------------------------------------------------------------------------------------ warm transfer
    def consult(self, call_id: str, *, now: float, to_queue: str | None = None, to_agent: str | None = None,
                note: str | None = None) -> Actions:
        """Warm transfer, first step: ring a second agent (``to_agent``, or the best free agent of
        ``to_queue``) to talk with the agent of the connected ``call_id`` while the caller holds.

        The consultation is a call entry of its own (``consult_id(call_id)``) so that the consulted agent is
        reserved and then on call like for any offer (never offered two calls). It rings only an agent who is
        free now (AgentUnavailable otherwise), has no wait timers, never counts in queue statistics, and is
        dropped (ConsultEnded), not requeued, when that agent does not answer."""
        if (to_queue is None) == (to_agent is None):
            raise BadRequest("a consultation needs exactly one of to_queue or to_agent")
        call = self._call(call_id)
        if call.consult_of is not None or call.state is not CallState.CONNECTED:
            raise BadRequest(f"call {call_id!r} is not connected to an agent: only a call in conversation "
                             "can be consulted on")
        cid = consult_id(call_id)
        if self.store.get_call(cid) is not None:
            raise BadRequest(f"call {call_id!r} already has a consultation: complete or cancel it first")
        if to_queue is not None:
            self._queue_cfg(to_queue)
        if to_agent is not None:
            target = self._agent(to_agent)
            if to_agent == call.agent_id:
                raise BadRequest(f"agent {to_agent!r} cannot consult themselves")
            if target.state is not S.AVAILABLE:
                raise AgentUnavailable(to_agent, target.state.value)
        ctx = dict(call.context)
        ctx["consult"] = {"at": now, "from_agent": call.agent_id, "from_queue": call.queue, "note": note}
        entry = CallEntry(call_id=cid, queue=to_queue or call.queue, seq=next(self._call_seq), arrived_at=now,
                          queue_entered_at=now, base_priority=0.0, score=0.0, segment=call.segment,
                          critical=call.critical, explicit_priority=call.explicit_priority,
                          required_skills=None if to_queue else call.required_skills,
                          extra_skills=() if to_queue else call.extra_skills, context=ctx,
                          target_agent=to_agent, consult_of=call_id)
        self._set_priority(entry)
        self.store.save_call(entry)
        self._add_waiting(entry)
        acts: Actions = []
        self._match_call(entry, now, acts)
        if entry.state is not CallState.OFFERED:
            self._forget(entry)
            raise AgentUnavailable(to_agent or f"queue {to_queue}", "nobody free to consult now")
        return acts

    def consult_complete(self, call_id: str, *, now: float) -> Actions:
        """Warm transfer, last step: the consulted agent takes the caller; the first agent goes to wrap-up."""
        call = self._call(call_id)
        cons = self.store.get_call(consult_id(call_id))
        if cons is None:
            raise BadRequest(f"call {call_id!r} has no consultation to complete")
        if cons.state is not CallState.CONNECTED or cons.agent_id is None:
            raise BadRequest(f"the consulted agent has not answered yet (consultation {cons.state.value})")
        if call.state is not CallState.CONNECTED:
            raise BadRequest(f"call {call_id!r} is {call.state.value}, not in conversation")
        b = self._agent(cons.agent_id)
        acts: Actions = []
        from_agent, from_queue = call.agent_id, call.queue
        to_queue = None if cons.target_agent else cons.queue
        call.context.setdefault("transfers", []).append(
            {"at": now, "from_queue": from_queue, "from_agent": from_agent, "to_queue": to_queue,
             "to_agent": b.id, "note": (cons.context.get("consult") or {}).get("note"), "warm": True})
        self._end_connected(call, now, CallEndedBy.TRANSFER.value, acts, keep_call=True)
        self._forget(cons)
        acts.append(CallTransferred(now, call_id, from_queue, from_agent, to_queue, b.id))
        call.queue = cons.queue
        call.state = CallState.CONNECTED
        call.agent_id = b.id
        call.answered_at = now
        b.call_id = call_id
        self.store.save_agent(b)
        self.store.save_call(call)
        return acts

    def consult_cancel(self, call_id: str, *, now: float, reason: str = "cancelled") -> Actions:
        """End the consultation of ``call_id`` (the consulting agent goes back to the caller): a ringing
        consulted agent is cancelled and available again, a talking one is available again (no wrap-up: there
        was no customer on that leg). No consultation: nothing happens."""
        acts: Actions = []
        self._drop_consult(call_id, now, reason, acts)
        return acts

    def _drop_consult(self, call_id: str, now: float, reason: str, acts: Actions) -> None:
        cons = self.store.get_call(consult_id(call_id))
        if cons is None:
            return
        agent = self._agent(cons.agent_id) if cons.agent_id else None
        state = cons.state
        self._forget(cons)
        if agent is not None and agent.call_id == cons.call_id:
            if state is CallState.OFFERED:
                acts.append(CancelOffer(now, cons.call_id, agent.id, reason))
            if agent.state in (S.RESERVED, S.ON_CALL):
                self._set_available(agent, now, acts, reason=f"consult_{reason}")
        acts.append(ConsultEnded(now, call_id, cons.call_id, cons.agent_id, reason))

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

    # ------------------------------------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        """When handle_timer should next be called (None: nothing scheduled)."""
        return self._timers.next_deadline()

    def handle_timer(self, now: float) -> Actions:
        acts: Actions = []
        while (t := self._timers.pop_due(now)) is not None:
            self._fire(t, now, acts)
        return acts

    # ----------------------------------------------------------------------------------------------- queries
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

    # ======================================================================================== internals
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

    # --- requirements -------------------------------------------------------------------------------------
    def _requirement(self, queue: str, step: int, required: tuple | None, extra: tuple) -> Requirement:
        key = (queue, step, required, extra)
        req = self._req_cache.get(key)
        if req is not None:
            return req
        qc = self.config.queues[queue]
        extra_d = dict(extra)

        def with_extra(skills: Mapping[str, int]) -> dict[str, int]:
            out = dict(skills)
            for s, lvl in extra_d.items():
                out[s] = max(out.get(s, 0), lvl)
            return out

        alts = [with_extra(dict(required) if required is not None else qc.skills)]
        relax, dropped = 0, set()
        for st in qc.steps[:step]:
            relax += st.relax_levels
            dropped.update(st.drop_skills)
            if st.add_skills:
                alts.append(with_extra(st.add_skills))
            for other in st.add_queues:
                alts.append(with_extra(self.config.queues[other].skills))
        final = [{s: max(1, lvl - relax) for s, lvl in alt.items() if s not in dropped} for alt in alts]
        req = self._req_cache[key] = Requirement.of(*final)
        return req

    def _set_priority(self, call: CallEntry) -> None:
        d = self.config.defaults
        base = call.explicit_priority if call.explicit_priority is not None else self.config.queues[call.queue].priority
        if call.segment:
            base += d.segment_boost.get(call.segment, 0.0)
        if call.critical:
            base += d.critical_flag_boost
        call.base_priority = base
        call.score = base - call.arrived_at * self.config.aging(call.queue)

    # --- pools --------------------------------------------------------------------------------------------
    def _pool(self, req: Requirement, strategy: str, now: float) -> AgentPool:
        pool = self._pools.get((req, strategy))
        if pool is None:
            pool = self._pools[(req, strategy)] = AgentPool(req, self.strategies.get(strategy))
            self._pools_gen += 1
            for aid in self._skills.candidates(req):
                a = self.store.get_agent(aid)
                if a is not None and a.state is S.AVAILABLE and req.accepts(a.skills):
                    pool.add(a, a.idle_since)
        return pool

    def _eligible_pools(self, agent: Agent) -> list[AgentPool]:
        if agent.pools_gen != self._pools_gen:
            agent.pools = [p for p in self._pools.values() if p.requirement.accepts(agent.skills)]
            agent.pools_gen = self._pools_gen
        return agent.pools

    def _leave_pools(self, agent: Agent) -> None:
        for p in self._eligible_pools(agent):
            p.discard(agent.id)

    def _set_available(self, agent: Agent, now: float, acts: Actions, reason: str | None = None) -> None:
        if agent.state is S.AVAILABLE:
            return
        self._transition(agent, S.AVAILABLE, now, acts, reason=reason)
        self._place_available(agent, now, acts)

    def _place_available(self, agent: Agent, now: float, acts: Actions) -> None:
        """Give a just-available agent the best call they qualify for, else put them in their pools."""
        call = self._best_call_for(agent, now)
        if call is not None:
            self._offer(call, agent, now, acts)
            return
        for p in self._eligible_pools(agent):
            p.add(agent, now)

    def _best_call_for(self, agent: Agent, now: float) -> CallEntry | None:
        personal = self._personal.get(agent.id)
        if personal:
            return self._call(personal.first())
        best_id, best_eff = None, -math.inf
        best_seq = 0
        skills = agent.skills
        for req, buckets in self._by_req.items():
            if not any(b.index for b in buckets) or not req.accepts(skills):
                continue
            for b in buckets:
                key = b.index.first_key()
                if key is None:
                    continue
                eff = -key[0] + now * b.aging
                if eff > best_eff or (eff == best_eff and key[1] < best_seq):
                    best_id, best_eff, best_seq = b.index.first(), eff, key[1]
        return self._call(best_id) if best_id is not None else None

    # --- waiting calls ------------------------------------------------------------------------------------
    def _add_waiting(self, call: CallEntry) -> None:
        key = call.sort_key()
        self._queue_index[call.queue].add(call.call_id, key)
        if call.target_agent is not None:
            self._personal.setdefault(call.target_agent, SortedIndex()).add(call.call_id, key)
            return
        call.requirement = self._requirement(call.queue, call.step, call.required_skills, call.extra_skills)
        bkey = (call.queue, call.requirement)
        bucket = self._buckets.get(bkey)
        if bucket is None:
            bucket = self._buckets[bkey] = _Bucket(call.queue, call.requirement, self.config.aging(call.queue))
            self._by_req.setdefault(call.requirement, []).append(bucket)
        bucket.index.add(call.call_id, key)

    def _remove_waiting(self, call: CallEntry) -> None:
        self._queue_index[call.queue].discard(call.call_id)
        if call.target_agent is not None:
            personal = self._personal.get(call.target_agent)
            if personal is not None:
                personal.discard(call.call_id)
            return
        bucket = self._buckets.get((call.queue, call.requirement))
        if bucket is not None:
            bucket.index.discard(call.call_id)

    def _match_call(self, call: CallEntry, now: float, acts: Actions) -> None:
        if call.state is not CallState.WAITING or call.callback_not_before > now:
            return
        if call.target_agent is not None:
            agent = self._agent(call.target_agent)
            if agent.state is S.AVAILABLE:
                self._leave_pools(agent)
                self._offer(call, agent, now, acts)
            return
        pool = self._pool(call.requirement, self.config.strategy(call.queue), now)
        agent_id = pool.first()
        if agent_id is not None:
            agent = self._agent(agent_id)
            self._leave_pools(agent)
            self._offer(call, agent, now, acts)

    def _offer(self, call: CallEntry, agent: Agent, now: float, acts: Actions) -> None:
        """Reserve ``agent`` for ``call``; the agent must already be out of its pools."""
        self._remove_waiting(call)
        call.state = CallState.OFFERED
        call.agent_id = agent.id
        call.offer_epoch += 1
        agent.last_offer_seq = next(self._offer_seq)
        self._transition(agent, S.RESERVED, now, acts, call_id=call.call_id)
        self.store.save_call(call)
        ring = self.config.ring_timeout(call.queue)
        self._timers.schedule(now + ring, TimerKind.RING_TIMEOUT, call.call_id, (call.offer_epoch,))
        phone = agent.profile.phone.target
        if call.is_callback:
            acts.append(PlaceCallback(now, call.call_id, call.callback_number, agent.id, phone, ring, call.queue,
                                      dict(call.context)))
        else:
            acts.append(Offer(now, call.call_id, agent.id, phone, ring, call.queue, dict(call.context)))

    def _pending_offer(self, call_id: str, agent_id: str) -> tuple[CallEntry, Agent]:
        call = self.store.get_call(call_id)
        if call is None:
            raise OfferNotPending(call_id, agent_id, "the call is gone")
        if call.state is not CallState.OFFERED or call.agent_id != agent_id:
            raise OfferNotPending(call_id, agent_id, f"the call is {call.state.value}"
                                  + (f" with agent {call.agent_id!r}" if call.agent_id else ""))
        return call, self._agent(agent_id)

    def _fail_offer(self, call: CallEntry, agent: Agent, reason: str, now: float, acts: Actions) -> None:
        if call.consult_of is not None:
            agent.pending_pause = None
            self._forget(call)
            self._transition(agent, S.NOT_READY, now, acts, reason=reason)
            acts.append(ConsultEnded(now, call.consult_of, call.call_id, agent.id, reason))
            return
        call.state = CallState.WAITING
        call.agent_id = None
        call.offer_epoch += 1
        self.stats[call.queue].rona += 1
        agent.pending_pause = None
        self._transition(agent, S.NOT_READY, now, acts, reason=reason)
        self._step_to_now(call, now, acts)
        self._add_waiting(call)
        self.store.save_call(call)
        acts.append(CallRequeued(now, call.call_id, call.queue, agent.id, reason, self.position(call.call_id)))
        mw = self.config.queues[call.queue].max_wait
        if mw and not call.max_wait_done and not call.is_callback and now >= call.queue_entered_at + mw.seconds:
            self._timers.schedule(now, TimerKind.MAX_WAIT, call.call_id, (call.epoch,))
        self._match_call(call, now, acts)

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

    # --- timers -------------------------------------------------------------------------------------------
    def _timer_live(self, t: Timer) -> bool:
        if t.kind is TimerKind.WRAP_UP_END:
            a = self.store.get_agent(t.ref)
            return a is not None and a.state is S.WRAP_UP and a.wrap_timer_version == t.version[0]
        call = self.store.get_call(t.ref)
        if call is None:
            return False
        if t.kind is TimerKind.RING_TIMEOUT:
            return call.state is CallState.OFFERED and call.offer_epoch == t.version[0]
        return call.epoch == t.version[0]

    def _fire(self, t: Timer, now: float, acts: Actions) -> None:
        kind = t.kind
        if kind is TimerKind.WRAP_UP_END:
            self._finish_wrap(self._agent(t.ref), now, acts)
            return
        call = self._call(t.ref)
        if kind is TimerKind.RING_TIMEOUT:
            agent = self._agent(call.agent_id)
            acts.append(CancelOffer(now, call.call_id, agent.id, OfferFailure.RONA.value))
            self._fail_offer(call, agent, OfferFailure.RONA.value, now, acts)
        elif kind is TimerKind.ROUTING_STEP:
            target = t.version[1] + 1
            if call.step >= target:
                return
            call.step = target
            acts.append(RoutingStepApplied(now, call.call_id, call.queue, target))
            if call.state is CallState.WAITING and call.target_agent is None and call.callback_not_before <= now:
                self._remove_waiting(call)
                self._add_waiting(call)
                self._match_call(call, now, acts)
            self.store.save_call(call)
        elif kind is TimerKind.MAX_WAIT:
            self._max_wait(call, now, acts)
        elif kind is TimerKind.CALLBACK_RETRY:
            call.callback_not_before = 0.0
            self._step_to_now(call, now, acts)
            self._add_waiting(call)
            self._match_call(call, now, acts)
        else:
            self._announce(call, kind, now, acts)

    def _announce(self, call: CallEntry, kind: TimerKind, now: float, acts: Actions) -> None:
        an = self.config.queues[call.queue].announcements
        every = {TimerKind.ANNOUNCE_POSITION: an.position_every, TimerKind.ANNOUNCE_EWT: an.ewt_every,
                 TimerKind.COMFORT: an.comfort_every}[kind]
        self._timers.schedule(now + every, kind, call.call_id, (call.epoch,))
        if call.state is not CallState.WAITING or call.is_callback:
            return
        pos = self.position(call.call_id)
        ewt = self.estimated_wait(now=now, call_id=call.call_id)
        if kind is TimerKind.ANNOUNCE_POSITION:
            acts.append(Announce(now, call.call_id, AnnouncementKind.POSITION, pos, ewt))
        elif kind is TimerKind.ANNOUNCE_EWT:
            acts.append(Announce(now, call.call_id, AnnouncementKind.EWT, pos, ewt))
        else:
            acts.append(Announce(now, call.call_id, AnnouncementKind.COMFORT, pos, ewt, an.comfort_prompt))

    def _max_wait(self, call: CallEntry, now: float, acts: Actions) -> None:
        if call.state is not CallState.WAITING or call.is_callback or call.max_wait_done:
            return        # ringing: re-checked if the offer fails
        mw = self.config.queues[call.queue].max_wait
        call.max_wait_done = True
        from_q = call.queue
        self.stats[from_q].overflowed += 1
        if mw.action is MaxWaitAction.OVERFLOW:
            self._remove_waiting(call)
            call.queue = mw.target
            call.target_agent = None
            self._set_priority(call)
            acts.append(Overflow(now, call.call_id, from_q, OverflowKind.QUEUE, mw.target, mw.prompt))
            self._enter_queue(call, now, acts, announce=False)
        elif mw.action is MaxWaitAction.CALLBACK:
            self.store.save_call(call)
            acts.append(Overflow(now, call.call_id, from_q, OverflowKind.CALLBACK, mw.target, mw.prompt))
        else:
            kind = OverflowKind.VOICEMAIL if mw.action is MaxWaitAction.VOICEMAIL else OverflowKind.HANGUP
            acts.append(Overflow(now, call.call_id, from_q, kind, mw.target, mw.prompt))
            self._forget(call)
            acts.append(CallLeftQueue(now, call.call_id, from_q, now - call.queue_entered_at, f"max_wait_{kind.value}"))

    # --- restart from a persistent store ------------------------------------------------------------------
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
