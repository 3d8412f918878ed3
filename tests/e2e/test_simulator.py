"""The IVR simulator (ivr.simulator) driven step by step against the real server stack: it hears the greeting,
its digits and its voice reach the application, and who hung up is reported as it happened."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from ivr.calls import Call
from ivr.cli import main as cli_main
from ivr.media.audio import load_wav_8k
from ivr.media.dtmf import tone_sequence
from ivr.media.rtp import RtpPacket
from ivr.sip.events import EndReason
from ivr.simulator import SimulatedCall, _Timeline, heard_segments, simulate
from tests.conftest import FIXTURES
from tests.e2e.harness import best_correlation, running_server

GREETING = load_wav_8k(FIXTURES / "tests" / "greeting_en.wav")
VOICE = load_wav_8k(FIXTURES / "voices" / "ls-2414" / "2414-128291-0000.wav")
BEEP = (8000 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)).astype(np.int16)


@dataclass
class GreetCollectRecordApp:
    """Greeting, digits up to '#', a beep, the caller's answer recorded, a goodbye beep, hang-up."""

    calls: list[Call] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    recorded: list[np.ndarray] = field(default_factory=list)
    ended: list[EndReason | None] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        try:
            await call.answer()
            await call.play(GREETING)
            result = await call.collect_digits(6, first_timeout=8, inter_digit_timeout=3, terminator="#")
            self.digits.append(result.digits)
            await call.play(BEEP)
            self.recorded.append(await call.record(6.0, silence_end_seconds=0.8, start_timeout=5.0))
            await call.play(BEEP)
            call.hangup()
        finally:
            await call.leg.wait_ended()
            self.ended.append(call.leg.end_reason)


async def test_step_by_step_call_greeting_digits_voice_and_server_hangup():
    app = GreetCollectRecordApp()
    async with running_server(app) as srv:
        async with SimulatedCall(srv.address, "3471000009", "800100") as call:
            assert call.answered
            assert await call.wait_for_prompt_end(silence=0.6, timeout=10)  # the greeting
            call.send_dtmf("42#")
            assert await call.wait_for_prompt_end(silence=0.4, timeout=10)  # the beep
            await call.play(VOICE)
            assert await call.wait_ended(15)
        result = call.result

    identity = app.calls[0].identity
    assert identity.ani_e164 == "+393471000009"  # from P-Asserted-Identity (127.0.0.1 is a trusted peer)
    assert identity.dnis == "800100"
    assert app.digits == ["42"]
    assert app.ended == [EndReason.BYE_LOCAL]

    assert result.answered and result.status == 200 and result.setup_seconds is not None
    assert result.hung_up_by == "server" and result.end_reason == "bye_remote"
    assert result.heard(GREETING)
    assert not result.heard(VOICE)  # the caller's own voice is not echoed back
    # greeting, beep, beep: three prompts on the same clock as the digits and the voice
    greeting, beep1, beep2 = result.segments
    assert greeting.start < 0.5 and abs(greeting.duration - len(GREETING) / 8000) < 0.5
    sent_at = result.digits_sent[0][0]
    assert result.digits_sent[0][1] == "42#" and greeting.end < sent_at < beep1.start
    assert abs(beep1.duration - 0.5) < 0.15 and abs(beep2.duration - 0.5) < 0.15
    (voice_start, voice_end), = result.voice_sent
    assert beep1.end < voice_start and voice_end < beep2.start
    assert result.duration >= beep2.end - 0.1
    # what the server recorded is the simulator's voice
    assert best_correlation(np.concatenate([np.zeros(800, np.int16), VOICE]), app.recorded[0]) > 0.9


@dataclass
class HoldApp:
    ended: list[EndReason | None] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        await call.answer()
        await call.play(GREETING[:8000])
        await call.leg.wait_ended()
        self.ended.append(call.leg.end_reason)


