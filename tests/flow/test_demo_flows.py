"""The demo bank configuration driven through the interpreter: every top-level branch and the edge cases."""

import json

import pytest

from ivr.flow import (CallerHungUp, CallerLookedUp, CollectDigits, DigitsCollected, Finished, FlowProtocolError,
                      Hangup, IvrExit, IvrTrace, LookupCaller, PinResult, Play, PlayFinished, Queue, VerifyPin,
                      VerifyVoice, VoiceResult)
from tests.flow.helpers import MONDAY_10, SUNDAY_10, Driver, demo_config, rome

MARIO = {"id": "C1", "name": "Mario Rossi", "segment": "retail", "language": "it"}
ANNA = {"id": "C2", "name": "Anna Smith", "segment": "retail", "language": "en"}


@pytest.fixture(scope="module")
def cfg():
    return demo_config()


def to_main_menu(d: Driver, customer=MARIO) -> None:
    assert isinstance(d.action, Play)                       # welcome
    d.send(PlayFinished())
    assert d.action == LookupCaller("+393331234567")
    d.send(CallerLookedUp(customer))
    d.send(PlayFinished())                                  # greeting
    assert isinstance(d.action, Play) and d.action.barge_in  # main menu prompt
    d.send(PlayFinished())
    assert isinstance(d.action, CollectDigits) and d.action.max_digits == 1


def press(d: Driver, digits: str) -> None:
    d.send(DigitsCollected(digits, "max_digits"))


def voice(d: Driver, *decisions: str) -> None:
    for dec in decisions:
        assert isinstance(d.action, Play)                   # verification prompt (+ beep)
        d.send(PlayFinished())
        assert isinstance(d.action, VerifyVoice) and d.action.customer_id == d.run.context.customer_id
        d.send(VoiceResult(dec, 0.5))


def queued(d: Driver) -> Queue:
    assert isinstance(d.action, Play)                       # "please hold"
    d.send(PlayFinished())
    q, fin = d.last
    assert isinstance(q, Queue) and fin == Finished(IvrExit.QUEUED, q.queue)
    return q


def test_known_caller_accounts_verified(cfg):
    d = Driver(cfg)
    to_main_menu(d)
    greet = d.run.trace.prompts[1]
    assert greet.text == "Buongiorno Mario." and greet.language == "it"
    press(d, "1")
    voice(d, "accept")
    q = queued(d)
    assert (q.queue, q.service, q.customer_id, q.verified, q.identified_by) == \
        ("retail_accounts", "accounts_transfers", "C1", True, "ani")
    assert q.variables["verification"] == "voice"
    t = d.run.trace
    assert t.exit == "queued" and t.entry_flow == "retail" and t.duration > 0
    assert t.path[:4] == ["retail.welcome", "retail.identify", "retail.greet", "retail.main_menu"]
    assert "handoff.to_queue" in t.path and t.digits[0].digits == "1"
    again = IvrTrace.from_dict(json.loads(json.dumps(t.to_dict())))
    assert again.path == t.path and again.exit == "queued" and again.verified


def test_english_customer_hears_english(cfg):
    d = Driver(cfg)
    to_main_menu(d, ANNA)
    assert d.run.trace.prompts[1].text == "Hello Anna."
    assert d.plays[-1].prompts[0].language == "en" and d.plays[-1].prompts[0].text.startswith("Accounts and transfers")


@pytest.mark.parametrize("digits,queue,service", [
    ("1", "retail_accounts", "accounts_transfers"), ("4", "trading", "trading"), ("0", "general", "general")])
def test_top_level_branches(cfg, digits, queue, service):
    d = Driver(cfg)
    to_main_menu(d)
    press(d, digits)
    voice(d, "accept")
    q = queued(d)
    assert (q.queue, q.service) == (queue, service)


@pytest.mark.parametrize("sub,service", [("1", "online_password"), ("2", "online_certificates"),
                                         ("3", "online_app")])
def test_online_banking_submenu(cfg, sub, service):
    d = Driver(cfg)
    to_main_menu(d)
    press(d, "3")
    d.send(PlayFinished())
    press(d, sub)
    voice(d, "accept")
    q = queued(d)
    assert (q.queue, q.service) == ("online_banking", service)


def test_lost_card_out_of_hours_still_queued_high_priority(cfg):
    d = Driver(cfg, now=SUNDAY_10)
    to_main_menu(d)
    press(d, "2")
    d.send(PlayFinished())
    press(d, "1")
    voice(d, "accept")
    q = queued(d)
    assert (q.queue, q.service, q.priority) == ("cards_lost_stolen", "card_block", 90)


