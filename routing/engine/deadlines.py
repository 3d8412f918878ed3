"""What the engine does when a deadline passes: ring timeout, routing step, announcement, maximum wait,
wrap-up end, callback retry."""

from __future__ import annotations

from routing.calls import CallEntry, CallState
from routing.config import MaxWaitAction
from routing.events import (Announce, AnnouncementKind, CallLeftQueue, CancelOffer, OfferFailure, Overflow,
                            OverflowKind, RoutingEvent, RoutingStepApplied)
from routing.model import AgentState
from routing.timers import Timer, TimerKind

S = AgentState
Actions = list[RoutingEvent]


class DeadlineMixin:
    """Mixed into ``RoutingEngine``."""

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
