"""The survey store: responses and answers as the customer gives them, the do-not-call consequence of an
opt-out, and the results (distribution per question, response rate, CSAT by queue / agent / service / line,
CSV export).

Writes are committed one step at a time (``begin`` when the survey is offered, each answer as its key is
pressed, ``end`` with the outcome), so a call cut halfway still leaves what was said; a response left
``started`` by a crash simply never ended. The sync functions take a ``Session`` (the web layer runs them in
``Database.read``); ``SurveyStore`` is the async face the call side uses, on the Database's threads.

CSAT is the top-two-box share: responses whose answer to the CSAT question is one of the two highest values
of its scale (4-5 on 1-5), as a percentage of the responses that answered that question with a value on the
scale; ``mean`` is the average of those values. ``response_rate`` = responses with at least one answer /
surveys offered.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import case, distinct, func, or_, select
from sqlalchemy.orm import Session

from . import models as m
from .db import Database
from .errors import CrmError
from .survey_models import SurveyAnswer, SurveyChannel, SurveyResponse, SurveyStatus

log = logging.getLogger(__name__)

MAX_EXPORT = 200_000
NONE_KEY = "(none)"
GROUPS = {"queue": SurveyResponse.queue, "agent": SurveyResponse.agent_id, "service": SurveyResponse.service,
          "line": SurveyResponse.line, "channel": SurveyResponse.channel}
"""What CSAT is broken down by (``csat_by`` keys)."""

CSV_COLUMNS = ["response_id", "survey", "channel", "language", "status", "started_at", "ended_at", "call_id",
               "call_record_id", "ticket_id", "customer_id", "phone", "agent_id", "queue", "service", "line",
               "campaign_id"]


class SurveyError(CrmError):
    """A survey write that does not fit the stored response (unknown id, unknown status or channel)."""


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _when(value: datetime | float | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            raise SurveyError(f"naive datetime {value!r}: pass an aware datetime or epoch seconds")
        return value
    return _utc(float(value))


def _e164(phone: str | None) -> str | None:
    """The number as the do-not-call list keys it, or None when it is not a dialable number (anonymous)."""
    if not phone:
        return None
    from .web.importer import normalise_phone
    try:
        return normalise_phone(phone)
    except ValueError:
        return None


def _cut(value: Any, size: int) -> str | None:
    """Text as the column holds it: PostgreSQL refuses what is longer (a SIP URI as the caller's number)."""
    return None if value is None else str(value)[:size]


def _encode(value: Any) -> tuple[int | None, str | None]:
    """(value_int, value_text) of an answer's value: scale digits are ints, yes/no is 1/0 with "yes"/"no"
    (so the CSV reads as the customer meant it), choice values are text or ints."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return int(value), "yes" if value else "no"
    if isinstance(value, int):
        return value, None
    if isinstance(value, float) and value.is_integer():
        return int(value), None
    return None, str(value)[:255]


# ------------------------------------------------------------------------------------------ writes (sync)

def begin_response(s: Session, *, survey: str, channel: str, language: str = "it", call_id: str | None = None,
                   customer_id: int | None = None, phone: str | None = None, agent_id: str | None = None,
                   queue: str | None = None, service: str | None = None, line: str | None = None,
                   campaign_id: int | None = None, now: float) -> int:
    """A new ``started`` response. With a ``call_id`` whose call record exists, the response is linked to the
    record and its ticket, and what the caller did not pass (customer, number, agent, queue, service, line) is
    taken from the record: the post-call survey then reports by agent and queue whatever offered it."""
    if not survey:
        raise SurveyError("a survey response needs the survey's name")
    try:
        chan = SurveyChannel(channel)
    except ValueError:
        raise SurveyError(f"channel {channel!r} is not one of "
                          f"{', '.join(c.value for c in SurveyChannel)}") from None
    row = SurveyResponse(survey=survey[:64], channel=chan, language=(language or "it")[:8],
                         status=SurveyStatus.STARTED, call_id=_cut(call_id, 128), customer_id=customer_id,
                         phone=_cut(phone, 64), agent_id=_cut(agent_id, 64), queue=_cut(queue, 64),
                         service=_cut(service, 64), line=_cut(line, 64), campaign_id=campaign_id,
                         started_at=_utc(now))
    if call_id:
        rec = s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == call_id)).first()
        if rec is not None:
            row.call_record_id = rec.id
            row.ticket_id = rec.ticket_id
            row.customer_id = row.customer_id if row.customer_id is not None else rec.customer_id
            row.phone = row.phone or rec.ani
            row.agent_id = row.agent_id or rec.agent_id
            row.queue = row.queue or rec.queue
            row.service = row.service or rec.service
            row.line = row.line or rec.line or rec.dnis
        if row.ticket_id is None:
            row.ticket_id = s.scalars(select(m.Ticket.id).where(m.Ticket.call_id == call_id)
                                      .order_by(m.Ticket.id.desc()).limit(1)).first()
    if row.customer_id is not None and s.get(m.Customer, row.customer_id) is None:
        log.warning("survey %s: customer %s does not exist; response kept without it", survey, row.customer_id)
        row.customer_id = None
    s.add(row)
    s.flush()
    return row.id


def _response(s: Session, response_id: int) -> SurveyResponse:
    row = s.get(SurveyResponse, response_id)
    if row is None:
        raise SurveyError(f"no survey response {response_id}: begin must come first")
    return row


def record_answer(s: Session, response_id: int, question_id: str, digit: str, value: Any, *, now: float) -> None:
    """Store one answer; answering a question again replaces the earlier answer."""
    _response(s, response_id)
    if not question_id:
        raise SurveyError("an answer needs its question id")
    value_int, value_text = _encode(value)
    at = _utc(now)
    existing = s.scalars(select(SurveyAnswer).where(SurveyAnswer.response_id == response_id,
                                                    SurveyAnswer.question_id == question_id)).first()
    if existing is None:
        s.add(SurveyAnswer(response_id=response_id, question_id=question_id[:64], digit=str(digit)[:8],
                           value_int=value_int, value_text=value_text, answered_at=at))
    else:
        existing.digit, existing.value_int, existing.value_text = str(digit)[:8], value_int, value_text
        existing.answered_at = at
    s.flush()


def end_response(s: Session, response_id: int, status: str, *, now: float) -> None:
    """The survey's outcome. ``opted_out`` also puts the customer and number on the do-not-call list
    (``contact_opt_outs``), unless they are already there, so no campaign or post-call offer reaches them."""
    try:
        final = SurveyStatus(status)
    except ValueError:
        final = None
    if final is None or final is SurveyStatus.STARTED:
        raise SurveyError(f"status {status!r} cannot end a survey: use one of "
                          f"{', '.join(x.value for x in SurveyStatus if x is not SurveyStatus.STARTED)}")
    row = _response(s, response_id)
    row.status = final
    row.ended_at = _utc(now)
    if final is SurveyStatus.OPTED_OUT:
        _add_opt_out(s, row, now)
    s.flush()


def _add_opt_out(s: Session, row: SurveyResponse, now: float) -> None:
    from .campaign_models import ContactOptOut
    from .campaign_store import add_opt_out

    e164 = _e164(row.phone)
    if row.customer_id is None and e164 is None:
        log.warning("survey response %s opted out with neither a customer nor a dialable number: nothing to put "
                    "on the do-not-call list", row.id)
        return
    conds = []
    if row.customer_id is not None:
        conds.append(ContactOptOut.customer_id == row.customer_id)
    if e164 is not None:
        conds.append(ContactOptOut.e164 == e164)
    if s.scalars(select(ContactOptOut.id).where(or_(*conds)).limit(1)).first() is not None:
        return
    add_opt_out(s, customer_id=row.customer_id, e164=e164, source="survey",
                reason=f"survey {row.survey}, response {row.id}", now=now)


def is_opted_out(s: Session, customer_id: int | None, phone: str | None) -> bool:
    """On the do-not-call list, or opted out in any survey, by customer or by number."""
    from .campaign_models import ContactOptOut

    e164 = _e164(phone)
    listed = []
    if customer_id is not None:
        listed.append(ContactOptOut.customer_id == customer_id)
    if e164 is not None:
        listed.append(ContactOptOut.e164 == e164)
    if listed and s.scalars(select(ContactOptOut.id).where(or_(*listed)).limit(1)).first() is not None:
        return True
    said = []
    if customer_id is not None:
        said.append(SurveyResponse.customer_id == customer_id)
    numbers = {p for p in (phone, e164) if p}
    if numbers:
        said.append(SurveyResponse.phone.in_(numbers))
    if not said:
        return False
    return s.scalars(select(SurveyResponse.id).where(SurveyResponse.status == SurveyStatus.OPTED_OUT, or_(*said))
                     .limit(1)).first() is not None


class SurveyStore:
    """``SurveyStore(db, clock=time.time)``: the survey writes, each its own transaction on the Database's
    threads (the event loop never waits on the database)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def begin(self, *, survey: str, channel: str, language: str = "it", call_id: str | None = None,
                    customer_id: int | None = None, phone: str | None = None, agent_id: str | None = None,
                    queue: str | None = None, service: str | None = None, line: str | None = None,
                    campaign_id: int | None = None) -> int:
        now = self.clock()
        return await self.db.run(lambda s: begin_response(
            s, survey=survey, channel=channel, language=language, call_id=call_id, customer_id=customer_id,
            phone=phone, agent_id=agent_id, queue=queue, service=service, line=line, campaign_id=campaign_id,
            now=now))

    async def answer(self, response_id: int, question_id: str, digit: str, value: Any) -> None:
        now = self.clock()
        await self.db.run(lambda s: record_answer(s, response_id, question_id, digit, value, now=now))

    async def end(self, response_id: int, status: str) -> None:
        now = self.clock()
        await self.db.run(lambda s: end_response(s, response_id, status, now=now))

    async def opted_out(self, customer_id: int | None, phone: str | None) -> bool:
        return await self.db.read(lambda s: is_opted_out(s, customer_id, phone))


# ------------------------------------------------------------------------------------------ results

def _filters(survey: str, since: datetime | float | None, until: datetime | float | None, channel: str | None,
             campaign_id: int | None) -> list[Any]:
    where: list[Any] = [SurveyResponse.survey == survey]
    start, end = _when(since), _when(until)
    if start is not None:
        where.append(SurveyResponse.started_at >= start)
    if end is not None:
        where.append(SurveyResponse.started_at < end)
    if channel:
        try:
            where.append(SurveyResponse.channel == SurveyChannel(channel))
        except ValueError:
            raise SurveyError(f"channel must be one of {', '.join(c.value for c in SurveyChannel)}") from None
    if campaign_id is not None:
        where.append(SurveyResponse.campaign_id == campaign_id)
    return where


def _key(v: Any) -> str:
    if v is None or v == "":
        return NONE_KEY
    return v.value if isinstance(v, SurveyChannel) else str(v)


def _csat_cell(n: int, satisfied: int, mean: Any) -> dict[str, Any]:
    return {"responses": n, "satisfied": satisfied,
            "csat": round(100.0 * satisfied / n, 1) if n else None,
            "mean": round(float(mean), 2) if n and mean is not None else None}


def survey_results(s: Session, survey: str, *, since: datetime | float | None = None,
                   until: datetime | float | None = None, channel: str | None = None, campaign_id: int | None = None,
                   csat_question: str | None = None, csat_scale: tuple[int, int] | None = (1, 5)) -> dict[str, Any]:
    """The survey's figures over the responses started in [since, until) (see the module's docstring for the
    formulas). ``csat`` and ``csat_by`` are None without a CSAT question."""
    where = _filters(survey, since, until, channel, campaign_id)
    by_status = {st.value: 0 for st in SurveyStatus}
    for st, n in s.execute(select(SurveyResponse.status, func.count()).where(*where)
                           .group_by(SurveyResponse.status)):
        by_status[SurveyStatus(st).value] = n
    offered = sum(by_status.values())
    answered = s.scalar(select(func.count(distinct(SurveyAnswer.response_id))).select_from(SurveyAnswer)
                        .join(SurveyResponse, SurveyAnswer.response_id == SurveyResponse.id).where(*where)) or 0
    distribution: dict[str, dict[str, int]] = {}
    for qid, digit, n in s.execute(
            select(SurveyAnswer.question_id, SurveyAnswer.digit, func.count())
            .join(SurveyResponse, SurveyAnswer.response_id == SurveyResponse.id).where(*where)
            .group_by(SurveyAnswer.question_id, SurveyAnswer.digit)):
        distribution.setdefault(qid, {})[digit] = n
    distribution = {q: dict(sorted(d.items())) for q, d in sorted(distribution.items())}
    out: dict[str, Any] = {
        "survey": survey,
        "filters": {"since": _iso(_when(since)), "until": _iso(_when(until)), "channel": channel,
                    "campaign_id": campaign_id},
        "offered": offered, "answered": answered, "completed": by_status["completed"],
        "partial": by_status["partial"], "no_answer": by_status["no_answer"], "opted_out": by_status["opted_out"],
        "in_progress": by_status["started"], "by_status": by_status,
        "response_rate": round(answered / offered, 4) if offered else None,
        "completion_rate": round(by_status["completed"] / offered, 4) if offered else None,
        "distribution": distribution,
        "answers_by_question": {q: sum(d.values()) for q, d in distribution.items()},
        "csat_question": csat_question, "csat_scale": list(csat_scale) if csat_scale else None,
        "csat": None, "csat_by": None,
    }
    if csat_question and csat_scale:
        lo, hi = csat_scale
        top = hi - 1 if hi > lo else hi
        v = SurveyAnswer.value_int
        base = [SurveyAnswer.question_id == csat_question, v >= lo, v <= hi, *where]
        cols = (func.count(), func.coalesce(func.sum(case((v >= top, 1), else_=0)), 0), func.avg(v))

        def grouped(col: Any) -> dict[str, dict[str, Any]]:
            rows = s.execute(select(col, *cols).join(SurveyResponse, SurveyAnswer.response_id == SurveyResponse.id)
                             .where(*base).group_by(col))
            cells = {_key(k): _csat_cell(int(n), int(sat), mean) for k, n, sat, mean in rows}
            return dict(sorted(cells.items(), key=lambda kv: (kv[0] == NONE_KEY, kv[0])))

        n, sat, mean = s.execute(select(*cols).join(SurveyResponse, SurveyAnswer.response_id == SurveyResponse.id)
                                 .where(*base)).one()
        out["csat"] = _csat_cell(int(n or 0), int(sat or 0), mean)
        out["csat_by"] = {name: grouped(col) for name, col in GROUPS.items()}
    return out


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d else None


def list_surveys(s: Session) -> list[dict[str, Any]]:
    """Every survey name with responses: offered, answered, completed, first and last response."""
    answered = dict(s.execute(select(SurveyResponse.survey, func.count(distinct(SurveyAnswer.response_id)))
                              .join(SurveyAnswer, SurveyAnswer.response_id == SurveyResponse.id)
                              .group_by(SurveyResponse.survey)).all())
    out = []
    for name, n, done, first, last in s.execute(
            select(SurveyResponse.survey, func.count(),
                   func.coalesce(func.sum(case((SurveyResponse.status == SurveyStatus.COMPLETED, 1), else_=0)), 0),
                   func.min(SurveyResponse.started_at), func.max(SurveyResponse.started_at))
            .group_by(SurveyResponse.survey).order_by(SurveyResponse.survey)):
        out.append({"survey": name, "responses": n, "answered": answered.get(name, 0), "completed": int(done),
                    "first_at": _iso(_aware(first)), "last_at": _iso(_aware(last))})
    return out


def _aware(d: datetime | None) -> datetime | None:
    """min()/max() come back without the column type's conversion on some dialects."""
    if d is None:
        return None
    if isinstance(d, str):
        d = datetime.fromisoformat(d)
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _safe(cell: Any) -> Any:
    """A cell beginning with = @ (or + - not followed by a digit) would be a formula in a spreadsheet."""
    if not isinstance(cell, str) or not cell:
        return "" if cell is None else cell
    if cell[0] in "=@\t\r" or (cell[0] in "+-" and not cell[1:2].isdigit()):
        return "'" + cell
    return cell


def _answer_cell(a: SurveyAnswer) -> Any:
    if a.value_text is not None:
        return a.value_text
    if a.value_int is not None:
        return a.value_int
    return a.digit


def results_csv(s: Session, survey: str, *, since: datetime | float | None = None,
                until: datetime | float | None = None, channel: str | None = None, campaign_id: int | None = None,
                questions: Sequence[str] | None = None) -> str:
    """One row per response (oldest first, at most ``MAX_EXPORT``) with its answers' values as columns: the
    script's questions in order (``questions``), then any other question answered, by id."""
    where = _filters(survey, since, until, channel, campaign_id)
    seen = set(s.scalars(select(SurveyAnswer.question_id).distinct()
                         .join(SurveyResponse, SurveyAnswer.response_id == SurveyResponse.id).where(*where)))
    columns = list(dict.fromkeys(questions or ()))
    columns += sorted(seen - set(columns))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS + columns)
    rows = s.scalars(select(SurveyResponse).where(*where)
                     .order_by(SurveyResponse.started_at, SurveyResponse.id).limit(MAX_EXPORT)).all()
    for chunk in _chunks(rows, 500):
        answers: dict[int, dict[str, Any]] = {}
        for a in s.scalars(select(SurveyAnswer).where(SurveyAnswer.response_id.in_([r.id for r in chunk]))):
            answers.setdefault(a.response_id, {})[a.question_id] = _answer_cell(a)
        for r in chunk:
            got = answers.get(r.id, {})
            w.writerow([_safe(c) for c in (
                r.id, r.survey, r.channel.value, r.language, r.status.value, _iso(r.started_at), _iso(r.ended_at),
                r.call_id, r.call_record_id, r.ticket_id, r.customer_id, r.phone, r.agent_id, r.queue, r.service,
                r.line, r.campaign_id)] + [_safe(got.get(q)) for q in columns])
    return buf.getvalue()


def _chunks(rows: Sequence[SurveyResponse], size: int) -> Iterable[Sequence[SurveyResponse]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


__all__ = ["CSV_COLUMNS", "GROUPS", "NONE_KEY", "SurveyError", "SurveyStore", "begin_response", "end_response",
           "is_opted_out", "list_surveys", "record_answer", "results_csv", "survey_results"]
