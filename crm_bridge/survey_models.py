"""Tables of customer-satisfaction surveys, on the CRM's ``Base`` (migration ``0003_surveys``).

One ``survey_responses`` row per survey offered (after a call, or on an outbound campaign call), committed when
the survey starts so that a cut call still counts as offered; ``survey_answers`` holds one row per question
answered, written as the customer presses the key. The response keeps the queue, agent, service and line of
the call it follows, so results can be grouped without joining the call records (which an outbound call has
not got). ``campaign_id`` has no foreign key: the campaign tables come later (``0004_campaigns``) and results
must survive a campaign being deleted.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .coltypes import utcnow
from .models import Base, _enum


class SurveyChannel(str, enum.Enum):
    POST_CALL = "post_call"
    OUTBOUND = "outbound"


class SurveyStatus(str, enum.Enum):
    """``started`` until the survey ends; then what ``SurveyOutcome.status`` said."""

    STARTED = "started"
    COMPLETED = "completed"
    PARTIAL = "partial"
    NO_ANSWER = "no_answer"
    OPTED_OUT = "opted_out"


class SurveyResponse(Base):
    __tablename__ = "survey_responses"
    __table_args__ = (Index("ix_survey_responses_survey_started", "survey", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    survey: Mapped[str] = mapped_column(String(64))
    channel: Mapped[SurveyChannel] = mapped_column(_enum(SurveyChannel))
    language: Mapped[str] = mapped_column(String(8), default="it")
    status: Mapped[SurveyStatus] = mapped_column(_enum(SurveyStatus), default=SurveyStatus.STARTED)
    call_id: Mapped[str | None] = mapped_column(String(128), index=True)
    call_record_id: Mapped[int | None] = mapped_column(ForeignKey("call_records.id", ondelete="SET NULL"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    phone: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(64))
    service: Mapped[str | None] = mapped_column(String(64))
    line: Mapped[str | None] = mapped_column(String(64))
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]

    answers: Mapped[list[SurveyAnswer]] = relationship(back_populates="response", cascade="all, delete-orphan",
                                                       order_by="SurveyAnswer.id")


class SurveyAnswer(Base):
    """One question answered; a question asked again (the runner's retry, a replayed event) replaces it."""

    __tablename__ = "survey_answers"
    __table_args__ = (UniqueConstraint("response_id", "question_id", name="uq_survey_answers_response_question"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("survey_responses.id", ondelete="CASCADE"))
    question_id: Mapped[str] = mapped_column(String(64))
    digit: Mapped[str] = mapped_column(String(8))
    value_int: Mapped[int | None] = mapped_column(Integer)
    value_text: Mapped[str | None] = mapped_column(String(255))
    answered_at: Mapped[datetime] = mapped_column(default=utcnow)

    response: Mapped[SurveyResponse] = relationship(back_populates="answers")
