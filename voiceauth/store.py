"""Persistence of voiceprints, enrollment audio, consents, attempts, watchlist and audit log.

Everything biometric (voiceprints, enrollment audio, attempt embeddings, watchlist prints) is
AES-GCM encrypted with a key ring; the associated data binds each blob to its table, row owner
and model so a blob copied to another customer's row fails to decrypt.

Key rotation: ``store.rotate_keys(new_ring)`` decrypts every blob with the current ring (which
must still hold the old keys) and re-encrypts it with ``new_ring``'s primary key, in one
transaction; afterwards the store uses the merged ring and old keys can be retired.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, Sequence

import numpy as np
from sqlalchemy import Engine, create_engine, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from .crypto import KeyRing
from .schema import (AuditLogRow, ConsentRow, EnrollmentAudioRow, VerificationAttemptRow, VoiceAuthBase,
                     VoiceprintRow, WatchlistRow)
from .voiceprint import Voiceprint

log = logging.getLogger(__name__)

__all__ = ["VoiceprintStore", "SqlVoiceprintStore", "ConsentRecord", "EnrollmentTake", "AttemptRecord",
           "WatchlistEntry", "AuditEntry", "ErasureReport", "utc"]


def utc(now: float) -> datetime:
    return datetime.fromtimestamp(now, tz=timezone.utc).replace(tzinfo=None)


def _epoch(dt: datetime | None) -> float | None:
    return None if dt is None else dt.replace(tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    id: int
    customer_id: str
    granted_at: float
    channel: str
    purpose: str
    actor: str
    withdrawn_at: float | None


@dataclass(frozen=True, slots=True)
class EnrollmentTake:
    """A stored take: kept for replay detection and re-enrollment with a new model."""
    audio_hash: str
    embedding: np.ndarray
    model: str


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    customer_id: str
    call_id: str
    score: float | None
    threshold: float | None
    decision: str
    model: str
    flags: tuple[str, ...]
    at: float
    audio_hash: str | None = None
    embedding: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class WatchlistEntry:
    id: int
    label: str
    model: str
    embedding: np.ndarray


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    customer_id: str | None
    at: float
    detail: dict


@dataclass(frozen=True, slots=True)
class ErasureReport:
    voiceprints: int
    enrollment_takes: int
    attempt_embeddings: int


class VoiceprintStore(Protocol):
    def record_consent(self, customer_id: str, *, channel: str, purpose: str, actor: str, now: float) -> ConsentRecord: ...
    def active_consent(self, customer_id: str, purpose: str = ...) -> ConsentRecord | None: ...
    def withdraw_consent(self, customer_id: str, *, actor: str, now: float, purpose: str | None = None) -> ErasureReport: ...
    def get_voiceprint(self, customer_id: str, model: str) -> Voiceprint | None: ...
    def save_voiceprint(self, vp: Voiceprint, *, actor: str, now: float, action: str = ...) -> None: ...
    def add_enrollment_take(self, customer_id: str, model: str, audio: np.ndarray, rate: int, embedding: np.ndarray,
                            audio_hash: str, now: float) -> None: ...
    def enrollment_takes(self, customer_id: str, model: str) -> list[EnrollmentTake]: ...
    def record_attempt(self, attempt: AttemptRecord, *, actor: str = ...) -> None: ...
    def recent_attempts(self, customer_id: str, model: str, limit: int) -> list[AttemptRecord]: ...
    def count_decisions_since(self, customer_id: str, decisions: Sequence[str], since: float) -> int: ...
    def add_watchlist(self, label: str, model: str, embedding: np.ndarray, *, actor: str, now: float) -> int: ...
    def watchlist(self, model: str) -> list[WatchlistEntry]: ...
    def audit(self, actor: str, action: str, customer_id: str | None, now: float, **detail) -> None: ...


def _emb_bytes(e: np.ndarray) -> bytes:
    return np.asarray(e, dtype="<f4").tobytes()


def _emb(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4").copy()


def _engine(url: str) -> Engine:
    """In-memory SQLite must be one shared connection, or worker threads each see an empty DB."""
    if url in ("sqlite://", "sqlite:///:memory:"):
        from sqlalchemy.pool import StaticPool

        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    return create_engine(url)


class SqlVoiceprintStore:
    """SQLAlchemy implementation; pass an Engine or URL (``sqlite://`` for tests) and a key ring."""

    PURPOSE = "voice_authentication"

    def __init__(self, engine: Engine | str, keyring: KeyRing, *, create: bool = True) -> None:
        self.engine = _engine(engine) if isinstance(engine, str) else engine
        self.keyring = keyring
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            VoiceAuthBase.metadata.create_all(self.engine)

    # -- crypto helpers -------------------------------------------------------------------
    @staticmethod
    def _aad(table: str, owner: str, model: str) -> bytes:
        return f"voiceauth/{table}/{owner}/{model}".encode()

    def _seal(self, table: str, owner: str, model: str, data: bytes) -> tuple[str, bytes]:
        return self.keyring.encrypt(data, self._aad(table, owner, model))

    def _open(self, table: str, owner: str, model: str, kid: str, blob: bytes, ring: KeyRing | None = None) -> bytes:
        return (ring or self.keyring).decrypt(kid, blob, self._aad(table, owner, model))

    # -- audit ----------------------------------------------------------------------------
    def _audit(self, s: Session, actor: str, action: str, customer_id: str | None, now: float, detail: dict) -> None:
        s.add(AuditLogRow(actor=actor, action=action, customer_id=customer_id, at=utc(now),
                          detail=json.dumps(detail, sort_keys=True, default=str)))

    def audit(self, actor: str, action: str, customer_id: str | None, now: float, **detail) -> None:
        with self._sessions.begin() as s:
            self._audit(s, actor, action, customer_id, now, detail)

    def audit_log(self, customer_id: str | None = None) -> list[AuditEntry]:
        with self._sessions() as s:
            q = select(AuditLogRow).order_by(AuditLogRow.id)
            if customer_id is not None:
                q = q.where(AuditLogRow.customer_id == customer_id)
            return [AuditEntry(r.actor, r.action, r.customer_id, _epoch(r.at), json.loads(r.detail or "{}"))
                    for r in s.scalars(q)]

    # -- consent --------------------------------------------------------------------------
    def record_consent(self, customer_id: str, *, channel: str, purpose: str = PURPOSE, actor: str,
                       now: float) -> ConsentRecord:
        with self._sessions.begin() as s:
            row = ConsentRow(customer_id=customer_id, granted_at=utc(now), channel=channel, purpose=purpose,
                             actor=actor)
            s.add(row)
            self._audit(s, actor, "consent_granted", customer_id, now, {"channel": channel, "purpose": purpose})
            s.flush()
            return self._consent(row)

    @staticmethod
    def _consent(r: ConsentRow) -> ConsentRecord:
        return ConsentRecord(r.id, r.customer_id, _epoch(r.granted_at), r.channel, r.purpose, r.actor,
                             _epoch(r.withdrawn_at))

    def active_consent(self, customer_id: str, purpose: str = PURPOSE) -> ConsentRecord | None:
        with self._sessions() as s:
            row = s.scalars(select(ConsentRow).where(
                ConsentRow.customer_id == customer_id, ConsentRow.purpose == purpose,
                ConsentRow.withdrawn_at.is_(None)).order_by(ConsentRow.id.desc())).first()
            return None if row is None else self._consent(row)

    def consents(self, customer_id: str) -> list[ConsentRecord]:
        with self._sessions() as s:
            return [self._consent(r) for r in s.scalars(
                select(ConsentRow).where(ConsentRow.customer_id == customer_id).order_by(ConsentRow.id))]

    def withdraw_consent(self, customer_id: str, *, actor: str, now: float,
                         purpose: str | None = None) -> ErasureReport:
        """Withdraw consent and erase the biometric data it covered (right to erasure), audited."""
        with self._sessions.begin() as s:
            q = update(ConsentRow).where(ConsentRow.customer_id == customer_id, ConsentRow.withdrawn_at.is_(None))
            if purpose is not None:
                q = q.where(ConsentRow.purpose == purpose)
            s.execute(q.values(withdrawn_at=utc(now), withdrawn_by=actor))
            vp = s.execute(delete(VoiceprintRow).where(VoiceprintRow.customer_id == customer_id)).rowcount
            takes = s.execute(delete(EnrollmentAudioRow).where(
                EnrollmentAudioRow.customer_id == customer_id)).rowcount
            att = s.execute(update(VerificationAttemptRow).where(
                VerificationAttemptRow.customer_id == customer_id,
                VerificationAttemptRow.embedding_blob.is_not(None)).values(
                embedding_blob=None, key_id=None, audio_hash=None)).rowcount
            report = ErasureReport(vp, takes, att)
            self._audit(s, actor, "consent_withdrawn", customer_id, now, {"purpose": purpose or "all"})
            self._audit(s, actor, "biometric_data_erased", customer_id, now,
                        {"voiceprints": vp, "enrollment_takes": takes, "attempt_embeddings": att})
        log.info("erased voice data of %s: %s", customer_id, report)
        return report

    # -- voiceprints ----------------------------------------------------------------------
    def get_voiceprint(self, customer_id: str, model: str) -> Voiceprint | None:
        with self._sessions() as s:
            row = s.scalars(select(VoiceprintRow).where(VoiceprintRow.customer_id == customer_id,
                                                        VoiceprintRow.model == model)).first()
            if row is None:
                return None
            raw = self._open("voiceprints", customer_id, model, row.key_id, row.blob)
            return Voiceprint(customer_id, model, _emb(raw), row.count)

    def voiceprint_models(self, customer_id: str) -> list[str]:
        with self._sessions() as s:
            return list(s.scalars(select(VoiceprintRow.model).where(VoiceprintRow.customer_id == customer_id)))

    def save_voiceprint(self, vp: Voiceprint, *, actor: str, now: float, action: str = "voiceprint_enrolled") -> None:
        kid, blob = self._seal("voiceprints", vp.customer_id, vp.model, _emb_bytes(vp.embedding))
        with self._sessions.begin() as s:
            row = s.scalars(select(VoiceprintRow).where(VoiceprintRow.customer_id == vp.customer_id,
                                                        VoiceprintRow.model == vp.model)).first()
            if row is None:
                s.add(VoiceprintRow(customer_id=vp.customer_id, model=vp.model, dimension=vp.dimension, key_id=kid,
                                    blob=blob, count=vp.count, created=utc(now), updated=utc(now)))
            else:
                row.key_id, row.blob, row.count, row.updated, row.dimension = kid, blob, vp.count, utc(now), vp.dimension
            self._audit(s, actor, action, vp.customer_id, now, {"model": vp.model, "count": vp.count})

    def delete_voiceprint(self, customer_id: str, *, actor: str, now: float) -> int:
        with self._sessions.begin() as s:
            n = s.execute(delete(VoiceprintRow).where(VoiceprintRow.customer_id == customer_id)).rowcount
            self._audit(s, actor, "voiceprint_deleted", customer_id, now, {"rows": n})
            return n

    # -- enrollment audio -----------------------------------------------------------------
    def add_enrollment_take(self, customer_id: str, model: str, audio: np.ndarray, rate: int,
                            embedding: np.ndarray, audio_hash: str, now: float) -> None:
        from .channel import pcm16_bytes

        kid, audio_blob = self._seal("enrollment_audio", customer_id, model, pcm16_bytes(audio))
        kid2, emb_blob = self._seal("enrollment_embedding", customer_id, model, _emb_bytes(embedding))
        assert kid == kid2
        with self._sessions.begin() as s:
            s.add(EnrollmentAudioRow(customer_id=customer_id, model=model, sample_rate=int(rate), audio_hash=audio_hash,
                                     key_id=kid, audio_blob=audio_blob, embedding_blob=emb_blob, created=utc(now)))

    def enrollment_takes(self, customer_id: str, model: str) -> list[EnrollmentTake]:
        with self._sessions() as s:
            rows = s.scalars(select(EnrollmentAudioRow).where(EnrollmentAudioRow.customer_id == customer_id,
                                                              EnrollmentAudioRow.model == model))
            return [EnrollmentTake(r.audio_hash, _emb(self._open("enrollment_embedding", customer_id, model,
                                                                 r.key_id, r.embedding_blob)), model) for r in rows]

    def enrollment_audio(self, customer_id: str) -> list[tuple[np.ndarray, int]]:
        """Decrypted takes (int16 PCM, rate), e.g. to re-enroll with a new model."""
        with self._sessions() as s:
            rows = s.scalars(select(EnrollmentAudioRow).where(EnrollmentAudioRow.customer_id == customer_id))
            return [(np.frombuffer(self._open("enrollment_audio", customer_id, r.model, r.key_id, r.audio_blob),
                                   dtype="<i2").copy(), r.sample_rate) for r in rows]

    # -- attempts -------------------------------------------------------------------------
    def record_attempt(self, a: AttemptRecord, *, actor: str = "ivr") -> None:
        """The attempt and its audit row (who verified whom, on which call, with what outcome) in one commit."""
        kid = blob = None
        if a.embedding is not None:
            kid, blob = self._seal("attempts", a.customer_id, a.model, _emb_bytes(a.embedding))
        with self._sessions.begin() as s:
            s.add(VerificationAttemptRow(customer_id=a.customer_id, call_id=a.call_id, score=a.score,
                                         threshold=a.threshold, decision=a.decision, model=a.model,
                                         flags=",".join(a.flags), at=utc(a.at), audio_hash=a.audio_hash, key_id=kid,
                                         embedding_blob=blob))
            self._audit(s, actor, "voice_verified", a.customer_id, a.at,
                        {"call_id": a.call_id, "decision": a.decision, "model": a.model})

    def _attempt(self, r: VerificationAttemptRow) -> AttemptRecord:
        emb = None
        if r.embedding_blob is not None:
            emb = _emb(self._open("attempts", r.customer_id, r.model, r.key_id, r.embedding_blob))
        return AttemptRecord(r.customer_id, r.call_id, r.score, r.threshold, r.decision, r.model,
                             tuple(f for f in r.flags.split(",") if f), _epoch(r.at), r.audio_hash, emb)

    def recent_attempts(self, customer_id: str, model: str | None = None, limit: int = 50) -> list[AttemptRecord]:
        with self._sessions() as s:
            q = select(VerificationAttemptRow).where(VerificationAttemptRow.customer_id == customer_id)
            if model is not None:
                q = q.where(VerificationAttemptRow.model == model)
            rows = s.scalars(q.order_by(VerificationAttemptRow.at.desc(), VerificationAttemptRow.id.desc())
                             .limit(limit))
            return [self._attempt(r) for r in rows]

    def count_decisions_since(self, customer_id: str, decisions: Sequence[str], since: float) -> int:
        with self._sessions() as s:
            return int(s.scalar(select(func.count()).select_from(VerificationAttemptRow).where(
                VerificationAttemptRow.customer_id == customer_id, VerificationAttemptRow.at >= utc(since),
                VerificationAttemptRow.decision.in_(list(decisions)))) or 0)

    # -- watchlist ------------------------------------------------------------------------
    def add_watchlist(self, label: str, model: str, embedding: np.ndarray, *, actor: str, now: float) -> int:
        kid, blob = self._seal("watchlist", "-", model, _emb_bytes(embedding))
        with self._sessions.begin() as s:
            row = WatchlistRow(label=label, model=model, key_id=kid, embedding=blob, created=utc(now), actor=actor)
            s.add(row)
            s.flush()
            self._audit(s, actor, "watchlist_added", None, now, {"label": label, "model": model, "id": row.id})
            return row.id

    def remove_watchlist(self, entry_id: int, *, actor: str, now: float) -> bool:
        with self._sessions.begin() as s:
            n = s.execute(delete(WatchlistRow).where(WatchlistRow.id == entry_id)).rowcount
            self._audit(s, actor, "watchlist_removed", None, now, {"id": entry_id})
            return n > 0

    def watchlist(self, model: str) -> list[WatchlistEntry]:
        with self._sessions() as s:
            return [WatchlistEntry(r.id, r.label, r.model, _emb(self._open("watchlist", "-", model, r.key_id,
                                                                            r.embedding)))
                    for r in s.scalars(select(WatchlistRow).where(WatchlistRow.model == model))]

    # -- key rotation ---------------------------------------------------------------------
    def rotate_keys(self, new: KeyRing, *, actor: str = "system", now: float | None = None) -> int:
        """Re-encrypt every blob under ``new``'s primary key; returns the number of blobs rewritten."""
        import time

        now = time.time() if now is None else now
        old = self.keyring
        target = old.merged(new)
        n = 0
        with self._sessions.begin() as s:
            for r in s.scalars(select(VoiceprintRow)):
                raw = self._open("voiceprints", r.customer_id, r.model, r.key_id, r.blob, old)
                r.key_id, r.blob = target.encrypt(raw, self._aad("voiceprints", r.customer_id, r.model))
                n += 1
            for r in s.scalars(select(EnrollmentAudioRow)):
                a = self._open("enrollment_audio", r.customer_id, r.model, r.key_id, r.audio_blob, old)
                e = self._open("enrollment_embedding", r.customer_id, r.model, r.key_id, r.embedding_blob, old)
                r.key_id, r.audio_blob = target.encrypt(a, self._aad("enrollment_audio", r.customer_id, r.model))
                _, r.embedding_blob = target.encrypt(e, self._aad("enrollment_embedding", r.customer_id, r.model))
                n += 2
            for r in s.scalars(select(VerificationAttemptRow).where(VerificationAttemptRow.embedding_blob.is_not(None))):
                e = self._open("attempts", r.customer_id, r.model, r.key_id, r.embedding_blob, old)
                r.key_id, r.embedding_blob = target.encrypt(e, self._aad("attempts", r.customer_id, r.model))
                n += 1
            for r in s.scalars(select(WatchlistRow)):
                e = self._open("watchlist", "-", r.model, r.key_id, r.embedding, old)
                r.key_id, r.embedding = target.encrypt(e, self._aad("watchlist", "-", r.model))
                n += 1
            self._audit(s, actor, "keys_rotated", None, now, {"to": new.primary_id, "blobs": n})
        self.keyring = target
        return n
