"""AES-256-GCM encryption at rest for voiceprints and enrollment audio.

Keys never live in the database. A key ring holds the primary key (used to encrypt) and older
keys (still able to decrypt until ``rotate_keys`` has re-encrypted everything). The key id is a
fingerprint of the key, stored next to each blob, so the right key is found without trying all.

Configuration: ``VOICEAUTH_KEY`` (base64 of 32 bytes; several separated by commas, primary
first) or ``VOICEAUTH_KEY_FILE`` (one base64 key per line, primary first; ``#`` comments).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import KeyringError

__all__ = ["KeyRing", "generate_key", "key_id"]

_NONCE = 12


def generate_key() -> str:
    """A new random 256-bit key, base64-encoded, ready for VOICEAUTH_KEY or a key file."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def key_id(key: bytes) -> str:
    return "k" + hashlib.sha256(b"voiceauth-key-id" + key).hexdigest()[:15]


def _decode(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: key is not valid base64; generate one with "
                           "`python -c 'from voiceauth.crypto import generate_key; print(generate_key())'`") from None
    if len(raw) not in (16, 24, 32):
        raise KeyringError(f"{where}: key must decode to 16, 24 or 32 bytes (AES), got {len(raw)}")
    return raw


class KeyRing:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise KeyringError("empty key ring: set VOICEAUTH_KEY or VOICEAUTH_KEY_FILE")
        self._keys: dict[str, AESGCM] = {}
        self._raw: dict[str, bytes] = {}
        for k in keys:
            self._keys.setdefault(key_id(k), AESGCM(k))
            self._raw.setdefault(key_id(k), bytes(k))
        self.primary_id = key_id(keys[0])

    @classmethod
    def from_base64(cls, *keys: str) -> "KeyRing":
        return cls([_decode(k, "key") for k in keys])

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "KeyRing":
        p = Path(path)
        try:
            lines = p.read_text(encoding="ascii").splitlines()
        except OSError as exc:
            raise KeyringError(f"cannot read voiceauth key file {p}: {exc.strerror}") from None
        keys = [_decode(ln, str(p)) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not keys:
            raise KeyringError(f"voiceauth key file {p} holds no key")
        return cls(keys)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "KeyRing":
        env = os.environ if environ is None else environ
        if env.get("VOICEAUTH_KEY"):
            return cls([_decode(k, "VOICEAUTH_KEY") for k in env["VOICEAUTH_KEY"].split(",") if k.strip()])
        if env.get("VOICEAUTH_KEY_FILE"):
            return cls.from_file(env["VOICEAUTH_KEY_FILE"])
        raise KeyringError("no encryption key for voiceprints: set VOICEAUTH_KEY (base64, 32 bytes) "
                           "or VOICEAUTH_KEY_FILE (path to a file with one base64 key per line)")

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def merged(self, other: "KeyRing") -> "KeyRing":
        """Keys of both rings, ``other``'s primary first: the ring to use during a rotation."""
        ring = KeyRing.__new__(KeyRing)
        ring._keys = {other.primary_id: other._keys[other.primary_id], **self._keys, **other._keys}
        ring._raw = {other.primary_id: other._raw[other.primary_id], **self._raw, **other._raw}
        ring.primary_id = other.primary_id
        return ring

    def material(self) -> tuple[bytes, ...]:
        """The keys, primary first, for a process of this server that opens the same store
        (``voiceauth.decider``); never written anywhere."""
        return (self._raw[self.primary_id], *(k for kid, k in self._raw.items() if kid != self.primary_id))

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_NONCE)
        return self.primary_id, nonce + self._keys[self.primary_id].encrypt(nonce, plaintext, aad)

    def decrypt(self, kid: str, blob: bytes, aad: bytes) -> bytes:
        aes = self._keys.get(kid)
        if aes is None:
            raise KeyringError(f"blob was encrypted with key {kid}, which is not in the key ring "
                               f"(have {', '.join(self._keys)}); add the old key to rotate")
        try:
            return aes.decrypt(bytes(blob[:_NONCE]), bytes(blob[_NONCE:]), aad)
        except InvalidTag:
            raise KeyringError(f"decryption with key {kid} failed: wrong key or tampered data") from None