@pytest.mark.parametrize("when,open_", [
    (SUNDAY_10, False),
    (rome(2026, 12, 8, 10, 0), False),          # Immacolata, a Tuesday
    (rome(2026, 4, 6, 10, 0), False),           # Easter Monday 2026
    (rome(2027, 3, 29, 10, 0), False),          # Easter Monday 2027 (computed, not listed)
    (rome(2026, 11, 28, 12, 30), True),         # Saturday morning
    (rome(2026, 11, 28, 13, 0), False),         # Saturday, closing time
    (rome(2026, 11, 23, 7, 59), False),
    (rome(2026, 11, 23, 19, 59), True),
    (rome(2026, 7, 15, 8, 0), True),            # summer time (CEST) handled by the zone
])
def test_business_hours(cfg, when, open_):
    d = Driver(cfg, now=when)
    to_main_menu(d)
    press(d, "1")
    voice(d, "accept")
    assert isinstance(d.action, Play)
    if open_:
        assert d.texts()[0].startswith("Resti in linea")
    else:
        assert d.texts()[0].startswith("Siamo chiusi")
        d.send(PlayFinished())
        assert d.last == [Hangup("closed"), Finished(IvrExit.HUNG_UP, "closed")]
        assert d.run.trace.exit == "hung_up"


def test_menu_timeout_invalid_repeat_and_retries_exhausted(cfg):
    d = Driver(cfg)
    to_main_menu(d)
    d.send(DigitsCollected("", "timeout"))
    assert d.texts()[0] == "Non ho ricevuto nessuna scelta." and d.texts()[1].startswith("Conti e bonifici")
    d.send(PlayFinished())
    press(d, "9")                                            # repeat: no error counted, no error prompt
    assert d.texts()[0].startswith("Conti e bonifici")
    d.send(PlayFinished())
    press(d, "7")
    assert d.texts()[0] == "Scelta non valida."
    d.send(PlayFinished())
    press(d, "8")                                            # third error > max_retries=2 -> on_failure: agent
    voice(d, "accept")
    assert queued(d).queue == "general"


def test_menu_barge_in_skips_collect(cfg):
    d = Driver(cfg)
    to_main_menu(d)
    d.send(DigitsCollected("2", "max_digits"))
    assert d.texts()[0].startswith("Carta persa")
    d.send(PlayFinished(interrupted_digit="1"))              # pressed during the cards prompt
    assert isinstance(d.action, Play) and d.run.current_node == "handoff.voice"
    assert [p.interrupted for p in d.run.trace.prompts if p.node == "cards_menu"] == [True]


def test_type_ahead_during_greeting_reaches_menu(cfg):
    d = Driver(cfg)
    d.send(PlayFinished())
    d.send(CallerLookedUp(MARIO))
    d.send(PlayFinished(interrupted_digit="4"))              # caller knows the menu
    assert d.run.current_node == "handoff.voice"
    assert d.run.context.service == "trading"


def test_unknown_caller_pin_fallback(cfg):
    d = Driver(cfg)
    d.send(PlayFinished())
    d.send(CallerLookedUp(None))
    assert d.texts()[0].startswith("Digiti il numero di conto")
    d.send(PlayFinished())
    assert d.action == CollectDigits(8, 6.0, 3.0, "#", False)
    d.send(DigitsCollected("12345678", "max_digits"))
    assert isinstance(d.action, Play)                        # PIN prompt
    d.send(PlayFinished())
    assert d.action.secret
    d.send(DigitsCollected("54321", "terminator"))
    assert d.action == VerifyPin("12345678", "54321") and "54321" not in repr(d.action)
    d.send(PinResult(ok=True, customer=MARIO))
    assert d.run.context.identified_by == "pin" and d.run.trace.digits[-1].digits == "*****"
    assert d.texts()[0] == "Buongiorno Mario."


def test_withheld_number_goes_straight_to_pin(cfg):
    d = Driver(cfg, ani=None)
    d.send(PlayFinished())
    assert d.texts()[0].startswith("Digiti il numero di conto")
    assert d.run.trace.results[0].result == "withheld"


def _enter_account_and_pin(d: Driver, account="12345678", pin="00000"):
    d.send(PlayFinished())
    d.send(DigitsCollected(account, "max_digits"))
    d.send(PlayFinished())
    d.send(DigitsCollected(pin, "max_digits"))


def test_pin_wrong_then_lockout(cfg):
    d = Driver(cfg, ani=None)
    d.send(PlayFinished())
    _enter_account_and_pin(d)
    d.send(PinResult(ok=False))
    assert d.texts()[0] == "I dati inseriti non sono corretti."
    _enter_account_and_pin(d)
    d.send(PinResult(ok=False, locked=True))
    assert d.texts()[0].startswith("Il suo PIN telefonico è bloccato")
    d.send(PlayFinished())
    # not identified: no voice verification, straight to hours and the general queue
    q = queued(d)
    assert q.queue == "general" and q.customer_id is None and q.variables["verification"] == "not_verified"
    assert [r.result for r in d.run.trace.results if r.what == "pin"] == ["wrong", "locked"]


