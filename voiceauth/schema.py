"""voiceauth's own tables, on their own MetaData so crm_bridge can create them in its database.

Table names carry a ``voiceauth_`` prefix so they never clash with another package's
``audit_log`` or ``consents``. Create them with ``VoiceAuthBase.metadata.create_all(engine)``.
Timestamps are naive UTC.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (DateTime, Float, Integer, LargeBinary, MetaData, String, Text, UniqueConstraint, Index)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["VoiceAuthBase", "VoiceprintRow", "EnrollmentAudioRow", "ConsentRow", "VerificationAttemptRow",
           "WatchlistRow", "AuditLogRow", "metadata"]

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
})


class VoiceAuthBase(DeclarativeBase):
    metadata = metadata


class VoiceprintRow(VoiceAuthBase):
    __tablename__ = "voiceauth_voiceprints"
    __table_args__ = (UniqueConstraint("customer_id", "model"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(64))
    dimension: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(String(32))
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    count: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime)
    updated: Mapped[datetime] = mapped_column(DateTime)


class EnrollmentAudioRow(VoiceAuthBase):
    __tablename__ = "voiceauth_enrollment_audio"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(64))
    sample_rate: Mapped[int] = mapped_column(Integer)
    audio_hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32))
    audio_blob: Mapped[bytes] = mapped_column(LargeBinary)
    embedding_blob: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(DateTime)


class ConsentRow(VoiceAuthBase):
    __tablename__ = "voiceauth_consents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), index=True)
    granted_at: Mapped[datetime] = mapped_column(DateTime)
    channel: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    withdrawn_by: Mapped[str | None] = mapped_column(String(128), nullable=True)


class VerificationAttemptRow(VoiceAuthBase):
    __tablename__ = "voiceauth_verification_attempts"
    __table_args__ = (Index("ix_voiceauth_attempts_customer_at", "customer_id", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    call_id: Mapped[str] = mapped_column(String(128))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    decision: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(64))
    flags: Mapped[str] = mapped_column(String(256), default="")
    at: Mapped[datetime] = mapped_column(DateTime)
    audio_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    embedding_blob: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class WatchlistRow(VoiceAuthBase):
    __tablename__ = "voiceauth_watchlist"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str] = mapped_column(String(32))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(128))


class AuditLogRow(VoiceAuthBase):
    __tablename__ = "voiceauth_audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    detail: Mapped[str] = mapped_column(Text, default="")
