"""The survey side of the campaign e2e tests: the script the customers answer (the real ``ivr.survey``
runner, installed into the test server's ``config/surveys``) and where their answers are read back (the real
survey store's tables)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

SURVEY_NAME = "e2e_csat"

SURVEY_FILES: dict[str, str] = {
    f"surveys/{SURVEY_NAME}.yaml": """\
# Two questions, one key each; the SIPp customers press their keys at fixed times, into the prompts (barge-in).
name: e2e_csat
title: "Campaign e2e"
languages: [it]
csat_question: q1
questions:
  - id: q1
    kind: scale
    scale: {min: 1, max: 9}
    text: {it: "Da uno a nove, quanto è soddisfatto della sua banca?"}
    retries: 1
    timeout: 8
  - id: q2
    kind: scale
    scale: {min: 1, max: 9}
    text: {it: "Da uno a nove, quanto è probabile che ci consigli?"}
    retries: 1
    timeout: 8
closing: {it: "Grazie, arrivederci."}
""",
}


def prepare_database(path: Path) -> None:
    """A fresh database at the latest schema (survey and campaign tables included)."""
    from crm_bridge.migrate import upgrade_database

    upgrade_database(f"sqlite:///{path}")


def stored_answers(srv, campaign_id: int) -> dict[str, list[tuple[str, str]]]:
    """phone -> [(question id, digit)] of the outbound survey answers stored for the campaign."""
    from crm_bridge.survey_models import SurveyAnswer, SurveyResponse

    rows = srv.query(lambda s: s.execute(
        select(SurveyResponse.phone, SurveyAnswer.question_id, SurveyAnswer.digit)
        .join(SurveyAnswer, SurveyAnswer.response_id == SurveyResponse.id)
        .where(SurveyResponse.campaign_id == campaign_id, SurveyResponse.channel == "outbound")
        .order_by(SurveyResponse.id, SurveyAnswer.question_id)).all())
    out: dict[str, list[tuple[str, str]]] = {}
    for phone, qid, digit in rows:
        out.setdefault(phone, []).append((qid, digit))
    return out
