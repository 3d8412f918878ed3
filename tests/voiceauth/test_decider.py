"""Verification decisions in their own spawned process, on a database file shared with the server process."""

import os
import signal

import pytest
from sqlalchemy import select

from tests.voiceauth.conftest import ENROLL, TEST, phone
from voiceauth.crypto import KeyRing, generate_key
from voiceauth.decider import ProcessDecider
from voiceauth.procpool import EncoderSpec, ProcessEncoderPool
from voiceauth.schema import VerificationAttemptRow
from voiceauth.service import VoiceAuthService
from voiceauth.store import SqlVoiceprintStore
from voiceauth.verification import Decision, VerifierPolicy

pytestmark = pytest.mark.timeout(240)


async def _service(tmp_path, keyring: KeyRing):
    url = f"sqlite:///{tmp_path / 'voice.db'}"
    store = SqlVoiceprintStore(url, keyring)
    policy = VerifierPolicy(threshold=0.8)
    pool = ProcessEncoderPool(EncoderSpec("resemblyzer"), workers=1)
    await pool.start()
    decider = ProcessDecider(url, keyring, pool.model_name, policy)
    await decider.start()
    svc = VoiceAuthService(pool, store, policy, decider=decider)
    store.record_consent("c1", channel="test", actor="t", now=1000.0)
    await svc.enroll_recordings("c1", [(phone("ls-367", n), 8000) for n in ENROLL["ls-367"]], actor="t",
                                now=1001.0)
    return svc, store, decider


async def test_decisions_run_in_their_process_and_are_recorded_in_the_shared_store(tmp_path):
    old = KeyRing.from_base64(generate_key())
    ring = old.merged(KeyRing.from_base64(generate_key()))     # mid-rotation: the decider needs both keys
    svc, store, decider = await _service(tmp_path, old)
    try:
        assert decider.pid not in (None, os.getpid())
        same = await svc.verify("c1", phone("ls-367", TEST["ls-367"][0]), 8000, call_id="k1", now=1002.0)
        other = await svc.verify("c1", phone("ls-2414", "2414-128291-0000"), 8000, call_id="k2", now=1003.0)
        unknown = await svc.verify("nobody", phone("ls-367", TEST["ls-367"][0]), 8000, call_id="k3", now=1004.0)
        assert (same.decision, other.decision, unknown.decision) == (Decision.ACCEPT, Decision.REJECT,
                                                                     Decision.NOT_ENROLLED)
        with store._sessions() as s:
            rows = s.execute(select(VerificationAttemptRow.call_id, VerificationAttemptRow.decision)
                             .order_by(VerificationAttemptRow.id)).all()
        assert [tuple(r) for r in rows] == [("k1", "ACCEPT"), ("k2", "REJECT")]
        # a decider on the rotation ring (new key primary) still opens the voiceprint sealed with the old key
        rotating = ProcessDecider(str(store.engine.url), ring, "resemblyzer", VerifierPolicy(threshold=0.8))
        try:
            assert await rotating.call("precheck", "c1", "k4", 1005.0) is None
        finally:
            await rotating.close()
        with pytest.raises(ValueError, match="not a verification decision"):
            await decider.call("save_voiceprint")
    finally:
        await svc.close()
    with pytest.raises(ValueError, match="in-memory"):
        ProcessDecider("sqlite://", old, "resemblyzer", VerifierPolicy(threshold=0.8))


async def test_a_dead_decider_fails_one_verification_with_error_then_comes_back(tmp_path):
    svc, store, decider = await _service(tmp_path, KeyRing.from_base64(generate_key()))
    try:
        first = decider.pid
        os.kill(first, signal.SIGKILL)
        lost = await svc.verify("c1", phone("ls-367", TEST["ls-367"][0]), 8000, call_id="d1", now=1002.0)
        assert lost.decision is Decision.ERROR and "decision process" in lost.detail
        back = await svc.verify("c1", phone("ls-367", TEST["ls-367"][1]), 8000, call_id="d2", now=1003.0)
        assert back.decision is Decision.ACCEPT and decider.restarts == 1 and decider.pid != first
    finally:
        await svc.close()
