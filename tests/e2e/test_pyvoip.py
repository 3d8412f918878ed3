"""pyVoIP 1.6.8, an independent SIP/RTP implementation, against the server's stack in both roles: as the caller
it registers (its REGISTER is answered by the server's SIP stack, not patched away), calls, and hears the
greeting through its own G.711 decoder and 8-bit PCM; as a registered phone it is called by the server's
outbound leg (as routing rings an agent) and audio flows both ways until the server's BYE.

The registrar here accepts any REGISTER: the server's digest registrar (ivr.sip.registrar) requires qop=auth and
a digest-uri equal to the Request-URI, and pyVoIP 1.6.8 sends an RFC 2069 digest (no qop, no cnonce) over
``sip:HOST;transport=UDP`` while its Request-URI is ``sip:HOST``, so it is refused there (401 twice).

(tests/e2e/test_pyvoip_media.py has pyVoIP's voice recorded by the server and its in-band DTMF detected.)
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np

import pyVoIP.VoIP as pv  # before pyVoIP.SIP: its modules import each other

from ivr.calls import Call
from ivr.media.audio import load_wav_8k
from ivr.sip.events import EndReason
from ivr.sip.message import SipRequest, SipResponse, make_response, new_tag
from ivr.simulator import heard_share
from tests.conftest import FIXTURES
from tests.e2e.harness import free_udp_port, running_server

GREETING = load_wav_8k(FIXTURES / "tests" / "greeting_en.wav")
USER, PASSWORD = "393471000001", "pyvoip-secret"


@dataclass
class OpenRegistrar:
    """Answers every REGISTER with 200 and keeps (user, expires) in order, for the assertions."""

    seen: list[tuple[str, int]] = field(default_factory=list)

    def handle(self, request: SipRequest, source, transport, now: float) -> SipResponse:
        expires = int(request.headers.get("Expires") or 3600)
        self.seen.append((request.from_.uri.user, expires))
        contacts = [("Contact", f"{c};expires={expires}") for c in request.headers.raw_values("Contact")]
        return make_response(request, 200, to_tag=new_tag(), headers=contacts)

    def bound(self) -> list[str]:
        users: dict[str, int] = {}
        for user, expires in self.seen:
            users[user] = expires
        return [u for u, e in users.items() if e > 0]


@dataclass
class GreetApp:
    registrar: OpenRegistrar
    calls: list[Call] = field(default_factory=list)
    bound_at_call: list[list[str]] = field(default_factory=list)
    ended: list[EndReason | None] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        self.bound_at_call.append(self.registrar.bound())
        await call.answer()
        await call.sleep(0.5)
        await call.play(GREETING)
        await call.sleep(0.5)
        call.hangup()
        await call.leg.wait_ended()
        self.ended.append(call.leg.end_reason)


def from_unsigned_8bit(data: bytes) -> np.ndarray:
    return ((np.frombuffer(data, np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)


def register_call_and_listen(server_port: int, stop: threading.Event) -> tuple[np.ndarray, str]:
    """Runs in a worker thread (pyVoIP is threaded and blocking). Reads what it hears 20 ms at a time, half a
    second behind real time so that its buffer always holds the frame asked for (its non-blocking read pads
    missing data with silence, its blocking read drops silent frames)."""
    low = random.randint(20000, 30000) // 2 * 2
    phone = pv.VoIPPhone("127.0.0.1", server_port, USER, PASSWORD, myIP="127.0.0.1", sipPort=free_udp_port(),
                         rtpPortLow=low, rtpPortHigh=low + 100)
    heard: list[bytes] = []
    phone.start()  # REGISTER, 200
    try:
        if phone.get_status() != pv.PhoneStatus.REGISTERED:
            return np.zeros(0, np.int16), f"not registered: {phone.get_status()}"
        call = phone.call("800100")
        deadline = time.monotonic() + 10
        while call.state != pv.CallState.ANSWERED:
            if time.monotonic() > deadline or stop.is_set():
                return np.zeros(0, np.int16), f"not answered: {call.state}"
            time.sleep(0.01)
        next_read = time.monotonic() + 0.5
        deadline = time.monotonic() + 15
        while call.state == pv.CallState.ANSWERED and time.monotonic() < deadline and not stop.is_set():
            time.sleep(max(0.0, next_read - time.monotonic()))
            heard.append(call.read_audio(160, blocking=False))
            next_read += 0.02
        state = call.state
        if state == pv.CallState.ANSWERED:
            call.hangup()
        return from_unsigned_8bit(b"".join(heard)), f"ended in state {state}"
    finally:
        phone.stop()  # de-registers


async def test_pyvoip_registers_calls_and_hears_the_greeting():
    loop = asyncio.get_running_loop()
    registrar = OpenRegistrar()
    app = GreetApp(registrar)
    stop = threading.Event()
    async with running_server(app) as srv:
        srv.sip.ua.set_registrar(registrar)
        try:
            heard, how = await loop.run_in_executor(None, register_call_and_listen, srv.port, stop)
        finally:
            stop.set()  # also when the test is cancelled: the worker thread then ends within 20 ms
        bound_after = registrar.bound()

    assert app.bound_at_call == [[USER]], how  # registered before it called
    assert bound_after == [] and registrar.seen[-1] == (USER, 0)  # and de-registered when it stopped
    assert app.calls[0].identity.ani_raw == USER
    assert app.ended == [EndReason.BYE_LOCAL], how
    assert "ENDED" in how  # it took the server's BYE
    assert heard_share(heard, GREETING) >= 0.8


_RAW_VOICE = load_wav_8k(FIXTURES / "voices" / "ls-2414" / "2414-128291-0000.wav")
# peak at -3 dBFS: pyVoIP carries audio as 8-bit PCM, whose quantisation noise (-48 dBFS) would otherwise be
# as loud as the quiet syllables of this recording (-45 dBFS)
VOICE = (_RAW_VOICE * (0.7 * 32767 / np.abs(_RAW_VOICE).max())).astype(np.int16)


def to_unsigned_8bit(pcm: np.ndarray) -> bytes:
    return ((pcm.astype(np.int32) >> 8) + 128).clip(0, 255).astype(np.uint8).tobytes()


@dataclass
class AnsweringPhone:
    """pyVoIP as the called phone (what an agent's softphone is to the server): answers, speaks, listens until
    the server hangs up. Runs on pyVoIP's own threads."""

    heard: list[bytes] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def on_call(self, call) -> None:
        try:
            call.answer()
            call.write_audio(to_unsigned_8bit(np.concatenate([np.zeros(4000, np.int16), VOICE])))
            next_read = time.monotonic() + 0.5
            deadline = time.monotonic() + 15
            while call.state == pv.CallState.ANSWERED and time.monotonic() < deadline:
                time.sleep(max(0.0, next_read - time.monotonic()))
                self.heard.append(call.read_audio(160, blocking=False))
                next_read += 0.02
            self.states.append(str(call.state))
        finally:
            self.done.set()


async def test_server_calls_registered_pyvoip_audio_both_ways_and_bye():
    """The outbound leg (CallManager.originate, as routing rings an agent's phone) against an independent UAS.
    pyVoIP sends every response to the server it registered with, so the call must come from that server."""
    loop = asyncio.get_running_loop()
    phone_app = AnsweringPhone()
    sip_port = free_udp_port()
    low = random.randint(20000, 30000) // 2 * 2
    registrar = OpenRegistrar()
    received: list[np.ndarray] = []
    async with running_server(GreetApp(registrar)) as srv:
        srv.sip.ua.set_registrar(registrar)
        phone = pv.VoIPPhone("127.0.0.1", srv.port, USER, PASSWORD, myIP="127.0.0.1", sipPort=sip_port,
                             rtpPortLow=low, rtpPortHigh=low + 100, callCallback=phone_app.on_call)
        await loop.run_in_executor(None, phone.start)
        try:
            assert registrar.bound() == [USER]
            leg = await srv.manager.originate(f"sip:{USER}@127.0.0.1:{sip_port}", "sip:800100@127.0.0.1",
                                              ring_timeout=10)
            leg.session.add_audio_listener(lambda _s, _p, pcm: received.append(pcm) if pcm is not None else None)
            await leg.session.play(GREETING)
            await asyncio.sleep(1.0)  # pyVoIP reads half a second behind; it speaks 0.5 s to 3.4 s
            leg.hangup()
            await asyncio.wait_for(leg.wait_ended(), 5)
            assert await loop.run_in_executor(None, phone_app.done.wait, 10)
        finally:
            await loop.run_in_executor(None, phone.stop)
    assert leg.end_reason is EndReason.BYE_LOCAL
    assert phone_app.states == ["CallState.ENDED"]  # pyVoIP took our BYE
    assert heard_share(from_unsigned_8bit(b"".join(phone_app.heard)), GREETING) >= 0.8  # our prompt, its decoder
    assert heard_share(np.concatenate(received), VOICE) >= 0.8  # its voice, its encoder
