import numpy as np
import pytest

from tests.voiceauth.conftest import ENROLL, IMPOSTORS, TEST, phone
from voiceauth.channel import resample
from voiceauth.enrollment import EnrollmentPolicy
from voiceauth.errors import ConsentRequired
from voiceauth.pool import EncoderPool
from voiceauth.quality import QualityIssue
from voiceauth.service import VoiceAuthService
from voiceauth.verification import Decision, Flag, Verifier, VerifierPolicy

NOW = 1_700_000_000.0  # 2023-11-14 22:13 UTC


@pytest.fixture
async def service(encoder, store):
    async with EncoderPool(lambda: encoder) as pool:
        yield VoiceAuthService(pool, store, VerifierPolicy.from_calibration("resemblyzer", "ulaw", None,
                                                                            max_failures_per_day=3))


async def enroll(service, cid="cust-2414", spk="ls-2414"):
    service.store.record_consent(cid, channel="phone", purpose="voice_authentication", actor="ivr", now=NOW)
    session = await service.start_enrollment(cid)
    for name in ENROLL[spk]:
        r = await service.add_take(session, phone(spk, name), 8000)
        assert r.accepted, r
    assert session.complete
    return await service.finish_enrollment(session, actor="ivr", now=NOW), session


async def test_enrollment_requires_consent(service):
    with pytest.raises(ConsentRequired, match="record it"):
        await service.start_enrollment("nobody")


async def test_enrollment_rejects_poor_takes_with_a_reason(service):
    service.store.record_consent("c", channel="phone", purpose="voice_authentication", actor="ivr", now=NOW)
    session = await service.start_enrollment("c")
    r = await service.add_take(session, phone("ls-2414", "2414-128291-0001") * 0.003, 8000)
    assert not r.accepted and r.reason is QualityIssue.TOO_QUIET
    r = await service.add_take(session, phone("ls-2414", "2414-128291-0001")[:8000], 8000)
    assert not r.accepted and r.reason is QualityIssue.TOO_SHORT
    assert session.takes == 0 and not session.complete


async def test_enrollment_completes_on_net_speech_target(encoder, store):
    async with EncoderPool(lambda: encoder) as pool:
        svc = VoiceAuthService(pool, store, VerifierPolicy(threshold=0.8),
                               enrollment_policy=EnrollmentPolicy(takes_required=3, net_speech_target_s=8.0))
        store.record_consent("c", channel="web", purpose="voice_authentication", actor="admin", now=NOW)
        vp, session = await svc.enroll_recordings(
            "c", [(phone("ls-2414", n), 8000) for n in ENROLL["ls-2414"]], actor="admin", now=NOW)
    assert session.takes == 2 and vp.count == 2  # 2.9 s + 8.4 s of audio already hold 8 s of speech
    assert abs(np.linalg.norm(vp.embedding) - 1) < 1e-5 and vp.model == "resemblyzer"


async def test_same_speaker_accepted_and_impostor_rejected(service):
    vp, _ = await enroll(service)
    stored = service.store.get_voiceprint("cust-2414", "resemblyzer")
    assert np.allclose(stored.embedding, vp.embedding) and stored.count == 3
    ok = await service.verify("cust-2414", phone("ls-2414", TEST["ls-2414"][1]), 8000, call_id="c1", now=NOW + 10)
    assert ok.decision is Decision.ACCEPT and ok.score >= ok.threshold and ok.model == "resemblyzer"
    bad = await service.verify("cust-2414", phone("ls-1624", IMPOSTORS["ls-1624"]), 8000, call_id="c2",
                               now=NOW + 20)
    assert bad.decision is Decision.REJECT and bad.score < bad.threshold and not bad.flags
    rows = service.store.recent_attempts("cust-2414")
    assert [(r.call_id, r.decision) for r in rows] == [("c2", "REJECT"), ("c1", "ACCEPT")]
    assert rows[1].threshold == ok.threshold and rows[1].score == pytest.approx(ok.score)


async def test_not_enrolled_and_not_enough_speech(service):
    r = await service.verify("ghost", phone("ls-367", "367-130732-0000"), 8000, call_id="x", now=NOW)
    assert r.decision is Decision.NOT_ENROLLED
    await enroll(service)
    r = await service.verify("cust-2414", phone("ls-2414", TEST["ls-2414"][0])[:6000], 8000, call_id="y", now=NOW)
    assert r.decision is Decision.NOT_ENOUGH_SPEECH and r.score is None


