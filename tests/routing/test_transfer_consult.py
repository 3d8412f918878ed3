"""Transfers in the routing core: the note in the trail, and warm (consult) transfers that keep every agent in
one call at most (the consulted agent is reserved, then on call; RONA drops the consultation, not the caller)."""

import pytest

from routing.calls import consult_id
from routing.errors import AgentUnavailable, BadRequest
from routing.events import (CallEnded, CallQueued, CallTransferred, CancelOffer, ConsultEnded, Offer)
from routing.model import AgentState

from tests.routing.conftest import add, of_type


def _talking(engine, now=1.0):
    add(engine, "a", accounts=6, cards=6)
    add(engine, "b", accounts=6)
    add(engine, "c", cards=6)
    engine.agent_login("a", now=0.0)
    engine.enqueue("x", "accounts", now=0.0, context={"customer_id": 7, "verified": True, "ivr_path": ["m1"]})
    engine.offer_answered("x", "a", now=now)
    engine.agent_login("b", now=now)
    engine.agent_login("c", now=now)


def test_blind_transfer_keeps_the_note_in_the_trail(engine):
    _talking(engine)
    acts = engine.transfer("x", now=5.0, to_agent="b", note="wants a mortgage")
    (o,) = of_type(acts, Offer)
    assert o.agent_id == "b"
    (t,) = o.context["transfers"]
    assert (t["from_agent"], t["from_queue"], t["to_agent"], t["note"], t["warm"]) == \
        ("a", "accounts", "b", "wants a mortgage", False)
    assert o.context["customer_id"] == 7 and o.context["ivr_path"] == ["m1"]


def test_consult_reserves_the_agent_and_complete_hands_the_caller_over(engine):
    _talking(engine)
    acts = engine.consult("x", now=5.0, to_agent="b", note="card question")
    (o,) = of_type(acts, Offer)
    assert (o.call_id, o.agent_id) == (consult_id("x"), "b")
    assert o.context["consult"]["from_agent"] == "a" and o.context["consult"]["note"] == "card question"
    assert engine.agent("b").state is AgentState.RESERVED
    # b is not offered anything else meanwhile
    acts = engine.enqueue("y", "accounts", now=6.0)
    assert not of_type(acts, Offer)
    with pytest.raises(BadRequest):
        engine.consult_complete("x", now=6.5)           # b has not answered
    with pytest.raises(BadRequest):
        engine.transfer("x", now=6.5, to_queue="cards")  # one thing at a time
    engine.offer_answered(consult_id("x"), "b", now=7.0)
    assert engine.agent("b").state is AgentState.ON_CALL
    assert engine.stats["accounts"].answered == 1       # the consultation is not a customer call
    acts = engine.consult_complete("x", now=9.0)
    (t,) = of_type(acts, CallTransferred)
    assert (t.from_agent, t.to_agent) == ("a", "b")
    assert [e.by for e in of_type(acts, CallEnded)] == ["transfer"]
    assert engine.agent("a").state is AgentState.WRAP_UP
    assert engine.agent("b").state is AgentState.ON_CALL and engine.agent("b").call_id == "x"
    call = engine.call("x")
    assert call.agent_id == "b" and call.context["transfers"][-1]["warm"] is True
    assert call.context["transfers"][-1]["note"] == "card question"
    # the call now ends with b, who wraps up
    acts = engine.call_ended("x", now=20.0, by="agent")
    assert of_type(acts, CallEnded)[0].agent_id == "b"
    assert engine.agent("b").state is AgentState.WRAP_UP
    with pytest.raises(Exception):
        engine.call(consult_id("x"))


def test_consult_cancel_returns_to_the_caller_and_frees_the_consulted_agent(engine):
    _talking(engine)
    engine.consult("x", now=5.0, to_queue="cards")       # the best free agent of cards: c
    assert engine.agent("c").state is AgentState.RESERVED
    engine.offer_answered(consult_id("x"), "c", now=6.0)
    acts = engine.consult_cancel("x", now=8.0)
    (e,) = of_type(acts, ConsultEnded)
    assert (e.call_id, e.agent_id, e.reason) == ("x", "c", "cancelled")
    assert engine.agent("c").state is AgentState.AVAILABLE
    assert engine.agent("a").state is AgentState.ON_CALL and engine.call("x").agent_id == "a"
    # cancelling while it rings cancels the offer
    acts = engine.consult("x", now=9.0, to_agent="b")
    acts = engine.consult_cancel("x", now=10.0)
    assert [(c.call_id, c.agent_id) for c in of_type(acts, CancelOffer)] == [(consult_id("x"), "b")]
    assert engine.agent("b").state is AgentState.AVAILABLE
    assert engine.consult_cancel("x", now=11.0) == []    # nothing left to cancel


