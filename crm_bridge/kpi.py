"""Contact-centre KPIs over ``call_records``, with the formulas we publish.

Populations (a call belongs to the window by its ``arrived_at``):

- *calls*: every record in the window.
- *offered*: calls that reached a queue (``queued_at`` set).
- *answered*: offered calls answered by an agent (``answered_at`` set).
- *abandoned*: offered calls that ended unanswered. Abandons shorter than ``short_abandon`` seconds
  (``wait_seconds`` < ``short_abandon``) are *short abandons*: counted apart and left out of every ratio below
  (0 by default, i.e. none excluded).

Formulas (``T`` = ``sl_threshold`` seconds, 20 by default):

- **Service level** = answered with ``wait_seconds <= T`` / (answered + abandoned with ``wait_seconds > T``).
  This is the variant that neither rewards nor penalises callers who hang up before ``T``: they are left out of
  the denominator. (Other centres use answered within T / offered; ``sl_offered`` gives that one too.)
- **ASA** (average speed of answer) = sum of ``wait_seconds`` of answered calls / answered.
- **Abandon rate** = abandoned / offered (short abandons removed from both).
- **AHT** (average handle time) = sum of (``talk_seconds`` + ``wrapup_seconds``) / answered calls that ended
  (hold is inside talk time; a missing wrap-up counts as 0).
- **IVR time** = mean ``ivr_seconds`` of calls that went through the IVR (``ivr_seconds`` set).
- **Containment** = calls whose IVR exit is ``completed`` (served by self-service) / calls through the IVR.
  Callers hanging up in the IVR are *not* contained; they are counted as ``ivr_hangups``.
- **Transfer rate** = answered calls with at least one transfer / answered; ``transfers`` is the total count.
- **First-contact resolution** = eligible calls with no repeat call / eligible calls, where *eligible* is an
  ended, not-abandoned call of an identified customer with a service, and a *repeat* is any other call of the
  same customer on the same service arriving within ``fcr_days`` days after it (calls after the window count).
- **Identification rate** = calls identified (by ANI, PAI or PIN) / calls.
- **Verification rate** = calls whose voice decision is ``accept`` / calls where a voice decision was made;
  **verification attempt rate** = calls with a decision / identified calls.

Ratios with an empty denominator are ``None`` (not 0): "no calls" is not "0 % service level".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import models as m

GroupBy = Literal["queue", "line", "day"] | None


@dataclass(frozen=True, slots=True)
class CallRow:
    """The columns the KPIs read; built from ``CallRecord`` rows or by hand in tests."""

    call_id: str
    arrived_at: datetime
    customer_id: int | None = None
    service: str | None = None
    queue: str | None = None
    line: str | None = None
    identified_by: str = "none"
    verification_decision: str | None = None
    ivr_seconds: float | None = None
    ivr_exit: str | None = None
    queued_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    wrapup_seconds: float | None = None
    transfers: int = 0

    @property
    def offered(self) -> bool:
        return self.queued_at is not None

    @property
    def answered(self) -> bool:
        return self.queued_at is not None and self.answered_at is not None

    @property
    def abandoned(self) -> bool:
        return self.queued_at is not None and self.answered_at is None and self.ended_at is not None


@dataclass(frozen=True, slots=True)
class KpiReport:
    calls: int
    offered: int
    answered: int
    abandoned: int
    short_abandoned: int
    answered_within_t: int
    abandoned_after_t: int
    service_level: float | None
    sl_offered: float | None
    asa: float | None
    abandon_rate: float | None
    aht: float | None
    ivr_calls: int
    ivr_time: float | None
    contained: int
    ivr_hangups: int
    containment: float | None
    transferred_calls: int
    transfers: int
    transfer_rate: float | None
    fcr_eligible: int
    fcr_resolved: int
    fcr: float | None
    identified: int
    identification_rate: float | None
    verification_attempted: int
    verified: int
    verification_rate: float | None
    verification_attempt_rate: float | None


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


def compute_kpis(rows: Sequence[CallRow], *, sl_threshold: float = 20.0, short_abandon: float = 0.0,
                 fcr_days: float = 7.0, later_calls: Iterable[CallRow] = ()) -> KpiReport:
    """KPIs of ``rows`` (see the module docstring). ``later_calls`` are calls after the window that can still
    make a call of the window a repeat contact."""
    answered = [r for r in rows if r.answered]
    abandoned_all = [r for r in rows if r.abandoned]
    short = [r for r in abandoned_all if (r.wait_seconds or 0.0) < short_abandon]
    abandoned = [r for r in abandoned_all if (r.wait_seconds or 0.0) >= short_abandon]
    offered = len(answered) + len(abandoned) + sum(
        1 for r in rows if r.offered and not r.answered and not r.abandoned)  # still waiting
    within = sum(1 for r in answered if (r.wait_seconds or 0.0) <= sl_threshold)
    ab_after = sum(1 for r in abandoned if (r.wait_seconds or 0.0) > sl_threshold)
    handled = [r for r in answered if r.ended_at is not None]
    ivr = [r for r in rows if r.ivr_seconds is not None]
    contained = sum(1 for r in ivr if r.ivr_exit == m.IvrExit.COMPLETED.value)
    ivr_hangups = sum(1 for r in ivr if r.ivr_exit == m.IvrExit.HUNG_UP.value)
    transferred = sum(1 for r in answered if r.transfers > 0)

    by_key: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for r in [*rows, *later_calls]:
        if r.customer_id is not None and r.service:
            by_key[(r.customer_id, r.service)].append(r.arrived_at)
    horizon = timedelta(days=fcr_days)
    eligible = [r for r in rows if r.customer_id is not None and r.service and r.ended_at is not None
                and not r.abandoned]
    resolved = sum(1 for r in eligible
                   if not any(r.arrived_at < t <= r.arrived_at + horizon for t in by_key[(r.customer_id, r.service)]))

    identified = sum(1 for r in rows if r.identified_by != m.IdentifiedBy.NONE.value)
    attempted = sum(1 for r in rows if r.verification_decision is not None)
    verified = sum(1 for r in rows if r.verification_decision == "accept")
    return KpiReport(
        calls=len(rows), offered=offered, answered=len(answered), abandoned=len(abandoned),
        short_abandoned=len(short), answered_within_t=within, abandoned_after_t=ab_after,
        service_level=_ratio(within, len(answered) + ab_after), sl_offered=_ratio(within, offered),
        asa=_ratio(sum(r.wait_seconds or 0.0 for r in answered), len(answered)),
        abandon_rate=_ratio(len(abandoned), offered),
        aht=_ratio(sum((r.talk_seconds or 0.0) + (r.wrapup_seconds or 0.0) for r in handled), len(handled)),
        ivr_calls=len(ivr), ivr_time=_ratio(sum(r.ivr_seconds or 0.0 for r in ivr), len(ivr)),
        contained=contained, ivr_hangups=ivr_hangups, containment=_ratio(contained, len(ivr)),
        transferred_calls=transferred, transfers=sum(r.transfers for r in answered),
        transfer_rate=_ratio(transferred, len(answered)),
        fcr_eligible=len(eligible), fcr_resolved=resolved, fcr=_ratio(resolved, len(eligible)),
        identified=identified, identification_rate=_ratio(identified, len(rows)),
        verification_attempted=attempted, verified=verified, verification_rate=_ratio(verified, attempted),
        verification_attempt_rate=_ratio(attempted, identified),
    )


def _row(r: m.CallRecord) -> CallRow:
    return CallRow(call_id=r.call_id, arrived_at=r.arrived_at, customer_id=r.customer_id, service=r.service,
                   queue=r.queue, line=r.line, identified_by=r.identified_by.value,
                   verification_decision=r.verification_decision, ivr_seconds=r.ivr_seconds,
                   ivr_exit=r.ivr_exit.value if r.ivr_exit else None, queued_at=r.queued_at,
                   answered_at=r.answered_at, ended_at=r.ended_at, wait_seconds=r.wait_seconds,
                   talk_seconds=r.talk_seconds, wrapup_seconds=r.wrapup_seconds, transfers=r.transfers)


def load_rows(session: Session, start: datetime, end: datetime, *, queue: str | None = None,
              line: str | None = None) -> list[CallRow]:
    q = select(m.CallRecord).where(m.CallRecord.arrived_at >= start, m.CallRecord.arrived_at < end)
    if queue is not None:
        q = q.where(m.CallRecord.queue == queue)
    if line is not None:
        q = q.where(m.CallRecord.line == line)
    return [_row(r) for r in session.scalars(q.order_by(m.CallRecord.arrived_at))]


def kpi_report(session: Session, start: datetime, end: datetime, *, group_by: GroupBy = None,
               queue: str | None = None, line: str | None = None, tz: str = "Europe/Rome",
               sl_threshold: float = 20.0, short_abandon: float = 0.0,
               fcr_days: float = 7.0) -> dict[str | None, KpiReport]:
    """KPIs of calls arrived in [start, end), optionally per queue, line or local day (in ``tz``).

    Ungrouped, the single key is ``None``. Run it in the database thread (``Database.run``)."""
    rows = load_rows(session, start, end, queue=queue, line=line)
    later = load_rows(session, end, end + timedelta(days=fcr_days))
    # A repeat call counts whatever its queue or line; the same call seen twice is never its own repeat.
    everything = rows if queue is None and line is None else load_rows(session, start, end)
    groups: dict[str | None, list[CallRow]] = defaultdict(list)
    zone = ZoneInfo(tz)
    for r in rows:
        if group_by is None:
            key: str | None = None
        elif group_by == "queue":
            key = r.queue
        elif group_by == "line":
            key = r.line
        elif group_by == "day":
            key = r.arrived_at.astimezone(zone).date().isoformat()
        else:
            raise ValueError(f"group_by must be queue, line, day or None, not {group_by!r}")
        groups[key].append(r)
    if group_by is None and not groups:
        groups[None] = []
    return {key: compute_kpis(g, sl_threshold=sl_threshold, short_abandon=short_abandon, fcr_days=fcr_days,
                              later_calls=[*later, *everything])
            for key, g in groups.items()}