async def test_lock_out_after_n_failures_per_day(service):
    await enroll(service)
    impostor = phone("ls-1455", IMPOSTORS["ls-1455"])
    for i in range(3):
        r = await service.verify("cust-2414", impostor[i * 800:], 8000, call_id=f"f{i}", now=NOW + i)
        assert r.decision is Decision.REJECT
    genuine = phone("ls-2414", TEST["ls-2414"][1])
    r = await service.verify("cust-2414", genuine, 8000, call_id="g", now=NOW + 100)
    assert r.decision is Decision.LOCKED_OUT
    assert any(e.action == "locked_out" for e in service.store.audit_log("cust-2414"))
    tomorrow = NOW + 86400
    r = await service.verify("cust-2414", genuine, 8000, call_id="g2", now=tomorrow)
    assert r.decision is Decision.ACCEPT


async def test_replayed_enrollment_take_is_flagged(service):
    await enroll(service)
    r = await service.verify("cust-2414", phone("ls-2414", ENROLL["ls-2414"][1]), 8000, call_id="r", now=NOW)
    assert r.decision is Decision.REJECT and Flag.REPLAY in r.flags
    assert r.score >= r.threshold  # the voice matches: only the replay check stops it


async def test_replayed_attempt_with_noise_is_flagged_by_embedding(service):
    await enroll(service)
    take = phone("ls-2414", TEST["ls-2414"][1])
    first = await service.verify("cust-2414", take, 8000, call_id="a", now=NOW)
    assert first.decision is Decision.ACCEPT
    noisy = take + np.random.default_rng(0).normal(0, 1e-4, take.size).astype(np.float32)
    again = await service.verify("cust-2414", noisy, 8000, call_id="b", now=NOW + 30)
    assert Flag.REPLAY in again.flags and again.decision is Decision.REJECT


async def test_watchlist_hit_on_verification_and_enrollment(service, encoder):
    from voiceauth.voiceprint import mean_embedding

    # the fraudster's voiceprint, built from recordings of earlier fraud calls
    fraud = mean_embedding([encoder.embed(resample(phone("ls-3005", n, "alaw"), 8000, 16000))
                            for n in ENROLL["ls-3005"]])
    service.store.add_watchlist("fraud ring 12", "resemblyzer", fraud, actor="security", now=NOW)
    vp, session = await enroll(service, cid="cust-3005", spk="ls-3005")
    assert "WATCHLIST" in session.flags and session.watchlist_hits[0] == "fraud ring 12"
    r = await service.verify("cust-3005", phone("ls-3005", TEST["ls-3005"][1]), 8000, call_id="w", now=NOW)
    assert Flag.WATCHLIST in r.flags and r.watchlist_label == "fraud ring 12"
    await enroll(service)  # a different voice is not flagged
    r = await service.verify("cust-2414", phone("ls-2414", TEST["ls-2414"][1]), 8000, call_id="v", now=NOW)
    assert Flag.WATCHLIST not in r.flags
    assert any(e.action == "verification_flagged" for e in service.store.audit_log("cust-3005"))


async def test_other_model_embedding_is_an_error(service, store):
    await enroll(service)
    v = Verifier(store, "resemblyzer", service.policy)
    r = v.decide("cust-2414", "m", np.ones(192, np.float32) / np.sqrt(192), "ecapa", now=NOW)
    assert r.decision is Decision.ERROR and Flag.MODEL_MISMATCH in r.flags
    ecapa_verifier = Verifier(store, "ecapa", VerifierPolicy(threshold=0.5))
    assert ecapa_verifier.precheck("cust-2414", "m", NOW).decision is Decision.NOT_ENROLLED


async def test_strong_accept_refreshes_voiceprint_slowly(encoder, store):
    async with EncoderPool(lambda: encoder) as pool:
        svc = VoiceAuthService(pool, store, VerifierPolicy(threshold=0.6, refresh_weight=0.1, refresh_margin=0.05))
        before, _ = await enroll(svc)
        r = await svc.verify("cust-2414", phone("ls-2414", TEST["ls-2414"][1]), 8000, call_id="s", now=NOW)
    assert r.decision is Decision.ACCEPT and Flag.REFRESHED in r.flags
    after = store.get_voiceprint("cust-2414", "resemblyzer")
    assert after.count == before.count + 1
    moved = float(after.embedding @ before.embedding)
    assert 0.99 < moved < 1.0
