"""Argon2 hashing for PINs and agent passwords (argon2-cffi)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

DEFAULT_HASHER = PasswordHasher()


def fast_hasher() -> PasswordHasher:
    """Cheap parameters for tests and demo seeding on small machines; never for production secrets."""
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def hash_secret(secret: str, hasher: PasswordHasher | None = None) -> str:
    if not secret:
        raise ValueError("an empty PIN or password cannot be stored")
    return (hasher or DEFAULT_HASHER).hash(secret)


def verify_secret(stored_hash: str | None, secret: str, hasher: PasswordHasher | None = None) -> bool:
    """True when ``secret`` matches; a missing or corrupt hash is a mismatch, never an exception."""
    if not stored_hash or not secret:
        return False
    try:
        return (hasher or DEFAULT_HASHER).verify(stored_hash, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