async def test_timed_script_caller_hangs_up_at_duration():
    app = HoldApp()
    async with running_server(app) as srv:
        result = await simulate(srv.address, "+393471000003", "800100", duration=2.5)
        for _ in range(20):
            if app.ended:
                break
            await asyncio.sleep(0.05)
    assert result.answered and result.hung_up_by == "caller" and result.end_reason == "bye_local"
    assert app.ended == [EndReason.BYE_REMOTE]
    assert 2.0 < result.duration < 5.0
    assert len(result.segments) == 1 and result.segments[0].start < 0.5


@dataclass
class BusyApp:
    calls: list[Call] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        call.reject(486, "Busy Here")


async def test_rejected_call_is_reported_not_raised():
    async with running_server(BusyApp()) as srv:
        result = await simulate(srv.address, "+393471000004", "800100", dtmf=[(0.5, "1")], duration=5)
    assert not result.answered
    assert result.status == 486
    assert result.digits_sent == [] and result.hung_up_by is None


def test_cli_bad_arguments_exit_2_with_a_message(capsys):
    assert cli_main(["call", "--server", "127.0.0.1:5060", "--dtmf", "12"]) == 2
    assert "DIGITS@SECONDS" in capsys.readouterr().err
    assert cli_main(["call", "--server", "127.0.0.1:notaport"]) == 2
    assert "port must be a number" in capsys.readouterr().err
    assert cli_main(["call", "--server", "127.0.0.1:5060", "--voice", "/nonexistent/voice.wav"]) == 2
    assert "--voice /nonexistent/voice.wav" in capsys.readouterr().err


def test_prompts_are_split_by_silence():
    sil = np.zeros(8000, np.int16)
    tones = tone_sequence("1", on_ms=700, off_ms=0, level_dbm0=-10.0).astype(np.int16)
    short_gap = np.zeros(2400, np.int16)  # 0.3 s: a pause inside one prompt
    audio = np.concatenate([sil, tones, short_gap, tones, sil, tones, sil, tones[:800]])
    segs = heard_segments(audio)
    assert [(s.start, s.end) for s in segs] == [(1.0, 2.7), (3.7, 4.4)]  # the 0.1 s click at the end is dropped


def test_lost_packets_leave_gaps_instead_of_shifting_the_timeline():
    tl = _Timeline(t0=100.0)
    frame = np.full(160, 1000, np.int16)
    for i in range(50):
        if i in (10, 11, 12):
            continue  # lost
        tl.add(RtpPacket(payload_type=0, sequence=i, timestamp=5000 + 160 * i, ssrc=7), frame,
               now=100.0 + 0.02 * (i + 1) + 0.003 * (i % 3))
    audio = tl.audio()
    assert len(audio) == 50 * 160
    assert not audio[10 * 160:13 * 160].any() and audio[13 * 160:].all()


@dataclass
class RingForeverApp:
    ended: list[EndReason | None] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        await call.ring()
        await call.leg.wait_ended()
        self.ended.append(call.leg.end_reason)


async def test_no_answer_is_reported_and_the_server_sees_the_cancel():
    app = RingForeverApp()
    async with running_server(app) as srv:
        result = await simulate(srv.address, "+393471000005", "800100", ring_timeout=1.5, duration=5)
        for _ in range(40):
            if app.ended:
                break
            await asyncio.sleep(0.05)
    assert not result.answered and result.status == 408
    assert app.ended == [EndReason.CANCELLED]


async def test_a_call_the_application_rejects_still_reaches_on_call_ended():
    """Regression: after the application's own reject, the call layer's fallback 480 hit the SIP layer's
    'unknown or finished call' error, which escaped the call task and skipped the on_call_ended hook (no call
    record, no metrics for calls the application turned away)."""
    app = BusyApp()
    ended: list[Call] = []
    async with running_server(app) as srv:
        srv.manager.on_call_ended = ended.append
        result = await simulate(srv.address, "+393471000006", "800100", duration=5)
        await asyncio.wait_for(app.calls[0].task, 5)
    assert result.status == 486
    assert app.calls[0].task.exception() is None
    assert ended == app.calls and ended[0].leg.end_reason is EndReason.REJECTED