def test_consulted_agent_not_answering_drops_the_consultation_not_the_caller(engine):
    _talking(engine)
    engine.consult("x", now=5.0, to_agent="b")
    acts = engine.handle_timer(5.0 + 15.0)               # ring timeout of accounts
    assert [(c.agent_id, c.reason) for c in of_type(acts, CancelOffer)] == [("b", "rona")]
    (e,) = of_type(acts, ConsultEnded)
    assert (e.call_id, e.agent_id, e.reason) == ("x", "b", "rona")
    assert not of_type(acts, CallQueued) and not of_type(acts, Offer)
    assert engine.agent("b").state is AgentState.NOT_READY
    assert engine.call("x").agent_id == "a" and engine.agent("a").state is AgentState.ON_CALL
    engine.consult("x", now=30.0, to_agent="c")
    acts = engine.offer_failed(consult_id("x"), "c", "busy", now=31.0)
    assert of_type(acts, ConsultEnded)[0].reason == "busy"


def test_consult_refuses_busy_or_offline_targets_and_unconnected_calls(engine):
    _talking(engine)
    engine.enqueue("y", "accounts", now=2.0)              # goes to b
    with pytest.raises(AgentUnavailable):
        engine.consult("x", now=3.0, to_agent="b")
    with pytest.raises(BadRequest):
        engine.consult("x", now=3.0, to_agent="a")
    with pytest.raises(BadRequest):
        engine.consult("y", now=3.0, to_agent="c")        # still ringing b
    engine.agent_pause("c", "break", now=3.0)
    with pytest.raises(AgentUnavailable):
        engine.consult("x", now=3.0, to_queue="cards")    # nobody free in cards
    with pytest.raises(Exception):
        engine.call(consult_id("x"))


def test_caller_hanging_up_during_a_consultation_frees_both_agents(engine):
    _talking(engine)
    engine.consult("x", now=5.0, to_agent="b")
    engine.offer_answered(consult_id("x"), "b", now=6.0)
    acts = engine.call_ended("x", now=7.0, by="caller")
    assert of_type(acts, ConsultEnded)[0].reason == "call_ended"
    assert engine.agent("a").state is AgentState.WRAP_UP
    assert engine.agent("b").state is AgentState.AVAILABLE


def test_reconcile_keeps_a_consultation_of_a_live_call(engine):
    _talking(engine)
    engine.consult("x", now=5.0, to_agent="b")
    engine.offer_answered(consult_id("x"), "b", now=6.0)
    engine.reconcile({"x"}, now=7.0)
    assert engine.agent("b").state is AgentState.ON_CALL
    engine.reconcile(set(), now=8.0)
    assert engine.agent("b").state is not AgentState.ON_CALL
    assert engine.agent("a").state is AgentState.WRAP_UP


def test_leaving_the_line_for_voicemail_is_not_an_abandon_and_frees_a_ringing_agent(engine):
    from routing.events import CallAbandoned, CallLeftQueue

    add(engine, "a", general=5)
    engine.enqueue("w", "vm", now=0.0)                    # nobody logged in: waits
    acts = engine.leave_queue("w", now=4.0, reason="voicemail_key")
    (left,) = of_type(acts, CallLeftQueue)
    assert (left.queue, left.waited_seconds, left.reason) == ("vm", 4.0, "voicemail_key")
    assert not of_type(acts, CallAbandoned) and engine.stats["vm"].abandoned == 0
    assert engine.waiting_calls("vm") == []
    engine.agent_login("a", now=5.0)
    engine.enqueue("r", "vm", now=6.0)                    # rings a
    acts = engine.leave_queue("r", now=7.0, reason="voicemail_key")
    assert [(c.agent_id, c.reason) for c in of_type(acts, CancelOffer)] == [("a", "voicemail_key")]
    assert engine.agent("a").state is AgentState.AVAILABLE
    engine.enqueue("t", "vm", now=8.0)
    engine.offer_answered("t", "a", now=9.0)
    with pytest.raises(BadRequest):
        engine.leave_queue("t", now=10.0, reason="voicemail_key")     # talking: not in line any more


def test_voicemail_key_needs_a_voicemail_action():
    from ivr.errors import ConfigError
    from routing import load_routing_config_text

    base = "version: 1\nskills: {s: ''}\nqueues:\n  q:\n    skills: {s: 1}\n    max_wait: {seconds: 5, action: %s%s}\n"
    cfg = load_routing_config_text(base % ("voicemail", ", voicemail_key: '2'"), "q.yaml")
    assert cfg.queues["q"].max_wait.voicemail_key == "2"
    for action, extra in (("hangup", ", voicemail_key: '2'"), ("voicemail", ", voicemail_key: '22'")):
        with pytest.raises(ConfigError):
            load_routing_config_text(base % (action, extra), "q.yaml")
