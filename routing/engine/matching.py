"""Which agent gets which call: requirements per routing step, agent pools per requirement and strategy,
buckets of waiting calls, offers. Keeps the engine's invariant (no available agent eligible for a waiting call)."""

from __future__ import annotations

import math
from typing import Mapping

from routing.calls import CallEntry, CallState
from routing.errors import OfferNotPending
from routing.events import CallRequeued, ConsultEnded, Offer, PlaceCallback, RoutingEvent
from routing.index import AgentPool, SortedIndex
from routing.model import Agent, AgentState, Requirement
from routing.timers import TimerKind

S = AgentState
Actions = list[RoutingEvent]


class _Bucket:
    """Waiting calls of one queue sharing one requirement, best first."""

    __slots__ = ("queue", "requirement", "aging", "index")

    def __init__(self, queue: str, requirement: Requirement, aging: float) -> None:
        self.queue, self.requirement, self.aging = queue, requirement, aging
        self.index = SortedIndex()


class MatchingMixin:
    """Mixed into ``RoutingEngine``."""

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
