import numpy as np
import pytest
from sqlalchemy import create_engine, select

from voiceauth.crypto import KeyRing, generate_key
from voiceauth.errors import KeyringError
from voiceauth.schema import EnrollmentAudioRow, VoiceAuthBase, VoiceprintRow
from voiceauth.store import AttemptRecord, SqlVoiceprintStore
from voiceauth.voiceprint import Voiceprint

NOW = 1_700_000_000.0


def _vp(cid="c1", model="resemblyzer", seed=0):
    v = np.random.default_rng(seed).random(256).astype(np.float32)
    return Voiceprint(cid, model, v / np.linalg.norm(v), 3)


def test_tables_live_on_their_own_metadata():
    names = set(VoiceAuthBase.metadata.tables)
    assert names == {"voiceauth_voiceprints", "voiceauth_enrollment_audio", "voiceauth_consents",
                     "voiceauth_verification_attempts", "voiceauth_watchlist", "voiceauth_audit_log"}


def test_voiceprint_is_encrypted_at_rest(tmp_path, keyring):
    url = f"sqlite:///{tmp_path / 'v.db'}"
    store = SqlVoiceprintStore(url, keyring)
    vp = _vp()
    store.save_voiceprint(vp, actor="agent7", now=NOW)
    store.add_enrollment_take("c1", "resemblyzer", np.full(800, 0.25, np.float32), 8000, vp.embedding, "h", NOW)
    with store.engine.connect() as c:
        row = c.execute(select(VoiceprintRow)).one()
        take = c.execute(select(EnrollmentAudioRow)).one()
    plain = vp.embedding.astype("<f4").tobytes()
    assert plain not in row.blob and plain[:64] not in row.blob
    assert (np.int16(8192).tobytes() * 16) not in take.audio_blob
    assert row.key_id == keyring.primary_id
    got = SqlVoiceprintStore(url, keyring).get_voiceprint("c1", "resemblyzer")
    assert np.array_equal(got.embedding, vp.embedding) and got.count == 3


def test_wrong_key_fails_clearly(tmp_path, keyring):
    url = f"sqlite:///{tmp_path / 'v.db'}"
    SqlVoiceprintStore(url, keyring).save_voiceprint(_vp(), actor="a", now=NOW)
    with pytest.raises(KeyringError, match="not in the key ring"):
        SqlVoiceprintStore(url, KeyRing.from_base64(generate_key())).get_voiceprint("c1", "resemblyzer")


def test_blob_moved_to_another_customer_does_not_decrypt(store):
    store.save_voiceprint(_vp("c1"), actor="a", now=NOW)
    store.save_voiceprint(_vp("c2", seed=1), actor="a", now=NOW)
    with store._sessions.begin() as s:
        rows = {r.customer_id: r for r in s.scalars(select(VoiceprintRow))}
        rows["c2"].blob = rows["c1"].blob
    with pytest.raises(KeyringError, match="wrong key or tampered"):
        store.get_voiceprint("c2", "resemblyzer")


def test_key_rotation_reencrypts_everything(tmp_path, keyring):
    url = f"sqlite:///{tmp_path / 'v.db'}"
    store = SqlVoiceprintStore(url, keyring)
    vp = _vp()
    store.save_voiceprint(vp, actor="a", now=NOW)
    store.add_enrollment_take("c1", "resemblyzer", np.zeros(800, np.float32), 8000, vp.embedding, "h", NOW)
    store.record_attempt(AttemptRecord("c1", "call1", 0.9, 0.8, "ACCEPT", "resemblyzer", (), NOW, "x", vp.embedding))
    wid = store.add_watchlist("fraud-1", "resemblyzer", vp.embedding, actor="sec", now=NOW)
    new = KeyRing.from_base64(generate_key())
    assert store.rotate_keys(new, actor="ops", now=NOW) == 5
    # only the new key is needed from now on
    fresh = SqlVoiceprintStore(url, new)
    assert np.array_equal(fresh.get_voiceprint("c1", "resemblyzer").embedding, vp.embedding)
    assert np.array_equal(fresh.enrollment_takes("c1", "resemblyzer")[0].embedding, vp.embedding)
    assert np.array_equal(fresh.recent_attempts("c1", "resemblyzer")[0].embedding, vp.embedding)
    assert fresh.watchlist("resemblyzer")[0].id == wid
    with pytest.raises(KeyringError):
        SqlVoiceprintStore(url, keyring).get_voiceprint("c1", "resemblyzer")
    assert any(e.action == "keys_rotated" for e in fresh.audit_log())


def test_consent_withdrawal_erases_and_is_audited(store):
    store.record_consent("c1", channel="phone", purpose="voice_authentication", actor="ivr", now=NOW)
    assert store.active_consent("c1").channel == "phone"
    vp = _vp()
    store.save_voiceprint(vp, actor="ivr", now=NOW)
    store.add_enrollment_take("c1", "resemblyzer", np.zeros(800, np.float32), 8000, vp.embedding, "h", NOW)
    store.record_attempt(AttemptRecord("c1", "k", 0.9, 0.8, "ACCEPT", "resemblyzer", (), NOW, "x", vp.embedding))
    report = store.withdraw_consent("c1", actor="agent9", now=NOW + 60)
    assert (report.voiceprints, report.enrollment_takes, report.attempt_embeddings) == (1, 1, 1)
    assert store.active_consent("c1") is None
    assert store.get_voiceprint("c1", "resemblyzer") is None
    assert store.enrollment_audio("c1") == []
    assert store.recent_attempts("c1")[0].embedding is None
    assert store.consents("c1")[0].withdrawn_at == NOW + 60
    actions = [(e.action, e.actor) for e in store.audit_log("c1")]
    assert ("consent_withdrawn", "agent9") in actions and ("biometric_data_erased", "agent9") in actions


def test_key_configuration_errors(tmp_path):
    with pytest.raises(KeyringError, match="VOICEAUTH_KEY"):
        KeyRing.from_env({})
    with pytest.raises(KeyringError, match="base64"):
        KeyRing.from_env({"VOICEAUTH_KEY": "not base64!"})
    f = tmp_path / "keys"
    k1, k2 = generate_key(), generate_key()
    f.write_text(f"# primary first\n{k2}\n{k1}\n")
    ring = KeyRing.from_env({"VOICEAUTH_KEY_FILE": str(f)})
    assert ring.primary_id == KeyRing.from_base64(k2).primary_id and len(ring.key_ids) == 2
    with pytest.raises(KeyringError, match="cannot read"):
        KeyRing.from_file(tmp_path / "missing")


def test_other_packages_can_create_the_tables_in_their_database():
    engine = create_engine("sqlite://")
    VoiceAuthBase.metadata.create_all(engine)
    store = SqlVoiceprintStore(engine, KeyRing.from_base64(generate_key()), create=False)
    store.save_voiceprint(_vp(), actor="a", now=NOW)
    assert store.voiceprint_models("c1") == ["resemblyzer"]
