"""Tables of outbound survey campaigns, on the CRM's ``Base`` (migration ``0004_campaigns``).

``campaign_contacts`` is the progress that survives a restart: an attempt row is committed and the contact is
``dialing`` before the INVITE leaves, so a crash can never hide a call that was placed. ``contact_opt_outs`` is
the do-not-call list every campaign consults before each call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ivr.campaign.rules import CampaignState, ContactState

from .coltypes import utcnow
from .models import Base, _enum


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    survey: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8), default="it")
    state: Mapped[CampaignState] = mapped_column(_enum(CampaignState), default=CampaignState.DRAFT)
    rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """How the contacts were chosen: ``{"kind": "csv", "rows": N}`` or ``{"kind": "query", "segment": ...}``."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class CampaignContact(Base):
    __tablename__ = "campaign_contacts"
    __table_args__ = (UniqueConstraint("campaign_id", "phone", name="uq_campaign_contacts_campaign_phone"),
                      Index("ix_campaign_contacts_campaign_state", "campaign_id", "state"))

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    phone: Mapped[str] = mapped_column(String(20))
    language: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[ContactState] = mapped_column(_enum(ContactState), default=ContactState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_call_id: Mapped[str | None] = mapped_column(String(128))
    response_id: Mapped[int | None] = mapped_column(Integer)
    """The survey response (``survey_responses.id``) the answered call produced."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignAttempt(Base):
    """One call placed (or about to be): inserted in the same transaction that moves the contact to
    ``dialing``; ``(contact_id, attempt)`` is unique, so one attempt number can never be dialled twice."""

    __tablename__ = "campaign_attempts"
    __table_args__ = (UniqueConstraint("contact_id", "attempt", name="uq_campaign_attempts_contact_attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("campaign_contacts.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    call_id: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    sip_status: Mapped[int | None] = mapped_column(Integer)


class ContactOptOut(Base):
    """Do not call: by customer, by number, or both. Written by the admin API and by a survey's opt-out."""

    __tablename__ = "contact_opt_outs"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    e164: Mapped[str | None] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16), default="admin")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
