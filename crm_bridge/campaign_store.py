"""Storage of outbound campaigns: creation from a CSV or a CRM query, progress, the do-not-call list, and the
exactly-once discipline of call attempts.

Every function takes a SQLAlchemy ``Session`` and is meant to run inside ``Database.run`` (one transaction,
committed when it returns). Times cross this module as epoch seconds (the dialer's clock) and are stored as
UTC.

Exactly once: ``begin_attempt`` checks the contact is still ``pending`` with the attempt count the dialer
expects, that the campaign is running and the customer has not opted out, then moves it to ``dialing``, counts
the attempt and inserts a ``campaign_attempts`` row (unique per contact and attempt number) in one
transaction; the INVITE is sent only after it commits. ``recover`` settles what a crash left ``dialing``: the
call may have been ringing or even answered, and nothing records whether the customer picked up, so the
contact is *not* dialled again. It ends ``failed`` with outcome ``interrupted`` (``answered`` when a survey
response already exists). Losing one survey is cheap; calling a customer twice because the server crashed is
what the bank promised not to do.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from ivr.campaign.dialer import Contact
from ivr.campaign.rules import CallOutcome, CampaignRules, CampaignState, ContactState

from . import models as m
from .campaign_models import Campaign, CampaignAttempt, CampaignContact, ContactOptOut
from .errors import CrmError, NotFoundError
from .web.importer import normalise_phone

log = logging.getLogger(__name__)

MAX_CONTACTS = 100_000
MAX_ERRORS = 200


class CampaignError(CrmError):
    """A campaign request that cannot be applied; the message says what to change."""


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def epoch(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


# ------------------------------------------------------------------------------------------ change notices

_listeners: list[Callable[[int], None]] = []


def subscribe(fn: Callable[[int], None]) -> None:
    """``fn(campaign_id)`` is called (on the caller's thread) after the admin API changed a campaign, so the
    dialer in the same process applies it at once instead of at its next poll of the database."""
    if fn not in _listeners:
        _listeners.append(fn)


def unsubscribe(fn: Callable[[int], None]) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def notify_changed(campaign_id: int) -> None:
    for fn in list(_listeners):
        try:
            fn(campaign_id)
        except Exception:
            log.exception("campaign change listener failed")


# ------------------------------------------------------------------------------------------ creation

@dataclass
class ContactsReport:
    """What a contact list became: rows read, contacts added, numbers already on the do-not-call list, errors."""

    rows: int = 0
    added: int = 0
    opted_out: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, row: int, value: str, reason: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"row": row, "value": value[:64], "error": reason})

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "added": self.added, "opted_out": self.opted_out,
                "duplicates": self.duplicates, "failed": len(self.errors), "errors": self.errors}


@dataclass(frozen=True)
class ContactIn:
    """One wanted contact: a customer (their first phone is called) and/or a phone number."""

    customer_id: int | None = None
    phone: str | None = None
    language: str | None = None
    row: int = 0


def parse_contacts_csv(data: bytes | str) -> list[ContactIn]:
    """CSV with a header: ``customer_id`` and/or ``phone`` (``language`` optional). Raises CampaignError for a
    file that cannot be read at all; bad rows are reported when the campaign is created."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise CampaignError("the CSV is empty: the first line must be a header such as customer_id,phone")
    names = {n.strip().lower() for n in reader.fieldnames if n}
    if not names & {"customer_id", "phone"}:
        raise CampaignError(f"the CSV header {sorted(names)} has neither customer_id nor phone: add one of them")
    out = []
    for i, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        cid = row.get("customer_id") or ""
        if cid and not cid.isdigit():
            out.append(ContactIn(None, f"!customer_id {cid}", None, i))
            continue
        out.append(ContactIn(int(cid) if cid else None, row.get("phone") or None, row.get("language") or None, i))
        if len(out) > MAX_CONTACTS:
            raise CampaignError(f"more than {MAX_CONTACTS} rows: split the list into several campaigns")
    return out


def contacts_from_query(s: Session, *, segment: str | None = None, language: str | None = None) -> list[ContactIn]:
    """Customers of the CRM matching the filter, each with their first phone number."""
    q = select(m.Customer.id, m.Customer.language).order_by(m.Customer.id)
    if segment:
        q = q.where(m.Customer.segment == segment)
    if language:
        q = q.where(m.Customer.language == language)
    return [ContactIn(cid, None, lang, 0) for cid, lang in s.execute(q).all()]


def _first_phone(s: Session, customer_id: int) -> str | None:
    return s.scalars(select(m.PhoneNumber.e164).where(m.PhoneNumber.customer_id == customer_id)
                     .order_by(m.PhoneNumber.id).limit(1)).first()


def create_campaign(s: Session, *, name: str, survey: str, rules: CampaignRules, contacts: list[ContactIn],
                    language: str = "it", source: dict[str, Any] | None = None, region: str = "IT",
                    start: bool = False, now: float) -> tuple[int, ContactsReport]:
    """A new campaign (``draft``, or ``running`` with ``start``) with its contacts; returns its id and the report.
    Contacts on the do-not-call list are kept as ``opted_out`` so the report and progress show them."""
    if s.scalars(select(Campaign.id).where(Campaign.name == name)).first() is not None:
        raise CampaignError(f"a campaign named {name!r} exists already: choose another name")
    at = utc(now)
    camp = Campaign(name=name, survey=survey, language=language, rules=rules.model_dump(mode="json"),
                    source=source or {}, state=CampaignState.RUNNING if start else CampaignState.DRAFT,
                    created_at=at, updated_at=at, started_at=at if start else None)
    s.add(camp)
    s.flush()
    report = ContactsReport()
    seen: set[str] = set()
    for c in contacts:
        report.rows += 1
        if c.phone and c.phone.startswith("!"):
            report.error(c.row, c.phone[1:], "customer_id must be a number")
            continue
        customer_id, phone, lang = c.customer_id, None, c.language
        if customer_id is not None:
            cust = s.get(m.Customer, customer_id)
            if cust is None:
                report.error(c.row, str(customer_id), "no customer with this id")
                continue
            lang = lang or cust.language
        if c.phone:
            try:
                phone = normalise_phone(c.phone, region)
            except ValueError as exc:
                report.error(c.row, c.phone, str(exc))
                continue
        elif customer_id is not None:
            phone = _first_phone(s, customer_id)
            if phone is None:
                report.error(c.row, str(customer_id), "the customer has no phone number")
                continue
        if customer_id is None and phone is not None:
            owner = s.scalars(select(m.PhoneNumber.customer_id).where(m.PhoneNumber.e164 == phone)).first()
            customer_id = owner
            if owner is not None and lang is None:
                lang = s.get(m.Customer, owner).language
        assert phone is not None
        if phone in seen:
            report.duplicates += 1
            continue
        seen.add(phone)
        state = ContactState.OPTED_OUT if _is_opted_out(s, customer_id, phone) else ContactState.PENDING
        report.opted_out += state is ContactState.OPTED_OUT
        report.added += state is ContactState.PENDING
        s.add(CampaignContact(campaign_id=camp.id, customer_id=customer_id, phone=phone, language=lang,
                              state=state, attempts=0, updated_at=at))
    if report.added == 0:
        raise CampaignError("no contact can be called: " + (
            "; ".join(f"row {e['row']}: {e['error']}" for e in report.errors[:5]) or
            "every number is on the do-not-call list" if report.rows else "the list is empty"))
    camp.source = {**(source or {}), "rows": report.rows}
    return camp.id, report


# ------------------------------------------------------------------------------------------ opt-outs

def _survey_response_model() -> Any | None:
    """The survey store's response model when it is installed and has what the check needs (a customer and a
    status): a customer who chose "do not call me" in any survey is never called by a campaign. The campaign
    also writes a do-not-call row itself when its own survey ends opted out."""
    try:
        from . import survey_models as sm  # type: ignore[attr-defined]
    except ImportError:
        return None
    resp = getattr(sm, "SurveyResponse", None)
    if resp is None or not hasattr(resp, "customer_id") or not hasattr(resp, "status"):
        return None
    return resp


def _survey_opt_out_clause(customer_id: int) -> Any | None:
    resp = _survey_response_model()
    if resp is None:
        return None
    return select(resp.id).where(resp.customer_id == customer_id, resp.status == "opted_out").exists()


def _listed(s: Session, customer_id: int | None, phone: str | None) -> bool:
    """On the do-not-call list itself (the survey store may have written the row when the survey ended)."""
    conds = []
    if customer_id is not None:
        conds.append(ContactOptOut.customer_id == customer_id)
    if phone:
        conds.append(ContactOptOut.e164 == phone)
    return bool(conds) and s.scalars(select(ContactOptOut.id).where(or_(*conds)).limit(1)).first() is not None


def _is_opted_out(s: Session, customer_id: int | None, phone: str | None) -> bool:
    if _listed(s, customer_id, phone):
        return True
    if customer_id is not None:
        clause = _survey_opt_out_clause(customer_id)
        if clause is not None and s.scalar(select(clause)):
            return True
    return False


def add_opt_out(s: Session, *, customer_id: int | None = None, e164: str | None = None,
                reason: str | None = None, source: str = "admin", now: float) -> int:
    """Put a customer and/or number on the do-not-call list; pending contacts of every campaign follow at
    their next check (``begin_attempt`` refuses them, ``opted_out_pending`` lists them)."""
    if customer_id is None and not e164:
        raise CampaignError("give customer_id or a phone number to put on the do-not-call list")
    if customer_id is not None and s.get(m.Customer, customer_id) is None:
        raise NotFoundError(f"no customer {customer_id}")
    row = ContactOptOut(customer_id=customer_id, e164=e164, reason=reason, source=source, created_at=utc(now))
    s.add(row)
    s.flush()
    return row.id


def opted_out_pending(s: Session, campaign_id: int) -> list[int]:
    """Pending contacts of the campaign that are now on the do-not-call list (or opted out in a survey); one
    query whatever the size of the campaign, since the service asks at every poll."""
    listed = select(ContactOptOut.id).where(or_(
        (ContactOptOut.customer_id == CampaignContact.customer_id) & CampaignContact.customer_id.is_not(None),
        ContactOptOut.e164 == CampaignContact.phone)).exists()
    conds = [listed]
    survey = _survey_opt_out_exists()
    if survey is not None:
        conds.append(survey)
    return list(s.scalars(select(CampaignContact.id).where(CampaignContact.campaign_id == campaign_id,
                                                           CampaignContact.state == ContactState.PENDING,
                                                           or_(*conds))))


def _survey_opt_out_exists() -> Any | None:
    resp = _survey_response_model()
    if resp is None:
        return None
    return select(resp.id).where(resp.customer_id == CampaignContact.customer_id,
                                 resp.status == "opted_out").exists()


# ------------------------------------------------------------------------------------------ the dialer's log

def recover(s: Session, campaign_id: int, *, now: float) -> list[int]:
    """Settle what a previous run left in flight (see the module's docstring); returns the contacts it
    changed. Only for a server's start: a running server's own calls look exactly like this."""
    rows = s.scalars(select(CampaignContact).where(
        CampaignContact.campaign_id == campaign_id,
        or_(CampaignContact.state == ContactState.DIALING,
            (CampaignContact.state == ContactState.ANSWERED) & CampaignContact.last_outcome.is_(None)))).all()
    at = utc(now)
    for c in rows:
        answered = c.state is ContactState.ANSWERED or c.response_id is not None
        c.state = ContactState.ANSWERED if answered else ContactState.FAILED
        c.last_outcome = (CallOutcome.HUNG_UP if answered else CallOutcome.INTERRUPTED).value
        c.next_attempt_at = None
        c.updated_at = at
        s.execute(update(CampaignAttempt).where(CampaignAttempt.contact_id == c.id,
                                                CampaignAttempt.ended_at.is_(None))
                  .values(ended_at=at, outcome=CallOutcome.INTERRUPTED.value))
        log.warning("campaign %s: contact %s was %s when the server stopped; not dialled again",
                    campaign_id, c.id, "answering" if answered else "being called")
    return [c.id for c in rows]


@dataclass(frozen=True)
class LoadedCampaign:
    id: int
    name: str
    survey: str
    language: str
    state: CampaignState
    rules: CampaignRules
    contacts: list[Contact]
    recent_starts: list[float]
    phones: dict[int, tuple[str, int | None, str | None]]
    """contact id -> (E.164, customer id, language)"""


def load_campaign(s: Session, campaign_id: int, *, now: float) -> LoadedCampaign:
    camp = s.get(Campaign, campaign_id)
    if camp is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    contacts, phones = [], {}
    for c in s.scalars(select(CampaignContact).where(CampaignContact.campaign_id == campaign_id)
                       .order_by(CampaignContact.id)):
        contacts.append(Contact(c.id, c.state, c.attempts, epoch(c.next_attempt_at) or 0.0,
                                CallOutcome(c.last_outcome) if c.last_outcome else None))
        phones[c.id] = (c.phone, c.customer_id, c.language)
    recent = s.scalars(select(CampaignAttempt.started_at).join(CampaignContact)
                       .where(CampaignContact.campaign_id == campaign_id,
                              CampaignAttempt.started_at > utc(now - 60.0))).all()
    return LoadedCampaign(camp.id, camp.name, camp.survey, camp.language, camp.state,
                          CampaignRules.model_validate(camp.rules), contacts, [epoch(t) for t in recent], phones)


def campaign_states(s: Session) -> dict[int, CampaignState]:
    """Every campaign that is not a draft, with its state (what the dialer service follows)."""
    return dict(s.execute(select(Campaign.id, Campaign.state).where(Campaign.state != CampaignState.DRAFT)
                          .order_by(Campaign.id)).all())


def campaigns_with_dialing(s: Session) -> list[int]:
    """Campaigns with calls a previous run left in flight (``dialing``, or answered without an outcome)."""
    return list(s.scalars(select(CampaignContact.campaign_id).where(or_(
        CampaignContact.state == ContactState.DIALING,
        (CampaignContact.state == ContactState.ANSWERED) & CampaignContact.last_outcome.is_(None))).distinct()))


def begin_attempt(s: Session, contact_id: int, attempt: int, call_id: str, *, now: float) -> str:
    """Commit the attempt before the INVITE: ``"ok"``, or ``"opted_out"`` / ``"refused"`` (the contact, the
    campaign or the attempt number is not what the dialer believed: do not call)."""
    q = select(CampaignContact).where(CampaignContact.id == contact_id)
    if s.bind is not None and s.bind.dialect.name == "postgresql":
        q = q.with_for_update()
    c = s.scalars(q).first()
    if c is None:
        return "refused"
    camp_state = s.scalar(select(Campaign.state).where(Campaign.id == c.campaign_id))
    if c.state is not ContactState.PENDING or c.attempts != attempt - 1 or camp_state is not CampaignState.RUNNING:
        return "refused"
    at = utc(now)
    if _is_opted_out(s, c.customer_id, c.phone):
        c.state = ContactState.OPTED_OUT
        c.updated_at = at
        return "opted_out"
    c.state = ContactState.DIALING
    c.attempts = attempt
    c.last_attempt_at = at
    c.last_call_id = call_id
    c.next_attempt_at = None
    c.updated_at = at
    s.add(CampaignAttempt(contact_id=c.id, attempt=attempt, call_id=call_id, started_at=at))
    s.flush()
    return "ok"


def mark_answered(s: Session, contact_id: int, *, now: float) -> None:
    c = s.get(CampaignContact, contact_id)
    if c is None:
        return
    c.state = ContactState.ANSWERED
    c.last_outcome = None           # in progress: ``recover`` knows it by this
    c.updated_at = utc(now)
    s.execute(update(CampaignAttempt).where(CampaignAttempt.contact_id == contact_id,
                                            CampaignAttempt.attempt == c.attempts)
              .values(answered_at=utc(now)))


def link_response(s: Session, contact_id: int, response_id: int) -> None:
    s.execute(update(CampaignContact).where(CampaignContact.id == contact_id).values(response_id=response_id))


def finish_attempt(s: Session, contact_id: int, *, outcome: CallOutcome, state: ContactState,
                   next_attempt_at: float | None, sip_status: int | None = None, now: float) -> None:
    """The attempt ended: the contact's new state (pending with its retry time, or final)."""
    c = s.get(CampaignContact, contact_id)
    if c is None:
        return
    at = utc(now)
    c.state = state
    c.last_outcome = outcome.value
    c.next_attempt_at = utc(next_attempt_at) if next_attempt_at is not None else None
    c.updated_at = at
    s.execute(update(CampaignAttempt).where(CampaignAttempt.contact_id == contact_id,
                                            CampaignAttempt.attempt == c.attempts,
                                            CampaignAttempt.ended_at.is_(None))
              .values(ended_at=at, outcome=outcome.value, sip_status=sip_status))
    if outcome is CallOutcome.OPTED_OUT and not _listed(s, c.customer_id, c.phone):
        s.add(ContactOptOut(customer_id=c.customer_id, e164=c.phone, reason=f"survey, campaign {c.campaign_id}",
                            source="survey", created_at=at))


def set_contact_state(s: Session, contact_id: int, state: ContactState, *, now: float,
                      next_attempt_at: float | None = None) -> None:
    """A change without a call: skipped at stop, opted out while pending, back to pending (not placed)."""
    values: dict[str, Any] = {"state": state, "updated_at": utc(now)}
    if state is ContactState.PENDING:
        values["next_attempt_at"] = utc(next_attempt_at) if next_attempt_at is not None else None
    s.execute(update(CampaignContact).where(CampaignContact.id == contact_id,
                                            CampaignContact.state.not_in([ContactState.DIALING,
                                                                          ContactState.ANSWERED]))
              .values(**values))


# ------------------------------------------------------------------------------------------ control

_TRANSITIONS = {
    "start": ({CampaignState.DRAFT}, CampaignState.RUNNING),
    "pause": ({CampaignState.RUNNING}, CampaignState.PAUSED),
    "resume": ({CampaignState.PAUSED, CampaignState.DRAFT}, CampaignState.RUNNING),
    "stop": ({CampaignState.DRAFT, CampaignState.RUNNING, CampaignState.PAUSED}, CampaignState.STOPPED),
}


def change_state(s: Session, campaign_id: int, command: str, *, now: float) -> CampaignState:
    """pause / resume (a draft starts) / stop; persisted at once so a restart keeps it. Stop marks every
    pending contact ``skipped``."""
    camp = s.get(Campaign, campaign_id)
    if camp is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    allowed, target = _TRANSITIONS[command]
    if camp.state is target:
        return target
    if camp.state not in allowed:
        raise CampaignError(f"campaign {campaign_id} is {camp.state.value}: it cannot {command} "
                            f"(only from {', '.join(sorted(a.value for a in allowed))})")
    at = utc(now)
    camp.state = target
    camp.updated_at = at
    if target is CampaignState.RUNNING and camp.started_at is None:
        camp.started_at = at
    if target is CampaignState.STOPPED:
        camp.finished_at = at
        s.execute(update(CampaignContact).where(CampaignContact.campaign_id == campaign_id,
                                                CampaignContact.state == ContactState.PENDING)
                  .values(state=ContactState.SKIPPED, updated_at=at))
    return target


def mark_finished(s: Session, campaign_id: int, *, now: float) -> None:
    s.execute(update(Campaign).where(Campaign.id == campaign_id, Campaign.state == CampaignState.RUNNING)
              .values(state=CampaignState.FINISHED, finished_at=utc(now), updated_at=utc(now)))


def campaign_summary(s: Session, campaign_id: int) -> dict[str, Any]:
    """Progress: contacts by state, attempts, and rates. ``response_rate`` = completed surveys / contacts
    called at least once; ``answer_rate`` = contacts who answered / contacts called."""
    camp = s.get(Campaign, campaign_id)
    if camp is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    counts = {st.value: 0 for st in ContactState}
    for state, n in s.execute(select(CampaignContact.state, func.count()).where(
            CampaignContact.campaign_id == campaign_id).group_by(CampaignContact.state)):
        counts[ContactState(state).value] = n
    called = s.scalar(select(func.count()).where(CampaignContact.campaign_id == campaign_id,
                                                 CampaignContact.attempts > 0)) or 0
    attempts = s.scalar(select(func.coalesce(func.sum(CampaignContact.attempts), 0))
                        .where(CampaignContact.campaign_id == campaign_id)) or 0
    answered = counts["completed"] + counts["answered"] + s.scalar(
        select(func.count()).where(CampaignContact.campaign_id == campaign_id,
                                   CampaignContact.state == ContactState.OPTED_OUT,
                                   CampaignContact.last_outcome == CallOutcome.OPTED_OUT.value))
    total = sum(counts.values())
    done = total - counts["pending"] - counts["dialing"]
    return {"id": camp.id, "name": camp.name, "survey": camp.survey, "language": camp.language,
            "state": camp.state.value, "rules": camp.rules, "source": camp.source,
            "created_at": camp.created_at.isoformat(), "started_at": camp.started_at.isoformat()
            if camp.started_at else None, "finished_at": camp.finished_at.isoformat() if camp.finished_at else None,
            "contacts": total, "done": done, "by_state": counts, "called": called, "attempts": int(attempts),
            "response_rate": round(counts["completed"] / called, 4) if called else None,
            "answer_rate": round(answered / called, 4) if called else None}


def list_campaigns(s: Session) -> list[dict[str, Any]]:
    return [campaign_summary(s, cid) for cid in s.scalars(select(Campaign.id).order_by(Campaign.id.desc()))]


def contact_rows(s: Session, campaign_id: int, *, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
    rows = s.scalars(select(CampaignContact).where(CampaignContact.campaign_id == campaign_id)
                     .order_by(CampaignContact.id).limit(limit).offset(offset))
    return [{"id": c.id, "customer_id": c.customer_id, "phone": c.phone, "state": c.state.value,
             "attempts": c.attempts, "last_outcome": c.last_outcome,
             "next_attempt_at": c.next_attempt_at.isoformat() if c.next_attempt_at else None,
             "response_id": c.response_id} for c in rows]


__all__ = ["CampaignError", "ContactIn", "ContactsReport", "LoadedCampaign", "add_opt_out", "begin_attempt",
           "campaign_summary", "change_state", "contact_rows", "contacts_from_query", "create_campaign",
           "finish_attempt", "link_response", "list_campaigns", "load_campaign", "mark_answered", "mark_finished",
           "opted_out_pending", "parse_contacts_csv", "recover", "campaign_states", "campaigns_with_dialing",
           "set_contact_state", "subscribe", "unsubscribe", "notify_changed"]
