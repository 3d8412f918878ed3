"""The contact centre's services as the IVR sees them: CRM look-ups, PIN, voice, call records, hand-offs.

Every method degrades instead of raising: a CRM that is down makes the caller unknown (and the pop says so), a
voice model that fails gives the ``error`` branch, a database hiccup loses a log line but never the call. The
call record is written step by step as the call progresses, so a crash loses nothing already committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from ivr.calls import Call, CallerHungUp
from ivr.flow import actions as A
from ivr.flow.context import CallContext
from ivr.flow.trace import IvrTrace

log = logging.getLogger(__name__)

CRM_TIMEOUT = 2.0


class QueueHandoff(Protocol):
    """Routing's side of the hand-off: keeps the caller in line until an agent answers or the caller leaves."""

    async def queue(self, call: Call, action: A.Queue, ctx: CallContext, trace: IvrTrace) -> None: ...


class Transferrer(Protocol):
    async def transfer(self, call: Call, uri: str) -> None: ...


def customer_dict(customer: Any) -> dict[str, Any] | None:
    """The CRM's customer object as the flow and the pop want it (plain dict, string id)."""
    if customer is None:
        return None
    get = customer.get if isinstance(customer, dict) else (lambda k, d=None: getattr(customer, k, d))
    out = {
        "id": str(get("id")),
        "name": get("name") or " ".join(x for x in (get("first_name"), get("last_name")) if x),
        "first_name": get("first_name"),
        "segment": getattr(get("segment"), "value", get("segment")),
        "language": get("language"),
    }
    if get("stale"):
        out["stale"] = True
    return out


# The call record's vocabulary (crm_bridge.models.IvrExit, which the KPIs read) differs from the interpreter's:
# there "hung_up" is the caller hanging up in the IVR (not contained) and "completed" a call the IVR itself
# ended (self-service, closed message). The interpreter's own value stays in the path's exit entry.
RECORD_EXIT = {A.IvrExit.QUEUED: "queued", A.IvrExit.TRANSFERRED: "transferred", A.IvrExit.HUNG_UP: "completed",
               A.IvrExit.ABANDONED: "hung_up", A.IvrExit.ERROR: "error"}


def ivr_path(trace: IvrTrace, ctx: CallContext, outcome: A.Finished | None) -> list[dict[str, Any]]:
    """The call record's IVR path: nodes, prompts, digits (secret ones masked by the trace) and results in time
    order, then one ``exit`` entry with where the call went (queue, service, priority, flags for routing)."""
    d = trace.to_dict()
    events: list[dict[str, Any]] = []
    # at one instant, what the caller did (digits) or a service answered (results) comes first, then the nodes
    # it led to, then the prompts those nodes started
    rank = {"digits": 0, "result": 0, "node": 1, "prompt": 2}
    for key, kind in (("digits", "digits"), ("results", "result"), ("steps", "node"), ("prompts", "prompt")):
        events += [{"event": kind, **e} for e in d.get(key, [])]
    events.sort(key=lambda e: (e["t"], rank[e["event"]]))
    if outcome is None:
        return events  # still in the IVR
    events.append({"event": "exit", "t": trace.ended_at, "exit": outcome.outcome.value, "detail": outcome.detail,
                   "queue": ctx.queue, "service": ctx.service, "priority": ctx.priority, "skills": list(ctx.skills),
                   "critical": bool(ctx.variables.get("critical")), "customer_id": ctx.customer_id,
                   "identified_by": ctx.identified_by, "verified": ctx.verified, "language": trace.language,
                   "seconds": trace.duration})
    return events


_DECISIONS = {"ACCEPT": "accept", "REJECT": "reject", "NOT_ENOUGH_SPEECH": "not_enough_speech",
              "NOT_ENROLLED": "not_enrolled", "LOCKED_OUT": "locked_out", "ERROR": "error"}


@dataclass
class VoiceSettings:
    record_max_seconds: float = 8.0
    silence_end_seconds: float = 1.0
    start_timeout: float = 5.0


