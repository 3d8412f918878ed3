"""``SurveyStoreRecorder``: the campaign service's ``SurveyRecorder`` over the survey store (``crm_bridge.surveys``).

Outbound answers are stored exactly like post-call ones (channel ``outbound``, the campaign's id, the customer
and number called), so the survey results and the do-not-call list see both. The response's language is the
contact's (else the campaign's), read in the transaction that creates it, because the service does not pass it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crm_bridge import surveys
from crm_bridge.campaign_models import Campaign, CampaignContact
from crm_bridge.db import Database
from crm_bridge.survey_models import SurveyAnswer, SurveyStatus

log = logging.getLogger(__name__)


def _language(s: Session, campaign_id: int, phone: str) -> str:
    lang = s.scalars(select(CampaignContact.language).where(CampaignContact.campaign_id == campaign_id,
                                                            CampaignContact.phone == phone)).first()
    return lang or s.scalar(select(Campaign.language).where(Campaign.id == campaign_id)) or "it"


def status_of(outcome: Any, answered: bool) -> str:
    """The response's final status: the runner's ``outcome.status``; without an outcome (the survey crashed or
    the call was cut before it returned) ``partial`` when something was answered, else ``no_answer``."""
    if outcome is not None:
        status = getattr(outcome, "status", None)
        if isinstance(status, str) and status in {st.value for st in SurveyStatus} - {"started"}:
            return status
        if getattr(outcome, "opted_out", False):
            return SurveyStatus.OPTED_OUT.value
        if getattr(outcome, "completed", False):
            return SurveyStatus.COMPLETED.value
    return (SurveyStatus.PARTIAL if answered else SurveyStatus.NO_ANSWER).value


class SurveyStoreRecorder:
    """``SurveyStoreRecorder(db, clock=time.time)``; ``begin`` / ``answer`` / ``end`` as
    ``ivr.campaign.service.SurveyRecorder``. A ``None`` response id (begin failed) makes the others no-ops."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def begin(self, *, campaign_id: int, survey: str, customer_id: int | None, phone: str,
                    call_id: str) -> int:
        now = self.clock()

        def run(s: Session) -> int:
            return surveys.begin_response(s, survey=survey, channel="outbound",
                                          language=_language(s, campaign_id, phone), call_id=call_id,
                                          customer_id=customer_id, phone=phone, campaign_id=campaign_id, now=now)
        return await self.db.run(run)

    async def answer(self, response_id: int | None, question_id: str, digit: str, value: Any) -> None:
        if response_id is None:
            return
        now = self.clock()
        await self.db.run(lambda s: surveys.record_answer(s, response_id, question_id, digit, value, now=now))

    async def end(self, response_id: int | None, outcome: Any) -> None:
        if response_id is None:
            return
        now = self.clock()

        def run(s: Session) -> str:
            answered = bool(s.scalar(select(func.count()).select_from(SurveyAnswer)
                                     .where(SurveyAnswer.response_id == response_id)))
            status = status_of(outcome, answered)
            surveys.end_response(s, response_id, status, now=now)
            return status
        status = await self.db.run(run)
        log.debug("survey response %s ended %s", response_id, status)


__all__ = ["SurveyStoreRecorder", "status_of"]
