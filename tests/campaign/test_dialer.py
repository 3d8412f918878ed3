"""Examples of the dialer's rules, step by step (the property tests cover arbitrary orders)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ivr.campaign.dialer import CampaignDialer, CampaignFinished, Contact, ContactDone, DialerError, PlaceCall, \
    RetryScheduled
from ivr.campaign.rules import CallOutcome, CampaignRules, CampaignState, ContactState, Pacing, RetryRule, \
    RetryRules, outcome_of_sip_status
from ivr.campaign.window import next_open
from ivr.flow.model import Schedule

ROME = ZoneInfo("Europe/Rome")
WINDOW = Schedule(timezone="Europe/Rome", hours={"mon-fri": "09:00-18:00"}, holidays=["2025-03-28"])
MON_0850 = datetime(2025, 3, 24, 8, 50, tzinfo=ROME).timestamp()
MON_0900 = datetime(2025, 3, 24, 9, 0, tzinfo=ROME).timestamp()


def rules(**pacing) -> CampaignRules:
    return CampaignRules(window=WINDOW, pacing=Pacing(**({"max_concurrent": 2, "calls_per_minute": 10} | pacing)),
                         retries=RetryRules(no_answer=RetryRule(max_attempts=3, delay_seconds=600),
                                            busy=RetryRule(max_attempts=2, delay_seconds=120),
                                            failed=RetryRule(max_attempts=1, delay_seconds=0)))


def test_next_open_skips_nights_weekends_and_holidays_and_crosses_dst():
    fri_holiday = datetime(2025, 3, 27, 18, 30, tzinfo=ROME).timestamp()     # Thursday evening
    # Friday 28 is a holiday, then the weekend: Monday 31 March 09:00 (after the DST change on the 30th)
    assert next_open(WINDOW, fri_holiday) == datetime(2025, 3, 31, 9, 0, tzinfo=ROME).timestamp()
    assert next_open(WINDOW, MON_0850) == MON_0900
    assert next_open(WINDOW, MON_0900 + 5) == MON_0900 + 5
    every_day = [(date(2024, 1, 1) + timedelta(days=i)).strftime("%m-%d") for i in range(366)]
    never = Schedule(timezone="UTC", hours={"mon": "09:00-10:00"}, holidays=every_day)
    assert next_open(never, MON_0900) is None


def test_waits_for_the_window_then_paces_by_concurrency():
    d = CampaignDialer(rules(), [Contact(i) for i in range(4)])
    assert d.handle_timer(MON_0850) == []
    assert d.get_timer() == MON_0900
    assert d.handle_timer(MON_0900) == [PlaceCall(0, 1), PlaceCall(1, 1)]
    assert d.get_timer() is None                      # both lines busy: the next event is a call ending
    acts = d.call_result(0, CallOutcome.COMPLETED, MON_0900 + 60)
    assert acts == [ContactDone(0, ContactState.COMPLETED, CallOutcome.COMPLETED, 1), PlaceCall(2, 1)]


def test_calls_per_minute_spreads_starts_over_the_minute():
    d = CampaignDialer(rules(max_concurrent=5, calls_per_minute=2), [Contact(i) for i in range(4)])
    assert [a.contact_id for a in d.handle_timer(MON_0900)] == [0, 1]
    assert d.get_timer() == MON_0900 + 60
    assert d.handle_timer(MON_0900 + 59.9) == []
    assert [a.contact_id for a in d.handle_timer(MON_0900 + 60)] == [2, 3]


def test_restart_keeps_the_pace_of_the_previous_run():
    d = CampaignDialer(rules(calls_per_minute=1), [Contact(0)], recent_starts=[MON_0900 - 30])
    assert d.handle_timer(MON_0900) == []
    assert d.get_timer() == MON_0900 + 30


def test_retries_follow_the_rule_of_the_outcome_then_end_the_contact():
    d = CampaignDialer(rules(), [Contact(7)])
    d.handle_timer(MON_0900)
    assert d.call_result(7, CallOutcome.BUSY, MON_0900 + 10) == [RetryScheduled(7, CallOutcome.BUSY, 1, MON_0900 + 130)]
    assert d.get_timer() == MON_0900 + 130
    assert d.handle_timer(MON_0900 + 130) == [PlaceCall(7, 2)]
    assert d.call_result(7, CallOutcome.BUSY, MON_0900 + 140) == [ContactDone(7, ContactState.BUSY, CallOutcome.BUSY, 2),
                                                                  CampaignFinished()]
    assert d.state is CampaignState.FINISHED


def test_failed_is_not_retried_with_max_attempts_one_and_answered_ends_the_contact():
    d = CampaignDialer(rules(), [Contact(1), Contact(2)])
    d.handle_timer(MON_0900)
    assert d.call_result(1, CallOutcome.FAILED, MON_0900)[0] == ContactDone(1, ContactState.FAILED,
                                                                            CallOutcome.FAILED, 1)
    d.call_answered(2, MON_0900)
    assert d.call_result(2, CallOutcome.HUNG_UP, MON_0900)[0].state is ContactState.ANSWERED


def test_opt_out_during_a_call_prevents_the_retry_and_pending_contacts_are_dropped():
    d = CampaignDialer(rules(max_concurrent=1), [Contact(1), Contact(2)])
    d.handle_timer(MON_0900)
    assert d.opt_out(2, MON_0900) == [ContactDone(2, ContactState.OPTED_OUT, None, 0)]
    assert d.opt_out(1, MON_0900) == []
    acts = d.call_result(1, CallOutcome.NO_ANSWER, MON_0900 + 30)
    assert acts == [ContactDone(1, ContactState.OPTED_OUT, CallOutcome.NO_ANSWER, 1), CampaignFinished()]


def test_pause_resume_stop():
    d = CampaignDialer(rules(max_concurrent=1), [Contact(i) for i in range(3)])
    d.handle_timer(MON_0900)
    d.pause(MON_0900)
    assert d.call_result(0, CallOutcome.COMPLETED, MON_0900 + 5)[1:] == []       # nothing placed while paused
    assert d.get_timer() is None
    assert d.resume(MON_0900 + 10) == [PlaceCall(1, 1)]
    acts = d.stop(MON_0900 + 20)
    assert acts == [ContactDone(2, ContactState.SKIPPED, None, 0)]
    assert d.resume(MON_0900 + 30) == [] and d.state is CampaignState.STOPPED
    # the call in flight ends normally; its retry would have been allowed but the campaign is stopped
    assert d.call_result(1, CallOutcome.NO_ANSWER, MON_0900 + 40) == [
        ContactDone(1, ContactState.SKIPPED, CallOutcome.NO_ANSWER, 1)]


def test_call_not_placed_does_not_count_the_attempt():
    d = CampaignDialer(rules(), [Contact(1)])
    d.handle_timer(MON_0900)
    assert d.call_not_placed(1, MON_0900, retry_after=30) == []
    assert d.contacts[1].attempts == 0 and d.get_timer() == MON_0900 + 30
    assert d.handle_timer(MON_0900 + 30) == [PlaceCall(1, 1)]
    assert d.call_not_placed(1, MON_0900 + 30, opted_out=True) == [
        ContactDone(1, ContactState.OPTED_OUT, None, 0), CampaignFinished()]


def test_errors_name_the_problem():
    d = CampaignDialer(rules(), [Contact(1)])
    with pytest.raises(DialerError, match="no call in flight"):
        d.call_result(1, CallOutcome.COMPLETED, MON_0900)
    with pytest.raises(DialerError, match="settle calls"):
        d.add_contact(Contact(2, ContactState.DIALING))


@pytest.mark.parametrize("status,outcome", [(486, "busy"), (600, "busy"), (408, "no_answer"), (480, "no_answer"),
                                            (487, "no_answer"), (404, "failed"), (503, "failed")])
def test_sip_status_mapping(status, outcome):
    assert outcome_of_sip_status(status).value == outcome
