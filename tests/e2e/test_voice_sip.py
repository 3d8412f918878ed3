"""Voice verification end to end: a demo customer enrolled from fixture audio calls the retail line from their
registered number, picks a service and speaks over SIP (SIPp streaming real speech as PCMU).

Three calls from the same number, placed at once: the customer (accepted), an impostor (another LibriSpeech
reader: rejected, then the fallback branch), and a replay of one of the customer's enrollment takes (flagged
REPLAY and rejected). The enrollment takes went through G.711 like a phone enrollment; the calls go through
mu-law again on the way in.

Timing: the choice "1" is typed during the welcome (the server keeps it for the main menu), so the verification
prompt (3 s) and its beep start about 2.3 s after answer and recording starts at about 5.5 s (never before
5.15 s: the sum of the prompts); the voice file begins with 1 s of silence and is sent 8 s after answer, so
speech starts at 9 s: inside the recorder's 5 s start window, and 3.5 s of slack for a slow server.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from ivr.media.audio import load_wav_8k
from ivr.media.g711 import ulaw_decode, ulaw_encode
from tests.conftest import FIXTURES
from tests.e2e.harness import SCENARIOS, RtpSink, SippResult
from tests.e2e.server_fixture import IN_HOURS, ContactServer, ShiftedClock, contact_server, run_sipp_call, \
    sipp_call_id

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(240)]

VOICES = FIXTURES / "voices"
CUSTOMER_ANI = "+393471000001"  # Giulia Bianchi, retail, Italian (config/demo_customers.yaml)
ENROLL = [VOICES / "ls-2414" / f"2414-128291-{n}.wav" for n in ("0001", "0006", "0007")]
GENUINE = VOICES / "ls-2414" / "2414-128291-0000.wav"
IMPOSTOR = VOICES / "ls-1624" / "1624-142933-0000.wav"
REPLAYED = ENROLL[1]
SPEAK_AFTER_MS = 7500  # after the digit step began at 500 ms


def phone_line(path: Path) -> np.ndarray:
    """A fixture take as the server records it from a phone: 8 kHz through mu-law."""
    return ulaw_decode(ulaw_encode(load_wav_8k(path))).astype(np.int16)


def caller_voice(path: Path, out: Path) -> Path:
    """The WAV as raw mu-law for SIPp's rtp_stream, with 1 s of silence before (the recorder's noise floor) and
    20 s after: end of speech, and a caller who stays silent at the retry (a phone keeps sending RTP)."""
    subprocess.run(["sox", str(path), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(out),
                    "pad", "1.0", "20.0"], check=True, capture_output=True)
    return out


def voice_scenario(voice: Path, tmp: Path) -> Path:
    text = (SCENARIOS / "uac_ivr_voice.xml").read_text().replace("VOICE_FILE", str(voice))
    out = tmp / f"uac_ivr_voice-{voice.stem}.xml"
    out.write_text(text)
    return out


@dataclass
class VoiceCall:
    sipp: SippResult
    record: dict[str, Any] | None
    attempts: list[dict[str, Any]]

    @property
    def path(self) -> list[dict[str, Any]]:
        return self.record["ivr_path"]

    @property
    def nodes(self) -> list[str]:
        return [f"{e['flow']}.{e['node']}" for e in self.path if e["event"] == "node"]

    def voice_results(self) -> list[str]:
        return [e["result"] for e in self.path if e["event"] == "result" and e["what"] == "verify_voice"]

    def __repr__(self) -> str:  # what an assertion failure shows
        if self.record is None:
            return f"VoiceCall(sipp rc={self.sipp.rc}, no record, attempts={self.attempts})"
        return (f"VoiceCall(sipp rc={self.sipp.rc}, attempts={self.attempts}, voice={self.voice_results()}, "
                f"nodes={self.nodes}, prompts at={[round(e['t'] - self.path[0]['t'], 2) for e in self.path]})")

    def check_call(self) -> dict[str, Any]:
        assert self.sipp.rc == 0, self.sipp.stdout[-1500:] + self.sipp.errors[-1500:]
        assert self.record is not None, f"no ended call record: {self}"
        assert self.record["identified_by"] in ("ani", "pai")
        assert self.record["ivr_exit"] == "queued"
        assert self.record["service"] == "accounts_transfers"
        return self.record


async def _call(srv: ContactServer, name: str, voice_wav: Path, tmp: Path) -> VoiceCall:
    scenario = voice_scenario(caller_voice(voice_wav, tmp / f"{name}.ulaw"), tmp)
    sink = await RtpSink().open()
    tag = f"voice-{name}-{uuid.uuid4().hex[:8]}"
    call_id = sipp_call_id(tag)
    try:
        sipp = asyncio.ensure_future(run_sipp_call(
            srv.address, str(scenario), tag=tag, timeout=90, tmp=tmp,
            variables={"caller": CUSTOMER_ANI, "dialed": "800100", "rtpport": sink.port, "digits": "1",
                       "before": 500, "speak_after": SPEAK_AFTER_MS}))
        with contextlib.suppress(AssertionError):
            await srv.wait_ivr_finished(timeout=60, call_id=call_id)
        srv.hang_up(call_id)  # a queued caller would otherwise wait for an agent
        res = await sipp
        try:
            record = await srv.wait_call_ended(timeout=15, call_id=call_id)
        except AssertionError:
            record = None
    finally:
        sink.close()
    return VoiceCall(res, record, srv.verification_attempts(call_id))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def voice_calls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voice")
    async with contact_server(tmp / "server", clock=ShiftedClock(IN_HOURS)) as srv:
        voice = srv.voice
        assert voice is not None, "the voice service did not start (see the server log)"
        customer = srv.customer_id(CUSTOMER_ANI)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: voice.store.record_consent(
            customer, channel="test", actor="test:enrollment", now=time.time()))
        vp, session = await voice.enroll_recordings(customer, [(phone_line(p), 8000) for p in ENROLL],
                                                    actor="test:enrollment", now=time.time())
        assert vp.count == len(ENROLL), f"enrollment kept {vp.count} takes of {len(ENROLL)}"
        names = ("genuine", "impostor", "replay")
        calls = await asyncio.gather(*(_call(srv, n, w, tmp) for n, w in zip(names, (GENUINE, IMPOSTOR, REPLAYED))))
        yield dict(zip(names, calls)) | {"customer": customer, "model": voice.pool.model_name,
                                         "threshold": voice.policy.threshold}


def test_enrolled_customer_is_accepted_by_voice(voice_calls):
    c: VoiceCall = voice_calls["genuine"]
    rec = c.check_call()
    assert [a["decision"] for a in c.attempts] == ["ACCEPT"], c
    a = c.attempts[0]
    assert a["customer_id"] == voice_calls["customer"] and a["model"] == voice_calls["model"]
    assert a["score"] >= a["threshold"] == pytest.approx(voice_calls["threshold"])
    assert "REPLAY" not in a["flags"]
    v = rec["verification"]
    assert (v["decision"], v["model"]) == ("accept", voice_calls["model"])
    assert v["score"] == pytest.approx(a["score"]) and v["threshold"] == pytest.approx(a["threshold"])
    assert c.voice_results() == ["accept"]
    i = c.nodes.index("handoff.voice")
    assert c.nodes[i + 1:i + 3] == ["handoff.verified", "handoff.hours"]
    assert c.path[-1]["verified"] is True and c.path[-1]["queue"] == "retail_accounts"


def test_impostor_with_the_customers_number_is_rejected_and_falls_back(voice_calls):
    c: VoiceCall = voice_calls["impostor"]
    rec = c.check_call()
    # first attempt: the impostor's speech is scored and rejected; the retry gets silence, then the fallback
    assert [a["decision"] for a in c.attempts] == ["REJECT", "NOT_ENOUGH_SPEECH"], c
    first = c.attempts[0]
    assert first["score"] is not None and first["score"] < first["threshold"]
    assert "REPLAY" not in first["flags"]
    assert c.voice_results() == ["reject", "not_enough_speech"]
    texts = [e["text"] or "" for e in c.path if e["event"] == "prompt" and e["node"] == "voice"]
    assert sum(t.startswith("Non sono riuscito") for t in texts) == 1  # the retry prompt after a reject
    assert "handoff.verified" not in c.nodes
    i = c.nodes.index("handoff.voice")
    assert c.nodes[i + 1:i + 3] == ["handoff.not_verified", "handoff.hours"]
    assert c.path[-1]["verified"] is False and c.path[-1]["queue"] == "retail_accounts"
    assert rec["verification"]["decision"] == "not_enough_speech"  # the record keeps the last decision


def test_replayed_enrollment_take_is_flagged_and_rejected(voice_calls):
    c: VoiceCall = voice_calls["replay"]
    rec = c.check_call()
    first = c.attempts[0]
    assert first["decision"] == "REJECT", c
    assert "REPLAY" in first["flags"], c
    # it is the customer's own voice: only the replay check stops it
    assert first["score"] >= first["threshold"]
    assert c.voice_results()[0] == "reject"
    assert "handoff.verified" not in c.nodes
    assert c.path[-1]["verified"] is False
    # the retry gets silence; the record keeps that last decision
    assert [a["decision"] for a in c.attempts] == ["REJECT", "NOT_ENOUGH_SPEECH"]
    assert rec["verification"]["decision"] == "not_enough_speech"
