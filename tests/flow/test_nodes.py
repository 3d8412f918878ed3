"""Each node kind on small purpose-written flows: collect validation, enroll, language menu, transfer, goto..."""

import pytest

from ivr.flow import (CallerLookedUp, CollectDigits, DigitsCollected, EnrollVoice, Finished, Hangup, IvrExit,
                      PlayFinished, Transfer, VoiceResult, load_ivr_config)
from ivr.flow.context import CallContext, evaluate, fill_template
from ivr.flow.interpreter import luhn_ok
from ivr.flow.model import Condition
from tests.flow.helpers import MONDAY_10, Driver, write_config

HEAD = """
settings: {default_flow: main}
schedules:
  hours: {timezone: Europe/Rome, hours: {mon-fri: "09:00-17:00"}, holidays: ["2026-11-24"]}
entry_points:
  - {dnis: "+39800*", flow: main}
  - {regex: "^\\\\+4420.*", flow: london}
flows:
  london:
    start: bye
    nodes:
      bye: {kind: transfer, uri: "sip:london@pbx.example.com", prompt: "One moment."}
"""


def cfg_with(tmp_path, nodes: str, start: str = "a"):
    text = HEAD + f"  main:\n    start: {start}\n    nodes:\n" + "\n".join("      " + line for line in
                                                                           nodes.strip("\n").splitlines())
    return load_ivr_config(write_config(tmp_path, text))


COLLECT = """
a:
  kind: collect
  prompt: {it: "Numero della carta", en: "Card number"}
  variable: card
  min_length: 12
  max_length: 19
  validate: {luhn: true}
  max_retries: 1
  invalid_prompt: "Numero non valido."
  no_input_prompt: "Nessuna cifra."
  next: done
  on_failure: fail
done: {kind: hangup, reason: ok}
fail: {kind: hangup, reason: bad_card}
"""


def test_collect_luhn_valid_stores_variable(tmp_path):
    d = Driver(cfg_with(tmp_path, COLLECT))
    d.send(PlayFinished())
    assert d.action == CollectDigits(19, 6.0, 3.0, "#", False)
    d.send(DigitsCollected("4111111111111111", "terminator"))
    assert d.last == [Hangup("ok"), Finished(IvrExit.HUNG_UP, "ok")]
    assert d.run.context.variables["card"] == "4111111111111111"


def test_collect_invalid_then_retries_exhausted(tmp_path):
    d = Driver(cfg_with(tmp_path, COLLECT))
    d.send(PlayFinished())
    d.send(DigitsCollected("4111111111111112", "terminator"))        # Luhn fails
    assert d.texts() == ["Numero non valido.", "Numero della carta"]
    d.send(PlayFinished())
    d.send(DigitsCollected("", "timeout"))
    assert d.last == [Hangup("bad_card"), Finished(IvrExit.HUNG_UP, "bad_card")]
    assert "card" not in d.run.context.variables


def test_collect_barge_in_first_digit_prefixes_the_rest(tmp_path):
    d = Driver(cfg_with(tmp_path, COLLECT))
    d.send(PlayFinished(interrupted_digit="4"))
    assert d.action == CollectDigits(18, 3.0, 3.0, "#", False)
    d.send(DigitsCollected("111111111111111", "terminator"))
    assert d.run.context.variables["card"] == "4111111111111111"


def test_collect_regex(tmp_path):
    nodes = """
a:
  kind: collect
  prompt: "Codice"
  variable: code
  terminator: null
  max_length: 4
  validate: {regex: "19\\\\d\\\\d"}
  next: ok
ok: {kind: hangup}
"""
    d = Driver(cfg_with(tmp_path, nodes))
    d.send(PlayFinished())
    assert d.action.terminator is None
    d.send(DigitsCollected("2001", "max_digits"))
    d.send(PlayFinished())
    d.send(DigitsCollected("1985", "max_digits"))
    assert d.run.context.variables["code"] == "1985"


def test_luhn():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710") and not luhn_ok("12a")


def test_language_menu_switches_prompts(tmp_path):
    nodes = """
a:
  kind: language_menu
  prompt: "Per l'italiano prema 1. For English press 2."
  options: {"1": it, "2": en}
  next: b
b:
  kind: hangup
  prompt: {it: "Arrivederci", en: "Goodbye"}
"""
    d = Driver(cfg_with(tmp_path, nodes))
    d.send(PlayFinished(interrupted_digit="2"))
    assert d.texts() == ["Goodbye"] and d.action.prompts[0].language == "en"
    d2 = Driver(cfg_with(tmp_path, nodes))
    d2.send(PlayFinished())
    d2.send(DigitsCollected("", "timeout"))
    d2.send(PlayFinished())
    d2.send(DigitsCollected("7", "max_digits"))                      # retries exhausted: keep default
    assert d2.texts() == ["Arrivederci"]


def test_enroll_voice_three_takes_with_retry(tmp_path):
    nodes = """
a: {kind: identify, on_found: e, on_not_found: fail, on_failed: fail}
e:
  kind: enroll_voice
  prompt: "Dica la frase"
  takes: 2
  retry_prompts: {not_enough_speech: "Più forte"}
  branches: {accept: ok}
  fallback: fail
ok: {kind: hangup, reason: enrolled}
fail: {kind: hangup, reason: failed}
"""
    d = Driver(cfg_with(tmp_path, nodes))
    d.send(CallerLookedUp({"id": 7, "name": "Ugo"}))
    d.send(PlayFinished())
    assert d.action == EnrollVoice("7", 1, 2)
    d.send(VoiceResult("not_enough_speech"))
    assert d.texts() == ["Più forte", "Dica la frase"]
    d.send(PlayFinished())
    assert d.action == EnrollVoice("7", 1, 2)
    d.send(VoiceResult("accept"))
    d.send(PlayFinished())
    assert d.action == EnrollVoice("7", 2, 2)
    d.send(VoiceResult("accept"))
    assert d.last == [Hangup("enrolled"), Finished(IvrExit.HUNG_UP, "enrolled")]
    assert d.run.context.variables["voice_enrolled"] is True


