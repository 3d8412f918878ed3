"""``contact-server voice rotate-key``: re-encrypt every voiceprint, enrollment take, attempt embedding and watchlist
entry under a new key, on the database and key of a server.yaml.

Rotation is one database transaction (``SqlVoiceprintStore.rotate_keys``): either every blob moves to the new key
or none does, so a failure leaves the old key working. With ``--update-key-file`` the configured key file
(``voice.key_file`` or ``VOICEAUTH_KEY_FILE``) is rewritten with the new key only, after the old one is saved
beside it (``<file>.retired-<time>``, mode 0600) for restoring database backups taken before the rotation; the
running server must then be restarted to load it. Without it, the operator installs the new key themselves.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ivr.config import ServerConfig, load_server_config
from ivr.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RotationReport:
    blobs: int
    old_key_ids: list[str]
    new_key_id: str
    key_file: Path | None
    retired_copy: Path | None


def configured_key_file(cfg: ServerConfig) -> Path | None:
    """The key file the server reads, or None when the key comes from ``VOICEAUTH_KEY``."""
    if os.environ.get("VOICEAUTH_KEY"):
        return None
    if os.environ.get("VOICEAUTH_KEY_FILE"):
        return Path(os.environ["VOICEAUTH_KEY_FILE"])
    return cfg.resolve(cfg.voice.key_file) if cfg.voice.key_file else None


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rotate_voice_key(cfg: ServerConfig, new_key_file: Path, *, update_key_file: bool = False,
                     actor: str = "operator", now: float | None = None) -> RotationReport:
    from ivr.app import database_url
    from voiceauth.crypto import KeyRing
    from voiceauth.errors import KeyringError
    from voiceauth.store import SqlVoiceprintStore

    key_file = configured_key_file(cfg)
    if key_file is None and not os.environ.get("VOICEAUTH_KEY"):
        raise KeyringError("no current voiceprint key: set voice.key_file in server.yaml, VOICEAUTH_KEY_FILE or "
                           "VOICEAUTH_KEY to the key the data is encrypted with")
    if key_file is not None and not key_file.exists():
        raise KeyringError(f"the current key file {key_file} does not exist: nothing was encrypted with it, or it "
                           "was moved; point voice.key_file / VOICEAUTH_KEY_FILE at it")
    old = KeyRing.from_file(key_file) if key_file is not None else KeyRing.from_env()
    new = KeyRing.from_file(new_key_file)
    if update_key_file and key_file is None:
        raise KeyringError("--update-key-file needs a key file (voice.key_file or VOICEAUTH_KEY_FILE); with "
                           "VOICEAUTH_KEY, set the new key there yourself")
    store = SqlVoiceprintStore(database_url(cfg), old)
    try:
        blobs = store.rotate_keys(new, actor=actor, now=time.time() if now is None else now)
    finally:
        store.engine.dispose()
    retired = None
    if update_key_file and key_file is not None:
        retired = key_file.with_name(f"{key_file.name}.retired-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        _write_private(retired, key_file.read_text(encoding="ascii"))
        _write_private(key_file, new_key_file.read_text(encoding="ascii"))
    log.info("voiceprint key rotated to %s: %d blobs re-encrypted", new.primary_id, blobs)
    return RotationReport(blobs, old.key_ids, new.primary_id, key_file if update_key_file else None, retired)


def rotate_key_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="contact-server voice rotate-key",
                                 description="Re-encrypt all biometric data under a new key (one transaction).")
    ap.add_argument("--config", default="config/server.yaml")
    ap.add_argument("--new-key-file", required=True, type=Path,
                    help="file with the new base64 key on its first line (make one with: python -c 'from "
                         "voiceauth.crypto import generate_key; print(generate_key())')")
    ap.add_argument("--update-key-file", action="store_true",
                    help="replace the configured key file with the new key (the old one is kept beside it)")
    ap.add_argument("--actor", default=os.environ.get("USER", "operator"), help="who rotates, for the audit log")
    args = ap.parse_args(argv)
    from voiceauth.errors import KeyringError

    try:
        cfg = load_server_config(args.config)
        report = rotate_voice_key(cfg, args.new_key_file, update_key_file=args.update_key_file, actor=args.actor)
    except (ConfigError, KeyringError) as exc:
        print(f"key rotation failed, nothing was changed: {exc}", file=sys.stderr)
        return 1
    print(f"re-encrypted {report.blobs} blobs with key {report.new_key_id} (was {', '.join(report.old_key_ids)})")
    if report.key_file is not None:
        print(f"{report.key_file} now holds only the new key; the old one is in {report.retired_copy} for "
              "restoring older database backups. Restart the server to load the new key.")
    else:
        print("now configure the new key (first line of the key file, or VOICEAUTH_KEY) and restart the server; "
              "the old key is no longer needed except for older database backups")
    return 0
