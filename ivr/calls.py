"""Calls and legs: where SIP dialogs meet media sessions and the application (IVR, routing).

A *leg* is one SIP dialog plus the RTP session that carries its audio. A *call* is what a customer experiences:
their inbound leg, who they are (ANI/DNIS), and later an agent leg bridged to it. The ``CallManager`` turns the
user agent's events into state on these objects and runs one application coroutine per inbound call. One task
per call is cheap in asyncio; all waiting is on futures resolved by SIP events, never polling.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from ivr.errors import IvrError
from ivr.logs import call_id_var
from ivr.media.sdp import NegotiatedMedia, NoCommonCodec, SdpError, answer_offer, make_offer, parse_answer, parse_sdp
from ivr.sip.events import (
    CallAcked,
    CallCancelled,
    CallEnded,
    CallHandle,
    EndReason,
    Event,
    IncomingCall,
    InfoReceived,
    OutgoingAnswered,
    OutgoingFailed,
    OutgoingProgress,
    ReferReceived,
    ReInviteCompleted,
    ReInviteReceived,
)
from ivr.sip.identity import CallerIdentity, _is_trusted, extract_identity
from ivr.sip.useragent import CallStateError

log = logging.getLogger(__name__)


class CallError(IvrError):
    """A call-level operation failed (the other side hung up, no codec in common, no media port free)."""


class CallerHungUp(CallError):
    """Raised inside an application coroutine when its call ended; the application just lets it propagate."""


class OriginateFailed(CallError):
    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"outgoing call failed: {status} {reason}")


class LegState(enum.Enum):
    NEW = "new"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class SipPort(Protocol):
    """The commands of the SIP shell (``ivr.sip.transport.SipServer``): each sends at once."""

    def ring(self, handle: CallHandle) -> None: ...

    def answer(self, handle: CallHandle, sdp: bytes, extra_headers=()) -> None: ...

    def reject(self, handle: CallHandle, status: int, reason: str | None = None, headers=()) -> None: ...

    def hangup(self, handle: CallHandle) -> None: ...

    def invite(self, target: str, from_uri: str, sdp: bytes, headers=(), credentials=None,
               destination=None) -> CallHandle: ...

    def answer_reinvite(self, handle: CallHandle, sdp: bytes) -> None: ...

    def reject_reinvite(self, handle: CallHandle, status: int = 488, reason: str | None = None) -> None: ...


@dataclass
class Leg:
    manager: "CallManager"
    handle: CallHandle
    outgoing: bool
    state: LegState = LegState.NEW
    session: Any = None
    negotiated: NegotiatedMedia | None = None
    offer: Any = None
    on_hold: bool = False
    end_reason: EndReason | None = None
    end_status: int | None = None
    created: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    _answered: asyncio.Future | None = None
    _offer_sdp: object = None  # our SDP offer on an outgoing leg, to start its media as soon as the 200 OK lands
    _ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ended(self) -> bool:
        return self.state is LegState.ENDED

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def hangup(self) -> None:
        if self.state is not LegState.ENDED:
            self.manager.sip.hangup(self.handle)


@dataclass
class Call:
    """The customer's call as the IVR, routing and CRM see it."""

    id: str
    leg: Leg
    identity: CallerIdentity
    source: tuple[str, int]
    peer: Any = None
    variables: dict[str, Any] = field(default_factory=dict)
    agent_leg: Leg | None = None
    bridge: Any = None
    task: asyncio.Task | None = None

    @property
    def ani(self) -> str | None:
        return self.identity.ani_e164

    @property
    def dnis(self) -> str:
        return self.identity.dnis

    @property
    def session(self):
        if self.leg.session is None:
            raise CallError("the call has no media yet: answer it first")
        return self.leg.session

    def _check(self) -> None:
        if self.leg.ended:
            raise CallerHungUp(f"call {self.id} ended ({self.leg.end_reason.value if self.leg.end_reason else '?'})")

    async def ring(self) -> None:
        self._check()
        if self.leg.state is LegState.NEW:
            self.leg.state = LegState.RINGING
            self.leg.manager.sip.ring(self.leg.handle)

    async def answer(self) -> None:
        """Open the RTP session, send 200 OK with our SDP answer; returns at once (ACK is not awaited)."""
        self._check()
        if self.leg.state is LegState.ANSWERED:
            return
        await self.leg.manager._answer(self)

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        self._check()
        self.leg.manager.sip.reject(self.leg.handle, status, reason)

    def hangup(self) -> None:
        self.leg.hangup()

    async def _guard(self, aw: Awaitable):
        """Run a media operation, but stop waiting the moment the caller hangs up. Callers check the call
        before building ``aw`` so that a coroutine is never created for a call that already ended."""
        task = asyncio.ensure_future(aw)
        ended = asyncio.ensure_future(self.leg._ended.wait())
        try:
            done, _ = await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            ended.cancel()
            raise
        if task in done:
            ended.cancel()
            return task.result()
        task.cancel()
        raise CallerHungUp(f"call {self.id} ended while waiting")

    async def play(self, pcm, barge_in: bool = False):
        self._check()
        return await self._guard(self.session.play(pcm, barge_in=barge_in))

    async def collect_digits(self, max_digits: int, first_timeout: float, inter_digit_timeout: float,
                             terminator: str | None = "#"):
        self._check()
        return await self._guard(self.session.collect_digits(max_digits, first_timeout, inter_digit_timeout,
                                                             terminator))

    async def record(self, max_seconds: float, silence_end_seconds: float = 1.5, start_timeout: float = 5.0):
        self._check()
        return await self._guard(self.session.record(max_seconds, silence_end_seconds=silence_end_seconds,
                                                     start_timeout=start_timeout))

    async def sleep(self, seconds: float) -> None:
        self._check()
        await self._guard(asyncio.sleep(seconds))