def test_enroll_gives_up_after_max_attempts(tmp_path):
    nodes = """
a: {kind: identify, on_found: e, on_not_found: fail, on_failed: fail}
e: {kind: enroll_voice, prompt: "Dica", takes: 3, max_attempts: 2, branches: {accept: ok}, fallback: fail}
ok: {kind: hangup, reason: enrolled}
fail: {kind: hangup, reason: failed}
"""
    d = Driver(cfg_with(tmp_path, nodes))
    d.send(CallerLookedUp({"id": 7}))
    for _ in range(2):
        d.send(PlayFinished())
        d.send(VoiceResult("not_enough_speech"))
    assert d.last[0] == Hangup("failed")


def test_identify_not_found_branch_and_verify_without_customer(tmp_path):
    nodes = """
a: {kind: identify, on_found: ok, on_not_found: v, on_failed: ok}
v: {kind: verify_voice, prompt: "x", branches: {not_enrolled: nv}, fallback: ok}
nv: {kind: hangup, reason: not_enrolled}
ok: {kind: hangup}
"""
    d = Driver(cfg_with(tmp_path, nodes))
    d.send(CallerLookedUp(None))
    assert d.last[0] == Hangup("not_enrolled")


def test_transfer_via_regex_entry_and_play_kind(tmp_path):
    nodes = """
a: {kind: play, prompt: {wav: ../x.wav, text: hi}, next: b}
b: {kind: goto, flow: london}
"""
    cfg_dir = tmp_path / "c"
    cfg_dir.mkdir()
    import wave
    with wave.open(str(tmp_path / "x.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 80)
    cfg = cfg_with(cfg_dir, nodes)
    assert cfg.flow_for("+44 20 7946 0000") == "london"
    assert cfg.flow_for("+39 800 123456") == "main" and cfg.flow_for("06 1234567") == "main"
    d = Driver(cfg, dnis="800123456")
    assert d.action.prompts[0].wav == str((tmp_path / "x.wav").resolve())
    d.send(PlayFinished())
    d.send(PlayFinished())
    assert d.last == [Transfer("sip:london@pbx.example.com"),
                      Finished(IvrExit.TRANSFERRED, "sip:london@pbx.example.com")]
    assert d.run.trace.path == ["main.a", "main.b", "london.bye"]


def test_queue_without_any_queue_is_an_error_exit(tmp_path):
    d = Driver(cfg_with(tmp_path, "a: {kind: queue}"))
    assert d.last == [Hangup("no_queue"), Finished(IvrExit.ERROR, "no queue at main.a")]


def test_set_and_branch_conditions(tmp_path):
    nodes = """
a: {kind: set, service: loans, skills: [mortgage], priority: 5, variables: {tier: 2}, next: b}
b:
  kind: branch
  cases:
    - if: {all: [{var: tier, in: [2, 3]}, {dnis: "+39800*"}, {not: {holiday: hours}}, {open: hours}]}
      next: q
  else: h
q: {kind: queue, queue: loans}
h: {kind: hangup}
"""
    d = Driver(cfg_with(tmp_path, nodes), dnis="+39800555555")
    q = d.last[0]
    assert (q.queue, q.service, q.skills, q.priority, q.variables) == ("loans", "loans", ("mortgage",), 5,
                                                                      {"tier": 2})
    d = Driver(cfg_with(tmp_path, nodes), dnis="+39800555555", now=MONDAY_10 + 86400)  # listed holiday
    assert d.last[0] == Hangup("normal")


@pytest.mark.parametrize("cond,expected", [
    ({"identified": True}, True), ({"verified": True}, False), ({"segment": ["critical", "business"]}, True),
    ({"segment": "retail"}, False), ({"var": "x", "equals": "1"}, True), ({"var": "x", "equals": 1}, True),
    ({"var": "missing"}, False), ({"language": "en"}, True), ({"ani_withheld": True}, False),
    ({"any": [{"verified": True}, {"dnis": ["800100", "800200"]}]}, True), ({"not": {"dnis": "+39 800 100"}}, True),
])
def test_conditions(cond, expected):
    ctx = CallContext("c", "+393331112222", None, "800200", language="en",
                      customer={"id": 1, "segment": "critical"}, variables={"x": "1"})
    assert evaluate(Condition.model_validate(cond), ctx, MONDAY_10, {}) is expected


def test_fill_template():
    scope = {"customer": {"first_name": "Mario"}, "var": {}}
    assert fill_template("Buongiorno {customer.first_name}.", scope) == "Buongiorno Mario."
    assert fill_template("Buongiorno {customer.first_name}, ciao.", {}) == "Buongiorno, ciao."


def test_media_reason_values_pass_straight_through(tmp_path):
    """``ivr.media`` reports max/terminator/timeout/closed; closed (media stopped) counts as no input."""
    d = Driver(cfg_with(tmp_path, COLLECT))
    d.send(PlayFinished())
    d.send(DigitsCollected("", "closed"))
    assert d.texts() == ["Nessuna cifra.", "Numero della carta"]
    d.send(PlayFinished())
    d.send(DigitsCollected("4111111111111111", "max"))
    assert d.run.trace.digits[-1].reason == "max" and d.last[0] == Hangup("ok")
