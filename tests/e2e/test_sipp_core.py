"""The telephony core against SIPp on loopback: answer, prompt audio, DTMF, CANCEL, BYE both ways, duplicates."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import numpy as np
import pytest

from ivr.calls import Call
from ivr.media.audio import load_wav_8k
from tests.conftest import FIXTURES
from tests.e2e.harness import RtpSink, best_correlation, run_sipp, running_server

pytestmark = pytest.mark.sipp

GREETING = load_wav_8k(FIXTURES / "tests" / "greeting_en.wav")


@dataclass
class ScriptApp:
    """A tiny call application for exercising the core: what it saw is kept for the assertions."""

    mode: str = "greet"
    calls: list[Call] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        try:
            if self.mode == "ring_forever":
                await call.ring()
                await call.leg.wait_ended()
                return
            await call.answer()
            self.answered.set()
            if self.mode == "greet":
                await call.play(GREETING)
                await call.leg.wait_ended()
            elif self.mode == "greet_and_hangup":
                await call.play(GREETING)
                call.hangup()
            elif self.mode == "digits":
                result = await call.collect_digits(5, first_timeout=10, inter_digit_timeout=5, terminator="#")
                self.digits.append(result.digits)
                await call.leg.wait_ended()
            elif self.mode == "hold":
                await call.leg.wait_ended()
        finally:
            self.ended.append(call.leg.end_reason.value if call.leg.end_reason else "app")


async def test_answer_and_caller_hears_the_prompt(tmp_path):
    app = ScriptApp("greet")
    sink = await RtpSink().open()
    async with running_server(app) as srv:
        res = await run_sipp(srv.address, "uac_basic.xml", tmp=tmp_path,
                             variables={"caller": "+393331234567", "dialed": "800100", "hold": 5500,
                                        "rtpport": sink.port})
        assert res.rc == 0, res.stdout[-2000:] + res.errors
        await asyncio.sleep(0.2)
    sink.close()
    assert len(app.calls) == 1
    call = app.calls[0]
    assert call.identity.ani_e164 == "+393331234567"
    assert call.dnis == "800100"
    assert app.ended == ["bye_remote"]
    heard = sink.audio()
    # the greeting went through mu-law: the caller's audio must contain it almost exactly
    assert len(heard) >= len(GREETING)
    assert best_correlation(heard, GREETING) > 0.98
    # RTP header sanity: one SSRC, consecutive sequence numbers, 160-sample timestamps
    pkts = sink.parsed()
    assert len({p.ssrc for p in pkts}) == 1
    seqs = np.array([p.sequence for p in pkts], dtype=np.int64)
    assert np.all(np.diff(seqs) % 65536 == 1)
    ts = np.array([p.timestamp for p in pkts], dtype=np.int64)
    assert np.all(np.diff(ts) % (1 << 32) == 160)


async def test_rfc4733_digits_are_detected_once(tmp_path):
    app = ScriptApp("digits")
    sink = await RtpSink().open()
    async with running_server(app) as srv:
        res = await run_sipp(srv.address, "uac_dtmf.xml", tmp=tmp_path,
                             variables={"caller": "+393331234567", "dialed": "800100", "before": 1000,
                                        "hold": 4000, "digits": "1234#", "rtpport": sink.port})
        assert res.rc == 0, res.stdout[-2000:] + res.errors
        await asyncio.sleep(0.2)
    sink.close()
    assert app.digits == ["1234"]


async def test_cancel_before_answer_gives_200_and_487(tmp_path):
    app = ScriptApp("ring_forever")
    async with running_server(app) as srv:
        res = await run_sipp(srv.address, "uac_cancel.xml", tmp=tmp_path,
                             variables={"caller": "+393331234567", "dialed": "800100", "rtpport": 40000})
        assert res.rc == 0, res.stdout[-2000:] + res.errors
        await asyncio.sleep(0.2)
        assert srv.manager.active_calls == 0
    assert app.ended == ["cancelled"]


async def test_server_hangs_up_after_the_prompt(tmp_path):
    app = ScriptApp("greet_and_hangup")
    sink = await RtpSink().open()
    async with running_server(app) as srv:
        res = await run_sipp(srv.address, "uac_server_hangs_up.xml", tmp=tmp_path,
                             variables={"caller": "+393331234567", "dialed": "800100", "rtpport": sink.port})
        assert res.rc == 0, res.stdout[-2000:] + res.errors
        await asyncio.sleep(0.2)
        assert srv.manager.active_calls == 0
    sink.close()
    assert app.calls[0].leg.end_reason.value == "bye_local"
    assert best_correlation(sink.audio(), GREETING) > 0.98


async def test_retransmitted_invite_is_answered_once(tmp_path):
    app = ScriptApp("hold")
    async with running_server(app) as srv:
        res = await run_sipp(srv.address, "uac_dup_invite.xml", tmp=tmp_path,
                             variables={"caller": "+393331234567", "dialed": "800100", "rtpport": 40000})
        assert res.rc == 0, res.stdout[-2000:] + res.errors
        await asyncio.sleep(0.2)
        assert srv.sip.ua.stats.retransmissions >= 1
    assert len(app.calls) == 1
    assert app.ended == ["bye_remote"]


async def test_options_ping_is_answered(tmp_path):
    app = ScriptApp("hold")
    async with running_server(app) as srv:
        for transport in ("u1", "t1"):
            res = await run_sipp(srv.address, "uac_options.xml", tmp=tmp_path, transport=transport)
            assert res.rc == 0, res.stdout[-2000:] + res.errors
    assert app.calls == []


async def test_call_over_tcp(tmp_path):
    app = ScriptApp("greet")
    sink = await RtpSink().open()
    async with running_server(app) as srv:
        res = await run_sipp(srv.address, "uac_basic.xml", tmp=tmp_path, transport="t1",
                             variables={"caller": "3331234567", "dialed": "800200", "hold": 1000,
                                        "rtpport": sink.port})
        assert res.rc == 0, res.stdout[-2000:] + res.errors
    sink.close()
    assert app.calls[0].identity.ani_e164 == "+393331234567"  # national number read in the IT region
    assert app.calls[0].dnis == "800200"


async def test_malformed_storm_during_a_live_call(tmp_path):
    """Junk of every kind while a call is up: the call completes, and a new call is still answered."""
    app = ScriptApp("greet")
    sink = await RtpSink().open()
    async with running_server(app) as srv:
        live = asyncio.ensure_future(run_sipp(
            srv.address, "uac_basic.xml", tmp=tmp_path,
            variables={"caller": "+393331234567", "dialed": "800100", "hold": 5000, "rtpport": sink.port}))
        await app.answered.wait()
        invite_head = (b"INVITE sip:800100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
                       b"From: <sip:1@x>;tag=1\r\nTo: <sip:2@y>\r\nCall-ID: junk\r\nCSeq: 1 INVITE\r\n")
        junk = [
            invite_head[:40],                                             # truncated
            invite_head + b"Content-Length: 500\r\n\r\nv=0\r\n",            # Content-Length larger than body
            bytes(range(256)) * 4,                                        # binary junk
            invite_head + b"X-Big: " + b"a" * 65000 + b"\r\n\r\n",           # ~64 KB header
            invite_head.replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE") + b"\r\n",
            b"\x00\x00\x00\x00SIP/2.0 200 OK\r\n\r\n",
            invite_head + b"Via: " + b"SIP/2.0/UDP h;branch=z9hG4bK1, " * 1000 + b"\r\n\r\n",
        ]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            for j in junk:
                try:
                    s.sendto(j, ("127.0.0.1", srv.port))
                except OSError:
                    pass  # a datagram larger than the loopback MTU allows
            await asyncio.sleep(0.01)
        s.close()
        res = await live
        assert res.rc == 0, res.stdout[-2000:] + res.errors
        again = await run_sipp(srv.address, "uac_basic.xml", tmp=tmp_path,
                               variables={"caller": "+393331234567", "dialed": "800100", "hold": 300,
                                          "rtpport": 40000})
        assert again.rc == 0, again.stdout[-2000:] + again.errors
        assert srv.sip.ua.stats.malformed > 0
    sink.close()
    assert len(app.calls) == 2
    assert best_correlation(sink.audio(), GREETING) > 0.98


async def test_flood_from_one_address_does_not_hurt_callers_from_another(tmp_path):
    """10,000 junk messages/s from 127.0.0.2 (over the bounded test window) while SIPp calls from 127.0.0.1:
    the flooder is rate-limited then blocked, every legitimate call completes."""
    from ivr.sip.guard import SourceGuard

    app = ScriptApp("hold")
    guard = SourceGuard(rate=50, burst=100, overruns_to_block=500, trusted=["127.0.0.1/32"])
    async with running_server(app, guard=guard) as srv:
        stop = asyncio.Event()

        async def flood():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.2", 0))
            s.setblocking(False)
            junk = (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:9;branch=z9hG4bKf\r\n"
                    b"From: <sip:f@x>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: flood\r\nCSeq: 1 OPTIONS\r\n\r\n")
            sent = 0
            try:
                while not stop.is_set() and sent < 200_000:
                    for _ in range(100):     # 100 every 10 ms: 10,000 messages per second
                        try:
                            s.sendto(junk, ("127.0.0.1", srv.port))
                            sent += 1
                        except BlockingIOError:
                            pass
                    await asyncio.sleep(0.01)
            finally:
                s.close()
            return sent

        flooder = asyncio.ensure_future(flood())
        res = await run_sipp(srv.address, "uac_basic.xml", tmp=tmp_path, calls=20, rate=10,
                             variables={"caller": "+393331234567", "dialed": "800100", "hold": 500,
                                        "rtpport": 40000})
        stop.set()
        sent = await flooder
        assert res.rc == 0, res.stdout[-2000:] + res.errors
    assert len(app.calls) == 20
    assert sent > 5000
    assert guard.stats.rate_limited + guard.stats.blocked_drops > 0.9 * sent - guard.burst
    assert guard.stats.blocks >= 1