@dataclass
class ContactCentreServices:
    """Implements ``ivr.flow_runner.IvrServices`` over the CRM adapter, the call recorder and voiceauth."""

    crm: Any
    recorder: Any | None = None
    voice: Any | None = None
    queue_handoff: QueueHandoff | None = None
    transferrer: Transferrer | None = None
    voice_settings: VoiceSettings = field(default_factory=VoiceSettings)
    on_voice_result: Callable[[Call, A.VoiceResult], Awaitable[None]] | None = None

    async def _record_step(self, what: str, step: Callable[[Any], Awaitable[Any]]) -> None:
        """Run ``step(recorder)``; a failing database costs a log line, never the call."""
        if self.recorder is None:
            return
        try:
            await step(self.recorder)
        except Exception:
            log.exception("call record step %s failed (call continues)", what)

    async def call_started(self, call: Call, ctx: CallContext) -> None:
        await self._record_step("arrived", lambda r: r.call_arrived(call.id, ani=ctx.ani_e164 or ctx.ani_raw,
                                                                      dnis=ctx.dnis, line=ctx.dnis))

    async def lookup_caller(self, call: Call, ani: str) -> dict[str, Any] | None:
        try:
            customer = await asyncio.wait_for(self.crm.lookup_by_phone(ani), CRM_TIMEOUT)
        except Exception as exc:
            log.warning("CRM lookup failed (%s): caller treated as unknown", type(exc).__name__)
            call.variables["crm_unavailable"] = True
            return None
        found = customer_dict(customer)
        if found is not None:
            call.variables["customer"] = found
            await self._record_step("identified", lambda r: r.identified(
                call.id, int(found["id"]), "pai" if call.identity.source.value == "pai" else "ani"))
        return found

    async def verify_pin(self, call: Call, account: str, pin: str) -> A.PinResult:
        try:
            check = await asyncio.wait_for(self.crm.verify_pin(account, pin), CRM_TIMEOUT)
        except Exception as exc:
            log.warning("PIN check failed (%s)", type(exc).__name__)
            call.variables["crm_unavailable"] = True
            return A.PinResult(ok=False)
        customer = customer_dict(check.customer) if check.ok else None
        if customer is not None:
            call.variables["customer"] = customer
            await self._record_step("identified", lambda r: r.identified(call.id, int(customer["id"]), "pin"))
        return A.PinResult(ok=bool(check.ok), locked=bool(check.locked), customer=customer)

    async def _record_voice(self, call: Call):
        s = self.voice_settings
        return await call.record(s.record_max_seconds, silence_end_seconds=s.silence_end_seconds,
                                 start_timeout=s.start_timeout)

    async def verify_voice(self, call: Call, action: A.VerifyVoice) -> A.VoiceResult:
        if self.voice is None:
            return A.VoiceResult("error", flags=("UNAVAILABLE",))
        try:
            # not enrolled or locked out: answer before recording, the caller must not talk for nothing
            res = await asyncio.get_running_loop().run_in_executor(
                None, self.voice.verifier.precheck, action.customer_id, call.id, time.time())
            if res is None:
                audio = await self._record_voice(call)
                res = await self.voice.verify(action.customer_id, audio, 8000, call_id=call.id, now=time.time())
        except CallerHungUp:
            raise
        except Exception as exc:
            log.warning("voice verification failed (%s): error branch", type(exc).__name__)
            result = A.VoiceResult("error", flags=("UNAVAILABLE",))
        else:
            result = A.VoiceResult(_DECISIONS.get(res.decision.value, "error"), res.score, res.threshold, res.model,
                                   tuple(f.value for f in res.flags))
        call.variables["voice"] = result
        log.info("voice verification", extra={"decision": result.decision, "score": result.score,
                                              "threshold": result.threshold, "flags": ",".join(result.flags)})
        await self._record_step("verified", lambda r: r.verified(
            call.id, result.decision, score=result.score, threshold=result.threshold, model=result.model,
            flags=list(result.flags)))
        if self.on_voice_result is not None:
            await self.on_voice_result(call, result)
        return result

    async def enroll_voice(self, call: Call, action: A.EnrollVoice) -> A.VoiceResult:
        if self.voice is None:
            return A.VoiceResult("error", flags=("UNAVAILABLE",))
        ctx: CallContext | None = call.variables.get("ivr_context")
        session = call.variables.get("enrollment")
        try:
            if session is None or session.customer_id != action.customer_id:
                store = self.voice.store
                loop = asyncio.get_running_loop()
                consent = await loop.run_in_executor(None, store.active_consent, action.customer_id)
                if consent is None and ctx is not None and ctx.variables.get("voice_consent"):
                    await loop.run_in_executor(None, lambda: store.record_consent(
                        action.customer_id, channel="phone", actor=f"caller:{call.ani or 'unknown'}",
                        now=time.time()))
                session = await self.voice.start_enrollment(action.customer_id, takes_required=action.takes)
                call.variables["enrollment"] = session
            audio = await self._record_voice(call)
            take = await self.voice.add_take(session, audio, 8000)
            if not take.accepted:
                # no quality reason: the very same audio as an earlier take (replayed), say so on the record
                return A.VoiceResult("not_enough_speech", flags=(take.reason.value,) if take.reason else
                                     ("DUPLICATE_TAKE",))
            if take.complete:  # the node's takes, or enough net speech earlier: ENROLLED ends the node
                await self.voice.finish_enrollment(session, actor=f"caller:{call.ani or 'unknown'}",
                                                   now=time.time())
                call.variables.pop("enrollment", None)
                return A.VoiceResult("accept", model=session.model, flags=tuple(sorted(session.flags | {"ENROLLED"})))
            if action.take >= action.takes:  # a take was refused as a duplicate: one more is needed
                return A.VoiceResult("not_enough_speech", flags=("MORE_SPEECH_NEEDED",))
            return A.VoiceResult("accept", model=session.model, flags=tuple(sorted(session.flags)))
        except CallerHungUp:
            raise
        except Exception as exc:
            log.warning("voice enrollment failed: %s", exc)
            from voiceauth.errors import Overloaded

            # a full voice queue takes the same branch; the flag says why on the call record
            return A.VoiceResult("error", flags=("BUSY",) if isinstance(exc, Overloaded) else ())

    async def ivr_progress(self, call: Call, ctx: CallContext, trace: IvrTrace) -> None:
        """Commit the path so far after each caller input, so a crash mid-IVR keeps what the caller did."""
        path = ivr_path(trace, ctx, None)
        await self._record_step("ivr progress", lambda r: r.ivr_progress(call.id, path))

    async def ivr_finished(self, call: Call, ctx: CallContext, trace: IvrTrace, outcome: A.Finished) -> None:
        if ctx.service:
            await self._record_step("service", lambda r: r.service_selected(call.id, ctx.service))
        path = ivr_path(trace, ctx, outcome)
        await self._record_step("ivr", lambda r: r.ivr_finished(call.id, path, RECORD_EXIT[outcome.outcome]))

    async def queue(self, call: Call, action: A.Queue, ctx: CallContext, trace: IvrTrace) -> None:
        if self.queue_handoff is None:
            log.error("no routing configured: the call to queue %s is hung up", action.queue)
            call.hangup()
            return
        await self.queue_handoff.queue(call, action, ctx, trace)

    async def transfer(self, call: Call, uri: str) -> None:
        await self._record_step("transfer", lambda r: r.transferred(call.id, uri))
        if self.transferrer is None:
            call.hangup()
            return
        await self.transferrer.transfer(call, uri)

    async def call_ended(self, call: Call) -> None:
        reason = call.leg.end_reason.value if call.leg.end_reason else "unknown"
        await self._record_step("ended", lambda r: r.ended(call.id, reason))


