"""Call-record queries shared by the admin API and the supervisor pages: filters from a query string, a page of
records, and the CSV export (cells that a spreadsheet would run as a formula are neutralised)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import models as m
from ..recorder import record_snapshot

MAX_LIMIT = 1000
MAX_EXPORT = 200_000
CSV_COLUMNS = ["call_id", "arrived_at", "queued_at", "answered_at", "ended_at", "ani", "dnis", "line",
               "customer_id", "ticket_id", "identified_by", "verification_decision", "verification_score",
               "verification_flags", "service", "queue", "ivr_exit", "ivr_seconds", "agent_id", "wait_seconds",
               "talk_seconds", "wrapup_seconds", "transfers", "end_reason", "status", "disposition"]


class FilterError(ValueError):
    """A query parameter cannot be understood; the message names it and says what is expected."""


@dataclass(frozen=True, slots=True)
class CallFilter:
    start: datetime
    end: datetime
    queue: str | None = None
    line: str | None = None
    agent_id: str | None = None
    status: str | None = None
    customer_id: int | None = None
    limit: int = 100
    offset: int = 0


def parse_when(value: str, tz: ZoneInfo, *, end: bool = False) -> datetime:
    """``2026-03-01`` (a local day: its start, or the next day's start for ``end``) or an ISO date-time
    (naive = local)."""
    value = value.strip()
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            if end:
                d += timedelta(days=1)
            return datetime.combine(d, time.min, tz).astimezone(timezone.utc)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO date-time") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=tz)).astimezone(timezone.utc)


def local_day_bounds(now: float, tz: ZoneInfo, days: int = 1) -> tuple[datetime, datetime]:
    today = datetime.fromtimestamp(now, tz).date()
    start = datetime.combine(today - timedelta(days=days - 1), time.min, tz).astimezone(timezone.utc)
    return start, datetime.combine(today + timedelta(days=1), time.min, tz).astimezone(timezone.utc)


def _int(q: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(f"{key} must be a whole number") from None
    if not lo <= value <= hi:
        raise FilterError(f"{key} must be between {lo} and {hi}")
    return value


def parse_filter(q: Mapping[str, str], *, now: float, tz: str = "Europe/Rome", default_days: int = 7) -> CallFilter:
    zone = ZoneInfo(tz)
    start_d, end_d = local_day_bounds(now, zone, default_days)
    start = parse_when(q["from"], zone) if q.get("from") else start_d
    end = parse_when(q["to"], zone, end=True) if q.get("to") else end_d
    if end <= start:
        raise FilterError("'to' must be after 'from'")
    status = q.get("status") or None
    if status is not None and status not in {s.value for s in m.CallStatus}:
        raise FilterError(f"status must be one of {[s.value for s in m.CallStatus]}")
    cid = q.get("customer_id")
    return CallFilter(start, end, q.get("queue") or None, q.get("line") or None, q.get("agent") or None, status,
                      _int(q, "customer_id", 0, 0, 2**62) if cid else None,
                      _int(q, "limit", 100, 1, MAX_LIMIT), _int(q, "offset", 0, 0, 10**9))


def _query(f: CallFilter):  # type: ignore[no-untyped-def]
    q = select(m.CallRecord).where(m.CallRecord.arrived_at >= f.start, m.CallRecord.arrived_at < f.end)
    if f.queue:
        q = q.where(m.CallRecord.queue == f.queue)
    if f.line:
        q = q.where(m.CallRecord.line == f.line)
    if f.agent_id:
        q = q.where(m.CallRecord.agent_id == f.agent_id)
    if f.status:
        q = q.where(m.CallRecord.status == m.CallStatus(f.status))
    if f.customer_id is not None:
        q = q.where(m.CallRecord.customer_id == f.customer_id)
    return q


def list_calls(s: Session, f: CallFilter) -> tuple[int, list[dict[str, Any]]]:
    q = _query(f)
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = s.scalars(q.order_by(m.CallRecord.arrived_at.desc(), m.CallRecord.id.desc())
                     .limit(f.limit).offset(f.offset))
    return total, [record_snapshot(r) for r in rows]


def _flat(r: m.CallRecord) -> list[Any]:
    snap = record_snapshot(r)
    v = snap.pop("verification")
    snap["verification_decision"] = v["decision"]
    snap["verification_score"] = v["score"]
    snap["verification_flags"] = " ".join(v["flags"])
    return [snap.get(c) for c in CSV_COLUMNS]


def _safe(cell: Any) -> Any:
    """A cell beginning with = @ (or + - not followed by a digit) would be a formula in a spreadsheet."""
    if not isinstance(cell, str) or not cell:
        return "" if cell is None else cell
    first = cell[0]
    if first in "=@\t\r" or (first in "+-" and not cell[1:2].isdigit()):
        return "'" + cell
    return cell


def calls_csv(s: Session, f: CallFilter) -> Iterator[str]:
    """CSV text in chunks (header first), oldest call first, at most ``MAX_EXPORT`` rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    rows = s.scalars(_query(f).order_by(m.CallRecord.arrived_at, m.CallRecord.id).limit(MAX_EXPORT)
                     .execution_options(yield_per=500))
    for i, r in enumerate(rows, 1):
        w.writerow([_safe(c) for c in _flat(r)])
        if i % 500 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