class CallApplication(Protocol):
    """What runs an answered-or-not inbound call: the IVR in production, a script in tests."""

    async def run(self, call: Call) -> None: ...


@dataclass
class CallLimits:
    max_concurrent_calls: int = 2000
    max_calls_per_second_per_source: float = 500.0
    max_calls_per_second_per_untrusted_source: float | None = None
    """New calls per second from an address that is not a trusted peer (phones, the open internet). A trunk
    brings every caller from one address and needs the high per-source rate; anyone else does not, and junk
    INVITEs that the message guard admits during its burst would otherwise each become a call. None: the
    per-source rate."""


class _TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, now: float):
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class CallManager:
    """Owns every leg; turns SIP events into leg/call state and runs the application per inbound call."""

    def __init__(self, sip: SipPort, media_engine, application: CallApplication, *,
                 local_ip: str, trusted_peers: list[str] | None = None, default_region: str = "IT",
                 codecs: tuple[str, ...] = ("PCMU", "PCMA"), ptime: int = 20,
                 dtmf_mode_for: Callable[[str], Any] | None = None,
                 limits: CallLimits | None = None,
                 on_call_ended: Callable[[Call], Any] | None = None):
        self.sip = sip
        self.media = media_engine
        self.app = application
        self.local_ip = local_ip
        self.trusted_peers = list(trusted_peers or [])
        self.default_region = default_region
        self.codecs = codecs
        self.ptime = ptime
        self.dtmf_mode_for = dtmf_mode_for
        self.limits = limits or CallLimits()
        self.on_call_ended = on_call_ended
        # ``on_refer(leg, event)``: who acts on a REFER from a phone (routing's blind transfer); it must answer
        # with ``sip.notify_refer``. Without one the REFER is declined (sipfrag 603).
        self.on_refer: Callable[[Leg, ReferReceived], Any] | None = None
        self.legs: dict[CallHandle, Leg] = {}
        self.calls: dict[CallHandle, Call] = {}
        self._buckets: dict[str, _TokenBucket] = {}
        self._accepting = True
        self._ids = itertools.count(1)
        self.stats = {"offered": 0, "rejected_busy": 0, "rejected_rate": 0, "rejected_codec": 0,
                      "completed": 0, "app_errors": 0}

    # ------------------------------------------------------------------ plumbing

    @property
    def active_calls(self) -> int:
        return len(self.calls)

    def stop_accepting(self) -> None:
        self._accepting = False

    # ------------------------------------------------------------------ SIP events

    async def on_event(self, event: Event) -> None:
        """The SIP server's ``on_event`` callback."""
        self.handle_event(event)

    def handle_event(self, event: Event) -> None:
        try:
            self._dispatch(event)
        except Exception:
            log.exception("call layer failed on %s", type(event).__name__)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, IncomingCall):
            self._incoming(event)
            return
        leg = self.legs.get(event.handle)
        if leg is None:
            return
        if isinstance(event, CallAcked):
            pass
        elif isinstance(event, CallEnded):
            self._leg_ended(leg, event.reason, event.status)
        elif isinstance(event, CallCancelled):
            leg.end_reason = EndReason.CANCELLED
        elif isinstance(event, InfoReceived):
            self._info(leg, event)
        elif isinstance(event, ReInviteReceived):
            self._reinvite(leg, event)
        elif isinstance(event, ReferReceived):
            self._refer(leg, event)
        elif isinstance(event, OutgoingAnswered):
            if leg._answered is not None and not leg._answered.done():
                self._start_answered_media(leg, event.response)
                leg._answered.set_result(event.response)
        elif isinstance(event, OutgoingFailed):
            if leg._answered is not None and not leg._answered.done():
                leg._answered.set_exception(OriginateFailed(event.status, event.reason))
        elif isinstance(event, (OutgoingProgress, ReInviteCompleted)):
            pass

    @staticmethod
    def _start_answered_media(leg: Leg, response) -> None:
        """Start the media of an answered outgoing leg now, not when ``originate`` resumes: the far end's first
        packets can arrive in the same loop iteration as its 200 OK, and a session not yet started drops them
        (the start of a greeting, an agent's "hello")."""
        if leg._offer_sdp is None or leg.session is None or leg.negotiated is not None:
            return
        try:
            negotiated = parse_answer(leg._offer_sdp, response.body)
        except Exception:  # originate parses it again and reports the error
            return
        leg.session.start(negotiated)
        leg.negotiated = negotiated

    def _incoming(self, ev: IncomingCall) -> None:
        src_ip = ev.source[0]
        self.stats["offered"] += 1
        now = time.monotonic()
        if not self._accepting or len(self.calls) >= self.limits.max_concurrent_calls:
            self.stats["rejected_busy"] += 1
            self.sip.reject(ev.handle, 503, "Service Unavailable", [("Retry-After", "5")])
            return
        bucket = self._buckets.get(src_ip)
        if bucket is None:
            if len(self._buckets) > 10000:
                self._buckets.clear()
            rate = self.limits.max_calls_per_second_per_source
            untrusted = self.limits.max_calls_per_second_per_untrusted_source
            if untrusted is not None and not _is_trusted(src_ip, self.trusted_peers):
                rate = min(rate, untrusted)
            bucket = self._buckets[src_ip] = _TokenBucket(rate, now)
        if not bucket.take(now):
            self.stats["rejected_rate"] += 1
            self.sip.reject(ev.handle, 503, "Too Many Calls", [("Retry-After", "2")])
            return
        try:
            offer = parse_sdp(ev.request.body) if ev.request.body else None
            if offer is not None:
                answer_offer(offer, self.local_ip, 0, supported=self.codecs)
        except NoCommonCodec:
            self.stats["rejected_codec"] += 1
            self.sip.reject(ev.handle, 488, "Not Acceptable Here",
                                                  [("Warning", '304 contact-server "no common codec: offer '
                                                    'PCMU or PCMA"')])
            return
        except SdpError as exc:
            self.sip.reject(ev.handle, 488, "Not Acceptable Here",
                                                  [("Warning", f'399 contact-server "bad SDP: {exc}"')])
            return
        identity = extract_identity(ev.request, src_ip, self.trusted_peers, self.default_region)
        leg = Leg(self, ev.handle, outgoing=False)
        leg.offer = offer
        call = Call(id=ev.handle.call_id, leg=leg, identity=identity, source=ev.source)
        self.legs[ev.handle] = leg
        self.calls[ev.handle] = call
        call.task = asyncio.get_running_loop().create_task(self._run_app(call), name=f"call {call.id}")

    async def _run_app(self, call: Call) -> None:
        call_id_var.set(call.id)
        log.info("call arrived", extra={"ani": call.identity.ani_e164, "dnis": call.dnis,
                                        "source": f"{call.source[0]}:{call.source[1]}"})
        try:
            await self.app.run(call)
        except CallerHungUp:
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            self.stats["app_errors"] += 1
            log.exception("call application failed; hanging up")
        finally:
            if not call.leg.ended:
                if call.leg.state is LegState.ANSWERED:
                    call.leg.hangup()
                else:
                    try:
                        self.sip.reject(call.leg.handle, 480, "Temporarily Unavailable")
                    except CallStateError:
                        pass  # the application's reject or the caller's CANCEL ended it; CallEnded is queued
            if call.agent_leg is not None and not call.agent_leg.ended:
                call.agent_leg.hangup()
        # The hook sees the finished call: the application's results (IVR trace, agent) and the end reason.
        try:
            await asyncio.wait_for(call.leg._ended.wait(), 40.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        if self.on_call_ended is not None:
            try:
                self.on_call_ended(call)
            except Exception:
                log.exception("on_call_ended hook failed")

    async def _answer(self, call: Call) -> None:
        leg = call.leg
        if leg.offer is None:
            raise CallError("INVITE without SDP offer is not supported yet: the caller must offer media")
        dtmf_mode = self.dtmf_mode_for(call.source[0]) if self.dtmf_mode_for else None
        session = await self.media.open_session(dtmf_mode=dtmf_mode, name=call.id)
        try:
            sdp, negotiated = answer_offer(leg.offer, self.local_ip, session.local_port, supported=self.codecs)
        except Exception:
            await session.close()
            raise
        session.start(negotiated)
        leg.session = session
        leg.negotiated = negotiated
        if leg.ended:
            await session.close()
            raise CallerHungUp("caller hung up before answer")
        self.sip.answer(leg.handle, sdp)
        leg.state = LegState.ANSWERED
        leg.answered_at = time.time()

    def _info(self, leg: Leg, ev: InfoReceived) -> None:
        from ivr.media.dtmf import parse_info_body

        try:
            dtmf = parse_info_body(ev.request.content_type, ev.request.body)
        except Exception:
            log.info("ignored malformed INFO DTMF body")
            return
        if dtmf is not None and leg.session is not None:
            leg.session.inject_dtmf(dtmf.digit)

    def _refer(self, leg: Leg, ev: ReferReceived) -> None:
        if self.on_refer is None:
            self._notify_refer(leg, 603, "Declined")
            return
        try:
            self.on_refer(leg, ev)
        except Exception:
            log.exception("REFER handler failed")
            self._notify_refer(leg, 500, "Server Internal Error")

    def _notify_refer(self, leg: Leg, status: int, reason: str) -> None:
        notify = getattr(self.sip, "notify_refer", None)
        if notify is None:
            return
        try:
            notify(leg.handle, status, reason)
        except CallStateError:
            pass          # the leg ended or the REFER was already answered

    def _reinvite(self, leg: Leg, ev: ReInviteReceived) -> None:
        """Hold/resume or a new media address: re-answer with the same local port, follow the new remote."""
        if leg.session is None or not ev.request.body:
            self.sip.reject_reinvite(leg.handle, 488)
            return
        try:
            offer = parse_sdp(ev.request.body)
            sdp, negotiated = answer_offer(offer, self.local_ip, leg.session.local_port, supported=self.codecs)
        except (NoCommonCodec, SdpError):
            self.sip.reject_reinvite(leg.handle, 488)
            return
        leg.session.update(negotiated)
        leg.negotiated = negotiated
        leg.on_hold = negotiated.remote_hold
        self.sip.answer_reinvite(leg.handle, sdp)

    def _leg_ended(self, leg: Leg, reason: EndReason, status: int | None) -> None:
        if leg.state is LegState.ENDED:
            return
        leg.state = LegState.ENDED
        leg.end_reason = leg.end_reason or reason
        leg.end_status = status
        leg.ended_at = time.time()
        leg._ended.set()
        if leg._answered is not None and not leg._answered.done():
            leg._answered.set_exception(OriginateFailed(status or 487, reason.value))
        self.legs.pop(leg.handle, None)
        if leg.session is not None:
            asyncio.get_running_loop().create_task(leg.session.close())
        call = self.calls.pop(leg.handle, None)
        if call is not None:
            self.stats["completed"] += 1
            log.info("call ended", extra={"call_id": call.id, "reason": leg.end_reason.value})

    # ------------------------------------------------------------------ outgoing legs (agents, callbacks)

    async def originate(self, target: str, from_uri: str, *, credentials: tuple[str, str] | None = None,
                        destination: tuple[str, int] | None = None, headers=(), ring_timeout: float = 20.0,
                        dtmf_mode=None, on_session=None) -> Leg:
        """Call a SIP URI; returns the answered leg with its media session, or raises OriginateFailed.
        ``on_session(session)`` runs before the INVITE goes out: a listener added there hears the far end's very
        first packets."""
        session = await self.media.open_session(dtmf_mode=dtmf_mode, name=target)
        if on_session is not None:
            on_session(session)
        offer_sdp = make_offer(self.local_ip, session.local_port, tuple(self.codecs))
        handle = self.sip.invite(target, from_uri, offer_sdp, headers=headers,
                                                       credentials=credentials, destination=destination)
        leg = Leg(self, handle, outgoing=True, session=session)
        leg._offer_sdp = offer_sdp
        leg._answered = asyncio.get_running_loop().create_future()
        # A failure that lands after we stopped waiting (timeout, cancel) is expected: mark it retrieved.
        leg._answered.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.legs[handle] = leg
        try:
            response = await asyncio.wait_for(asyncio.shield(leg._answered), ring_timeout)
        except asyncio.TimeoutError:
            leg.hangup()
            await session.close()
            raise OriginateFailed(408, "no answer")
        except OriginateFailed:
            await session.close()
            raise
        except asyncio.CancelledError:
            leg.hangup()
            await session.close()
            raise
        if leg.negotiated is None:
            negotiated = parse_answer(offer_sdp, response.body)
            session.start(negotiated)
            leg.negotiated = negotiated
        leg.state = LegState.ANSWERED
        leg.answered_at = time.time()
        return leg

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop taking calls (503), let calls finish for ``grace`` seconds, then hang up the rest."""
        self.stop_accepting()
        deadline = time.monotonic() + grace
        while self.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for leg in list(self.legs.values()):
            leg.hangup()
        for call in list(self.calls.values()):
            if call.task is not None:
                call.task.cancel()
