"""Blind and warm (consult) transfers of a connected call: the engine's side, sans-IO like the rest."""

from __future__ import annotations

from typing import Any, Mapping

from routing.calls import CallEntry, CallState, consult_id
from routing.errors import AgentUnavailable, BadRequest
from routing.events import CallEndedBy, CallTransferred, CancelOffer, ConsultEnded, RoutingEvent
from routing.model import AgentState

S = AgentState
Actions = list[RoutingEvent]


class TransferMixin:
    """Mixed into ``RoutingEngine``."""

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
