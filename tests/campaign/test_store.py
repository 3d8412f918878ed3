"""Campaign storage on SQLite and PostgreSQL: creation from CSV and CRM queries, the do-not-call list, the
attempt committed before the call, restart recovery and progress."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm_bridge import campaign_store as cs
from crm_bridge import models as m
from crm_bridge.campaign_models import CampaignAttempt, CampaignContact
from crm_bridge.seed import seed_demo
from ivr.campaign.dialer import CampaignDialer, PlaceCall
from ivr.campaign.rules import CallOutcome, CampaignRules, CampaignState, ContactState, Pacing

T0 = 1_742_806_800.0          # Monday 2025-03-24 09:00 Europe/Rome
RULES = CampaignRules(pacing=Pacing(max_concurrent=2, calls_per_minute=30))


@pytest.fixture
def seeded(db):
    db.run_sync(lambda s: seed_demo(s))
    return db


def _phones(db) -> dict[str, int]:
    return dict(db.read_sync(lambda s: s.execute(select(m.PhoneNumber.e164, m.PhoneNumber.customer_id)).all()))


def test_create_from_csv_resolves_customers_and_reports_bad_rows(seeded):
    e164, owner = seeded.read_sync(lambda s: s.execute(select(m.PhoneNumber.e164, m.PhoneNumber.customer_id)
                                                       .order_by(m.PhoneNumber.id).limit(1)).one())
    text = ("customer_id,phone\n"
            f"{owner},\n"                       # the customer's first phone
            f",{e164}\n"                         # the same number again: a duplicate
            ",+39 02 1234 5678\n"                # unknown number: called without a customer
            ",12\n"                              # not a number
            "999999,\n"                          # unknown customer
            "abc,\n")
    rows = cs.parse_contacts_csv(text.encode())
    cid, report = seeded.run_sync(lambda s: cs.create_campaign(s, name="q1", survey="csat", rules=RULES,
                                                                contacts=rows, now=T0))
    assert report.as_dict()["added"] == 2 and report.duplicates == 1
    assert sorted(e["row"] for e in report.errors) == [5, 6, 7]
    summary = seeded.read_sync(lambda s: cs.campaign_summary(s, cid))
    assert summary["state"] == "draft" and summary["by_state"]["pending"] == 2 and summary["contacts"] == 2
    contacts = seeded.read_sync(lambda s: cs.contact_rows(s, cid))
    assert {c["phone"] for c in contacts} == {e164, "+390212345678"}
    assert {c["customer_id"] for c in contacts} == {owner, None}


def test_csv_without_usable_columns_is_refused():
    with pytest.raises(cs.CampaignError, match="neither customer_id nor phone"):
        cs.parse_contacts_csv(b"name,email\nx,y\n")


def test_query_source_and_do_not_call_list(seeded):
    rows = seeded.read_sync(lambda s: cs.contacts_from_query(s, segment="retail"))
    assert rows
    first = rows[0].customer_id
    seeded.run_sync(lambda s: cs.add_opt_out(s, customer_id=first, reason="asked by phone", now=T0))
    cid, report = seeded.run_sync(lambda s: cs.create_campaign(s, name="retail", survey="csat", rules=RULES,
                                                                contacts=rows, start=True, now=T0))
    assert report.opted_out == 1
    by_customer = {c["customer_id"]: c for c in seeded.read_sync(lambda s: cs.contact_rows(s, cid))}
    assert by_customer[first]["state"] == "opted_out"
    with pytest.raises(cs.CampaignError, match="exists already"):
        seeded.run_sync(lambda s: cs.create_campaign(s, name="retail", survey="csat", rules=RULES,
                                                     contacts=rows, now=T0))


def _campaign(db, n=3, start=True):
    phones = sorted(_phones(db))[:n]
    rows = [cs.ContactIn(phone=p) for p in phones]
    cid, _ = db.run_sync(lambda s: cs.create_campaign(s, name=f"c{n}{start}", survey="csat", rules=RULES,
                                                      contacts=rows, start=start, now=T0))
    return cid


def test_attempt_is_committed_once_and_refused_when_state_differs(seeded):
    cid = _campaign(seeded)
    loaded = seeded.read_sync(lambda s: cs.load_campaign(s, cid, now=T0))
    d = CampaignDialer(loaded.rules, loaded.contacts, state=loaded.state)
    place = [a for a in d.handle_timer(T0) if isinstance(a, PlaceCall)]
    assert len(place) == 2
    first = place[0]
    assert seeded.run_sync(lambda s: cs.begin_attempt(s, first.contact_id, first.attempt, "call-1", now=T0)) == "ok"
    # a second start of the same attempt (a bug, a second node) is refused: no second INVITE
    assert seeded.run_sync(lambda s: cs.begin_attempt(s, first.contact_id, first.attempt, "call-2", now=T0)) == \
        "refused"
    attempts = seeded.read_sync(lambda s: s.scalars(select(CampaignAttempt.call_id)).all())
    assert attempts == ["call-1"]
    # opted out between the dialer's decision and the call: not called
    second = place[1]
    phone = loaded.phones[second.contact_id][0]
    seeded.run_sync(lambda s: cs.add_opt_out(s, e164=phone, now=T0))
    assert seeded.run_sync(lambda s: cs.begin_attempt(s, second.contact_id, 1, "call-3", now=T0)) == "opted_out"
    # paused: nothing starts
    seeded.run_sync(lambda s: cs.change_state(s, cid, "pause", now=T0))
    third = [c.id for c in loaded.contacts if c.id not in (first.contact_id, second.contact_id)][0]
    assert seeded.run_sync(lambda s: cs.begin_attempt(s, third, 1, "call-4", now=T0)) == "refused"


def test_restart_never_redials_a_contact_left_dialing(seeded):
    cid = _campaign(seeded, n=2)
    loaded = seeded.read_sync(lambda s: cs.load_campaign(s, cid, now=T0))
    a, b = (c.id for c in loaded.contacts)
    seeded.run_sync(lambda s: cs.begin_attempt(s, a, 1, "a-1", now=T0))
    seeded.run_sync(lambda s: cs.begin_attempt(s, b, 1, "b-1", now=T0))
    seeded.run_sync(lambda s: cs.mark_answered(s, b, now=T0 + 5))
    seeded.run_sync(lambda s: cs.link_response(s, b, 42))
    # the server dies here; the next start settles both before loading
    settled = seeded.run_sync(lambda s: cs.recover(s, cid, now=T0 + 100))
    assert sorted(settled) == sorted([a, b])       # a was ringing, b answering
    rows = {c["id"]: c for c in seeded.read_sync(lambda s: cs.contact_rows(s, cid))}
    assert rows[a]["state"] == "failed" and rows[a]["last_outcome"] == "interrupted"
    assert rows[b]["state"] == "answered" and rows[b]["last_outcome"] == "hung_up"
    open_attempts = seeded.read_sync(lambda s: s.scalars(select(CampaignAttempt.outcome)).all())
    assert open_attempts == ["interrupted", "interrupted"]
    assert seeded.run_sync(lambda s: cs.recover(s, cid, now=T0 + 200)) == []
    again = seeded.read_sync(lambda s: cs.load_campaign(s, cid, now=T0 + 100))
    assert sorted(again.recent_starts) == []                     # both attempts are older than a minute
    d = CampaignDialer(again.rules, again.contacts, state=again.state, recent_starts=again.recent_starts)
    assert [x for x in d.handle_timer(T0 + 100) if isinstance(x, PlaceCall)] == []
    assert d.state is CampaignState.FINISHED


def test_results_retries_progress_and_stop(seeded):
    cid = _campaign(seeded, n=3)
    loaded = seeded.read_sync(lambda s: cs.load_campaign(s, cid, now=T0))
    ids = [c.id for c in loaded.contacts]
    seeded.run_sync(lambda s: cs.begin_attempt(s, ids[0], 1, "x-1", now=T0))
    seeded.run_sync(lambda s: cs.mark_answered(s, ids[0], now=T0 + 3))
    seeded.run_sync(lambda s: cs.finish_attempt(s, ids[0], outcome=CallOutcome.COMPLETED,
                                                 state=ContactState.COMPLETED, next_attempt_at=None, now=T0 + 60))
    seeded.run_sync(lambda s: cs.begin_attempt(s, ids[1], 1, "y-1", now=T0))
    seeded.run_sync(lambda s: cs.finish_attempt(s, ids[1], outcome=CallOutcome.BUSY, state=ContactState.PENDING,
                                                 next_attempt_at=T0 + 900, sip_status=486, now=T0 + 2))
    summary = seeded.read_sync(lambda s: cs.campaign_summary(s, cid))
    assert summary["by_state"]["completed"] == 1 and summary["by_state"]["pending"] == 2
    assert summary["called"] == 2 and summary["attempts"] == 2
    assert summary["response_rate"] == 0.5 and summary["answer_rate"] == 0.5
    reloaded = seeded.read_sync(lambda s: cs.load_campaign(s, cid, now=T0 + 2))
    retry = {c.id: c for c in reloaded.contacts}[ids[1]]
    assert retry.state is ContactState.PENDING and retry.attempts == 1 and retry.next_attempt_at == T0 + 900
    assert len(reloaded.recent_starts) == 2
    attempt = seeded.read_sync(lambda s: s.execute(select(CampaignAttempt.outcome, CampaignAttempt.sip_status,
                                                          CampaignAttempt.ended_at)
                                                   .where(CampaignAttempt.call_id == "y-1")).one())
    assert attempt[0] == "busy" and attempt[1] == 486 and attempt[2] is not None
    assert seeded.run_sync(lambda s: cs.change_state(s, cid, "stop", now=T0 + 5)) is CampaignState.STOPPED
    summary = seeded.read_sync(lambda s: cs.campaign_summary(s, cid))
    assert summary["state"] == "stopped" and summary["by_state"]["skipped"] == 2
    with pytest.raises(cs.CampaignError, match="cannot resume"):
        seeded.run_sync(lambda s: cs.change_state(s, cid, "resume", now=T0 + 6))


def test_survey_opt_out_puts_the_customer_on_the_do_not_call_list(seeded):
    cid = _campaign(seeded, n=1)
    (contact,) = seeded.read_sync(lambda s: cs.load_campaign(s, cid, now=T0)).contacts
    seeded.run_sync(lambda s: cs.begin_attempt(s, contact.id, 1, "z-1", now=T0))
    seeded.run_sync(lambda s: cs.finish_attempt(s, contact.id, outcome=CallOutcome.OPTED_OUT,
                                                 state=ContactState.OPTED_OUT, next_attempt_at=None, now=T0 + 30))
    phone = seeded.read_sync(lambda s: s.get(CampaignContact, contact.id).phone)
    other = _campaign_with_phone(seeded, phone)
    states = {c["phone"]: c["state"] for c in seeded.read_sync(lambda s: cs.contact_rows(s, other))}
    assert states == {phone: "opted_out", "+390212345678": "pending"}


def test_survey_opt_out_already_listed_by_the_survey_store_adds_no_second_row(seeded):
    from crm_bridge.campaign_models import ContactOptOut

    cid = _campaign(seeded, n=1)
    (contact,) = seeded.read_sync(lambda s: cs.load_campaign(s, cid, now=T0)).contacts
    phone = seeded.read_sync(lambda s: s.get(CampaignContact, contact.id).phone)
    seeded.run_sync(lambda s: cs.begin_attempt(s, contact.id, 1, "z-2", now=T0))
    seeded.run_sync(lambda s: cs.add_opt_out(s, e164=phone, source="survey", now=T0 + 29))
    seeded.run_sync(lambda s: cs.finish_attempt(s, contact.id, outcome=CallOutcome.OPTED_OUT,
                                                 state=ContactState.OPTED_OUT, next_attempt_at=None, now=T0 + 30))
    rows = seeded.read_sync(lambda s: s.scalars(select(ContactOptOut.id).where(ContactOptOut.e164 == phone)).all())
    assert len(rows) == 1


def _campaign_with_phone(db, phone):
    rows = [cs.ContactIn(phone=phone), cs.ContactIn(phone="+390212345678")]
    cid, _ = db.run_sync(lambda s: cs.create_campaign(s, name="next", survey="csat", rules=RULES, contacts=rows,
                                                      now=T0))
    return cid


def test_opted_out_pending_finds_new_entries_by_customer_and_by_number(seeded):
    phones = _phones(seeded)
    numbers = sorted(phones)[:3]
    cid, _ = seeded.run_sync(lambda s: cs.create_campaign(s, name="dnc", survey="csat", rules=RULES, start=True,
                                                          contacts=[cs.ContactIn(phone=p) for p in numbers], now=T0))
    assert seeded.read_sync(lambda s: cs.opted_out_pending(s, cid)) == []
    seeded.run_sync(lambda s: cs.add_opt_out(s, customer_id=phones[numbers[0]], now=T0))
    seeded.run_sync(lambda s: cs.add_opt_out(s, e164=numbers[2], now=T0))
    by_phone = {c["phone"]: c["id"] for c in seeded.read_sync(lambda s: cs.contact_rows(s, cid))}
    assert sorted(seeded.read_sync(lambda s: cs.opted_out_pending(s, cid))) == sorted(
        [by_phone[numbers[0]], by_phone[numbers[2]]])
