"""Blind and attended transfers of a connected caller: the desktop's and REFER's side of ``QueueService``."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from ivr.calls import Call, CallerHungUp, Leg
from ivr.media.bridge import Bridge
from routing.calls import consult_id
from routing.errors import AgentUnavailable, OfferNotPending, RoutingError, UnknownAgent, UnknownCall, UnknownQueue
from routing.events import Offer

from .state import TransferRefused, _Connected, _Consult, _OfferTask, _Talk, _Waiter

log = logging.getLogger(__name__)


SURVEY_TARGET = "survey"
"""REFER to ``sip:survey@...`` from an agent's phone hands the caller to the post-call survey."""


class TransferMixin:
    """Transfers and consultations; mixed into ``QueueService`` (uses its engine, ``drive`` and waiters)."""

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

    def transfer_to_survey(self, call_id: str | None, by_agent: str) -> dict:
        """The agent hands the caller to the post-call survey: the agent's leg ends as if they hung up (wrap-up,
        record ended ``agent_hangup``) and the caller hears the queue's survey whatever its sampled share (the
        default script when the queue offers none)."""
        w = self._survey_waiter(call_id, by_agent)
        return self._hand_to_survey(w, by_agent)

    def _survey_waiter(self, call_id: str | None, by_agent: str) -> _Waiter:
        if self.post_call is None:
            raise TransferRefused(409, "no post-call survey runs on this server", 403)
        w = self._mine(call_id, by_agent)
        if w.talk is not None and w.talk.consult is not None:
            raise TransferRefused(409, "a consultation is in progress: complete or cancel it first", 491)
        return w

    def _hand_to_survey(self, w: _Waiter, by_agent: str) -> dict:
        assert w.talk is not None
        self._to_survey.add(w.call.id)
        w.talk.conn.leg.hangup()
        self._notify("transfer_event", by_agent, {"event": "transferred", "call_id": w.call.id, "to_survey": True})
        return {"call_id": w.call.id, "mode": "survey"}

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
        if user == SURVEY_TARGET and user not in self.engine.config.queues:
            agent_id = w.talk.conn.agent_id
            try:
                w = self._survey_waiter(w.call.id, agent_id)
            except TransferRefused as exc:
                log.info("REFER from agent %s to the survey refused: %s", agent_id, exc)
                notify(leg.handle, exc.sip_status)
                return
            notify(leg.handle, 200, "OK")
            self._hand_to_survey(w, agent_id)
            return
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