def test_pin_attempts_exhausted_continue_unidentified(cfg):
    d = Driver(cfg, ani=None)
    d.send(PlayFinished())
    d.send(PlayFinished())
    d.send(DigitsCollected("123", "terminator"))             # too short: invalid, no VerifyPin
    assert d.texts()[0] == "I dati inseriti non sono corretti."
    d.send(PlayFinished())
    d.send(DigitsCollected("", "timeout"))                   # no input
    assert d.texts()[0] == "Non ho ricevuto nessuna cifra."
    _enter_account_and_pin(d)
    d.send(PinResult(ok=False))                              # third failure -> on_failed
    assert d.run.current_node == "retail.main_menu"
    assert d.run.context.variables["identification"] == "failed"


def test_voice_retries_then_not_verified(cfg):
    d = Driver(cfg)
    to_main_menu(d)
    press(d, "1")
    voice(d, "not_enough_speech")
    assert d.texts()[0] == "Non l'ho sentita bene. Riproviamo."
    voice(d, "reject")                                       # max_attempts=2 reached -> fallback
    q = queued(d)
    assert not q.verified and q.variables["verification"] == "not_verified"
    assert [r.result for r in d.run.trace.results if r.what == "verify_voice"] == ["not_enough_speech", "reject"]


def test_voice_not_enrolled_goes_to_agent_unverified(cfg):
    d = Driver(cfg)
    to_main_menu(d)
    press(d, "2")
    d.send(PlayFinished())
    press(d, "2")
    voice(d, "not_enrolled")
    q = queued(d)
    assert (q.queue, q.verified) == ("cards", False)


def test_caller_hangs_up_mid_menu(cfg):
    d = Driver(cfg)
    to_main_menu(d)
    d.send(CallerHungUp())
    assert d.last == [Finished(IvrExit.ABANDONED, "caller hung up at retail.main_menu")]
    assert d.run.trace.exit == "abandoned" and d.run.finished
    assert d.run.handle(PlayFinished(), d.now + 1) == []      # late events after the end are ignored


def test_wrong_event_is_a_protocol_error(cfg):
    d = Driver(cfg)
    with pytest.raises(FlowProtocolError, match="waiting for PlayFinished"):
        d.run.handle(DigitsCollected("1"), d.now)


def test_max_ivr_time_timer(cfg):
    d = Driver(cfg)
    assert d.run.get_timer() == MONDAY_10 + 900
    assert d.run.handle_timer(MONDAY_10 + 10) == []
    out = d.run.handle_timer(MONDAY_10 + 900)
    assert out == [Hangup("max_ivr_time"), Finished(IvrExit.HUNG_UP, "max_ivr_time")]
    assert d.run.get_timer() is None


@pytest.mark.parametrize("dnis,flow", [
    ("800100", "retail"), ("+390212345600", "retail"), ("0212345600", "retail"), ("0039 02 1234 5600", "retail"),
    ("800200", "business"), ("+390212345700", "business"), ("+390299999999", "general"), ("555", "general")])
def test_dialed_number_selects_flow(cfg, dnis, flow):
    assert cfg.flow_for(dnis) == flow


def test_business_critical_segment_priority(cfg):
    d = Driver(cfg, dnis="800200")
    d.send(PlayFinished())
    d.send(CallerLookedUp({**MARIO, "segment": "critical"}))
    d.send(PlayFinished())
    d.send(PlayFinished())
    press(d, "1")
    voice(d, "accept")
    q = queued(d)
    assert (q.queue, q.priority) == ("business_accounts", 50)


def test_english_caller_routing(cfg):
    d = Driver(cfg)
    to_main_menu(d, ANNA)
    press(d, "0")
    voice(d, "accept")
    assert queued(d).queue == "english_desk"
    d = Driver(cfg)
    to_main_menu(d, ANNA)
    press(d, "4")
    voice(d, "accept")
    q = queued(d)
    assert (q.queue, q.skills, q.language) == ("trading", ("language_en",), "en")


def test_lost_card_sets_routing_critical_flag(cfg):
    d = Driver(cfg, dnis="800200", now=SUNDAY_10)
    d.send(PlayFinished())
    d.send(CallerLookedUp(MARIO))
    d.send(PlayFinished())
    d.send(PlayFinished())
    press(d, "2")
    d.send(PlayFinished())
    press(d, "1")
    voice(d, "reject", "reject")
    q = queued(d)
    assert (q.queue, q.priority, q.variables["critical"], q.verified) == ("cards_lost_stolen", 90, True, False)
