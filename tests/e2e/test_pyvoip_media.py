"""pyVoIP, an independent SIP/RTP implementation, as the caller: the server records its voice (compared with the
file it sent) and hears its keypad, which pyVoIP can only send as in-band tones (Goertzel detection)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import numpy as np

import pyVoIP.VoIP as pv  # before pyVoIP.SIP: its modules import each other
from pyVoIP.SIP import SIPClient

from ivr.calls import Call
from ivr.media.audio import load_wav_8k
from ivr.media.dtmf import tone_sequence
from tests.conftest import FIXTURES
from tests.e2e.harness import best_correlation, running_server

VOICE = load_wav_8k(FIXTURES / "tests" / "greeting_en.wav")


@dataclass
class RecordingApp:
    mode: str
    recorded: list[np.ndarray] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        await call.answer()
        if self.mode == "record":
            self.recorded.append(await call.record(8.0, silence_end_seconds=1.0, start_timeout=8.0))
        else:
            result = await call.collect_digits(4, first_timeout=10, inter_digit_timeout=4, terminator="#")
            self.digits.append(result.digits)
        call.hangup()


def to_unsigned_8bit(pcm: np.ndarray) -> bytes:
    """pyVoIP's write_audio takes 8-bit unsigned PCM."""
    return ((pcm.astype(np.int32) >> 8) + 128).clip(0, 255).astype(np.uint8).tobytes()


def place_call_and_send(server_port: int, audio: bytes) -> None:
    """Runs in a worker thread: pyVoIP is threaded and polls."""
    import time

    low = random.randint(20000, 30000) // 2 * 2
    phone = pv.VoIPPhone("127.0.0.1", server_port, "393471000001", "pw", myIP="127.0.0.1",
                         sipPort=random.randint(41000, 50000), rtpPortLow=low, rtpPortHigh=low + 100)
    phone.start()
    try:
        call = phone.call("800100")
        deadline = time.monotonic() + 10
        while call.state != pv.CallState.ANSWERED:
            if time.monotonic() > deadline:
                raise AssertionError(f"pyVoIP call not answered: {call.state}")
            time.sleep(0.05)
        time.sleep(0.3)
        call.write_audio(audio)  # queued and paced by pyVoIP's own RTP thread
        deadline = time.monotonic() + 20
        while call.state == pv.CallState.ANSWERED and time.monotonic() < deadline:
            time.sleep(0.1)  # the server hangs up when it has what it wants
        if call.state == pv.CallState.ANSWERED:
            call.hangup()
    finally:
        phone.stop()


async def _run(app: RecordingApp, audio: bytes) -> None:
    original = SIPClient.register
    SIPClient.register = lambda self: True  # pyVoIP always REGISTERs first; these calls need no registrar
    try:
        async with running_server(app) as srv:
            await asyncio.get_running_loop().run_in_executor(None, place_call_and_send, srv.port, audio)
            await asyncio.sleep(0.2)
    finally:
        SIPClient.register = original


async def test_server_records_what_pyvoip_sent():
    app = RecordingApp("record")
    silence = np.zeros(8000, dtype=np.int16)
    await _run(app, to_unsigned_8bit(np.concatenate([silence, VOICE, silence, silence])))
    assert len(app.recorded) == 1
    heard = app.recorded[0]
    assert len(heard) > 0.8 * len(VOICE)
    # 8-bit PCM, then mu-law, then back: a 2-second stretch of what was recorded is found in what was sent
    stretch = heard[8000:24000]
    padded = np.concatenate([np.zeros(8000, np.int16), VOICE, np.zeros(8000, np.int16)])
    assert best_correlation(padded, stretch) > 0.9


async def test_inband_dtmf_from_pyvoip_is_detected():
    app = RecordingApp("digits")
    tones = tone_sequence("1379#", on_ms=120, off_ms=120, level_dbm0=-10.0)
    silence = np.zeros(4000, dtype=np.int16)
    await _run(app, to_unsigned_8bit(np.concatenate([silence, tones.astype(np.int16), silence])))
    assert app.digits == ["1379"]
