"""``contact-server voice rotate-key`` on a server.yaml's database and key file: every blob readable with the new
key alone afterwards, the old key removable (and useless on the rotated data), the rotation audited with its
actor, and a failed rotation changes nothing."""

from __future__ import annotations

import stat

import numpy as np
import pytest

from ivr.cli import main
from tests.e2e.server_fixture import copy_config
from voiceauth.crypto import KeyRing, generate_key
from voiceauth.errors import KeyringError
from voiceauth.store import AttemptRecord, SqlVoiceprintStore
from voiceauth.voiceprint import Voiceprint

NOW = 1_700_000_000.0


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A copied config whose key file holds the old key, and a database with one of every kind of blob."""
    cfg = copy_config(tmp_path)
    url = f"sqlite:///{tmp_path / 'var' / 'voice.db'}"
    (tmp_path / "var").mkdir()
    monkeypatch.setenv("CONTACT_SERVER_DATABASE_URL", url)
    monkeypatch.delenv("VOICEAUTH_KEY", raising=False)
    monkeypatch.delenv("VOICEAUTH_KEY_FILE", raising=False)
    old_key, new_key = generate_key(), generate_key()
    key_file = tmp_path / "var" / "voiceauth.key"     # config/server.yaml: voice.key_file
    key_file.write_text(old_key + "\n")
    new_file = tmp_path / "new.key"
    new_file.write_text(new_key + "\n")
    store = SqlVoiceprintStore(url, KeyRing.from_base64(old_key))
    v = np.random.default_rng(1).random(256).astype(np.float32)
    vp = Voiceprint("42", "resemblyzer", v / np.linalg.norm(v), 3)
    store.save_voiceprint(vp, actor="ivr", now=NOW)
    store.add_enrollment_take("42", "resemblyzer", np.full(800, 0.25, np.float32), 8000, vp.embedding, "h", NOW)
    store.record_attempt(AttemptRecord("42", "call-1", 0.9, 0.8, "accept", "resemblyzer", (), NOW, "a", vp.embedding))
    store.add_watchlist("fraud", "resemblyzer", vp.embedding, actor="sec", now=NOW)
    store.engine.dispose()
    return {"config": cfg, "url": url, "old": old_key, "new": new_key, "key_file": key_file, "new_file": new_file,
            "vp": vp, "root": tmp_path}


def _readable_with(url: str, ring: KeyRing, vp: Voiceprint) -> bool:
    store = SqlVoiceprintStore(url, ring)
    try:
        got = store.get_voiceprint("42", "resemblyzer")
        takes = store.enrollment_takes("42", "resemblyzer")
        attempt = store.recent_attempts("42", "resemblyzer")[0]
        watch = store.watchlist("resemblyzer")
        return (np.array_equal(got.embedding, vp.embedding) and np.array_equal(takes[0].embedding, vp.embedding)
                and np.array_equal(attempt.embedding, vp.embedding) and np.array_equal(watch[0].embedding,
                                                                                       vp.embedding))
    finally:
        store.engine.dispose()


def test_rotate_key_command_reencrypts_everything_and_the_old_key_can_go(site, capsys, monkeypatch):
    monkeypatch.chdir(site["root"])
    rc = main(["voice", "rotate-key", "--config", str(site["config"]), "--new-key-file", str(site["new_file"]),
               "--update-key-file", "--actor", "ops-jane"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "re-encrypted 5 blobs" in out.out
    # the configured key file now holds only the new key, private; the old key is kept aside, private
    assert site["key_file"].read_text().split() == [site["new"]]
    assert stat.S_IMODE(site["key_file"].stat().st_mode) == 0o600
    retired = list(site["key_file"].parent.glob("voiceauth.key.retired-*"))
    assert len(retired) == 1 and retired[0].read_text().split() == [site["old"]]
    assert stat.S_IMODE(retired[0].stat().st_mode) == 0o600
    # the new key alone reads every blob; the old key alone reads none
    assert _readable_with(site["url"], KeyRing.from_base64(site["new"]), site["vp"])
    with pytest.raises(KeyringError):
        _readable_with(site["url"], KeyRing.from_base64(site["old"]), site["vp"])
    # neither key appears in what the command printed
    assert site["old"] not in out.out + out.err and site["new"] not in out.out + out.err
    store = SqlVoiceprintStore(site["url"], KeyRing.from_base64(site["new"]))
    rotations = [e for e in store.audit_log() if e.action == "keys_rotated"]
    assert [e.actor for e in rotations] == ["ops-jane"]
    store.engine.dispose()


def test_rotation_with_the_wrong_current_key_changes_nothing(site, capsys, monkeypatch):
    monkeypatch.chdir(site["root"])
    site["key_file"].write_text(generate_key() + "\n")      # not the key the data was encrypted with
    rc = main(["voice", "rotate-key", "--config", str(site["config"]), "--new-key-file", str(site["new_file"]),
               "--update-key-file"])
    err = capsys.readouterr().err
    assert rc == 1 and "nothing was changed" in err and "not in the key ring" in err
    assert _readable_with(site["url"], KeyRing.from_base64(site["old"]), site["vp"])
    assert not list(site["key_file"].parent.glob("voiceauth.key.retired-*"))


def test_rotation_without_updating_the_file_keeps_it_and_says_what_to_do(site, capsys, monkeypatch):
    monkeypatch.chdir(site["root"])
    monkeypatch.setenv("VOICEAUTH_KEY", site["old"])
    rc = main(["voice", "rotate-key", "--config", str(site["config"]), "--new-key-file", str(site["new_file"])])
    out = capsys.readouterr().out
    assert rc == 0 and "now configure the new key" in out
    # during the switch-over a ring with both keys (new first) reads everything
    assert _readable_with(site["url"], KeyRing.from_base64(site["new"], site["old"]), site["vp"])
    assert _readable_with(site["url"], KeyRing.from_base64(site["new"]), site["vp"])
