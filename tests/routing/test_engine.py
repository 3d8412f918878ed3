import math

import pytest

from routing import AgentProfile, InMemoryRoutingStore, Phone, RoutingEngine
from routing.errors import (AgentUnavailable, BadRequest, DuplicateCall, IllegalTransition, OfferNotPending,
                            UnknownAgent, UnknownQueue)
from routing.events import (AgentStateChanged, Announce, AnnouncementKind, CallAbandoned, CallAnswered,
                            CallbackScheduled, CallEnded, CallLeftQueue, CallQueued, CallRequeued,
                            CallTransferred, CancelOffer, Offer, Overflow, OverflowKind, PlaceCallback,
                            RoutingStepApplied)
from routing.model import AgentState
from routing.strategies import default_registry

from tests.routing.conftest import add, make_config, of_type


def login(engine, *ids, now=0.0):
    for i in ids:
        engine.agent_login(i, now=now)


def test_offer_goes_only_to_agent_with_skill_and_level(engine):
    add(engine, "low", accounts=4)
    add(engine, "other", cards=9)
    login(engine, "low", "other")
    acts = engine.enqueue("c1", "accounts", now=1.0)
    assert not of_type(acts, Offer)
    (q,) = of_type(acts, CallQueued)
    assert (q.position, q.priority) == (1, 10.0)
    add(engine, "good", accounts=5)
    acts = engine.agent_login("good", now=2.0)
    (offer,) = of_type(acts, Offer)
    assert (offer.call_id, offer.agent_id, offer.phone, offer.ring_timeout) == ("c1", "good", "ext:good", 15.0)
    assert engine.agent("good").state is AgentState.RESERVED
    assert [e.new for e in of_type(acts, AgentStateChanged)] == ["available", "reserved"]


def test_longest_idle_agent_is_chosen(engine):
    for i, t in (("a", 5.0), ("b", 1.0), ("c", 3.0)):
        add(engine, i, accounts=6)
        engine.agent_login(i, now=t)
    assert of_type(engine.enqueue("c1", "accounts", now=10.0), Offer)[0].agent_id == "b"
    assert of_type(engine.enqueue("c2", "accounts", now=10.0), Offer)[0].agent_id == "c"


def test_most_skilled_round_robin_least_occupied(engine):
    add(engine, "f5", fraud=5)
    add(engine, "f9", fraud=9)
    login(engine, "f9")
    login(engine, "f5", now=-10)     # idle longer, but less skilled
    assert of_type(engine.enqueue("l1", "lost", now=1.0), Offer)[0].agent_id == "f9"

    eng = RoutingEngine(make_config())
    for i in "xyz":
        add(eng, i, general=3)
    login(eng, "x", "y", "z")
    got = []
    for n in range(6):
        (o,) = of_type(eng.enqueue(f"r{n}", "rr", now=float(n)), Offer)
        got.append(o.agent_id)
        eng.offer_answered(o.call_id, o.agent_id, now=n + 0.1)
        eng.call_ended(o.call_id, now=n + 0.2)
        eng.handle_timer(n + 100.0)   # wrap-up over
    assert got[:3] == ["x", "y", "z"] and got[3:] == got[:3]

    eng = RoutingEngine(make_config())
    add(eng, "busy", general=3)
    add(eng, "fresh", general=3)
    login(eng, "busy", "fresh")
    (o,) = of_type(eng.enqueue("o1", "lo", now=0.0), Offer)
    first = o.agent_id
    eng.offer_answered("o1", first, now=0.0)
    eng.call_ended("o1", now=50.0)                  # wrap 0: available again, now more occupied
    other = "fresh" if first == "busy" else "busy"
    assert of_type(eng.enqueue("o2", "lo", now=60.0), Offer)[0].agent_id == other


def test_custom_strategy_is_one_class():
    reg = default_registry.copy()

    @reg.register("alphabetical_last")
    class AlphabeticalLast:
        def agent_key(self, agent, requirement, now):
            return (tuple(-ord(ch) for ch in agent.id),)

    cfg = make_config().model_copy(update={"defaults": make_config().defaults.model_copy(
        update={"strategy": "alphabetical_last"})})
    eng = RoutingEngine(cfg, reg)
    for i in ("anna", "zoe", "mia"):
        add(eng, i, general=3)
    login(eng, "anna", "zoe", "mia")
    assert of_type(eng.enqueue("c", "general", now=1.0), Offer)[0].agent_id == "zoe"
    assert "alphabetical_last" not in default_registry.names()


def test_answer_end_wrapup_then_next_call(engine):
    add(engine, "a", accounts=6)
    login(engine, "a")
    engine.enqueue("c1", "accounts", now=0.0)
    engine.enqueue("c2", "accounts", now=1.0)
    acts = engine.offer_answered("c1", "a", now=5.0)
    (ans,) = of_type(acts, CallAnswered)
    assert ans.waited_seconds == 5.0 and ans.within_service_level
    acts = engine.call_ended("c1", now=65.0, by="agent")
    (end,) = of_type(acts, CallEnded)
    assert (end.by, end.handle_seconds) == ("agent", 60.0)
    assert engine.agent("a").state is AgentState.WRAP_UP
    engine.handle_timer(74.9)                           # c2's routing steps fire meanwhile
    assert engine.agent("a").state is AgentState.WRAP_UP
    assert engine.get_timer() == pytest.approx(75.0)    # wrap-up 10 s (defaults)
    acts = engine.handle_timer(75.0)
    assert [e.new for e in of_type(acts, AgentStateChanged)] == ["available", "reserved"]
    assert of_type(acts, Offer)[0].call_id == "c2"


def test_wrap_up_can_be_ended_early_and_pause_requested_on_call_applies_after(engine):
    add(engine, "a", accounts=6)
    login(engine, "a")
    engine.enqueue("c1", "accounts", now=0.0)
    engine.offer_answered("c1", "a", now=1.0)
    assert engine.agent_pause("a", "lunch", now=2.0) == []
    assert engine.agent("a").state is AgentState.ON_CALL
    engine.call_ended("c1", now=3.0)
    acts = engine.handle_timer(13.0)
    assert engine.agent("a").state is AgentState.PAUSED and engine.agent("a").reason == "lunch"
    assert acts[-1].new == "paused"
    engine.agent_available("a", now=14.0)
    engine.enqueue("c2", "accounts", now=15.0)
    engine.offer_answered("c2", "a", now=16.0)
    engine.call_ended("c2", now=17.0)
    engine.agent_available("a", now=18.0)               # ends wrap-up early
    assert engine.agent("a").state is AgentState.AVAILABLE
    assert engine.handle_timer(30.0) == []              # stale wrap-up timer does nothing


def test_illegal_agent_operations_raise_clear_errors(engine):
    add(engine, "a", accounts=6)
    with pytest.raises(IllegalTransition, match="log in first"):
        engine.agent_available("a", now=0.0)
    with pytest.raises(IllegalTransition, match="log in first"):
        engine.agent_pause("a", "break", now=0.0)
    login(engine, "a")
    with pytest.raises(IllegalTransition, match="already logged in"):
        engine.agent_login("a", now=0.0)
    engine.enqueue("c1", "accounts", now=1.0)
    with pytest.raises(IllegalTransition, match="reserved to offline"):
        engine.agent_logout("a", now=2.0)
    engine.offer_answered("c1", "a", now=2.0)
    with pytest.raises(IllegalTransition, match="end or reject the call"):
        engine.agent_logout("a", now=2.0)
    with pytest.raises(UnknownAgent):
        engine.agent_login("ghost", now=0.0)
    with pytest.raises(UnknownQueue, match="known queues"):
        engine.enqueue("x", "nope", now=0.0)
    with pytest.raises(DuplicateCall):
        engine.enqueue("c1", "accounts", now=3.0)
    with pytest.raises(BadRequest, match="unknown skills"):
        engine.enqueue("x", "accounts", now=3.0, extra_skills={"klingon": 3})
    with pytest.raises(BadRequest, match="levels are integers"):
        engine.enqueue("x", "accounts", now=3.0, extra_skills={"cards": 12})
    with pytest.raises(BadRequest, match="reason code"):
        engine.agent_pause("a", "", now=3.0)


def test_rona_puts_agent_not_ready_and_call_back_at_its_place(engine):
    add(engine, "a", accounts=6)
    add(engine, "b", accounts=6)
    login(engine, "a")
    engine.enqueue("c1", "accounts", now=0.0)        # offered to a
    engine.enqueue("c2", "accounts", now=1.0)
    engine.enqueue("c3", "accounts", now=2.0)
    acts = engine.offer_failed("c1", "a", "rona", now=5.0)
    assert engine.agent("a").state is AgentState.NOT_READY and engine.agent("a").reason == "rona"
    (rq,) = of_type(acts, CallRequeued)
    assert rq.position == 1
    assert engine.waiting_calls("accounts") == ["c1", "c2", "c3"]
    assert engine.offer_failed("c1", "a", "busy", now=5.5) == []          # late duplicate is ignored
    acts = engine.agent_login("b", now=6.0)
    assert of_type(acts, Offer)[0].call_id == "c1"
    with pytest.raises(OfferNotPending):
        engine.offer_answered("c1", "a", now=6.5)                         # a answers too late


def test_ring_timeout_owned_by_engine_cancels_and_requeues(engine):
    add(engine, "a", accounts=6)
    login(engine, "a")
    engine.enqueue("c1", "accounts", now=0.0)
    assert engine.get_timer() == 15.0
    acts = engine.handle_timer(15.0)
    (cancel,) = of_type(acts, CancelOffer)
    assert (cancel.call_id, cancel.agent_id, cancel.reason) == ("c1", "a", "rona")
    assert of_type(acts, CallRequeued)
    assert engine.agent("a").state is AgentState.NOT_READY
    assert engine.call("c1").state.value == "waiting"
    # answered before the timeout: the ring timer is void
    engine.agent_available("a", now=16.0)
    engine.offer_answered("c1", "a", now=17.0)
    assert not of_type(engine.handle_timer(40.0), CancelOffer)


def test_priority_critical_first_and_aging_lets_normal_callers_through(engine):
    add(engine, "a", general=5, accounts=5)
    engine.enqueue("n1", "general", now=0.0)                                   # priority 0
    engine.enqueue("k1", "general", now=50.0, customer_segment="critical")     # 100
    engine.enqueue("k2", "general", now=60.0, context={"critical": True})      # 100
    assert engine.call("k2").base_priority == 100.0
    # at t=70: n1 = 0 + 70, k1 = 100 + 20, k2 = 100 + 10
    assert engine.waiting_calls("general") == ["k1", "k2", "n1"]
    acts = engine.agent_login("a", now=70.0)
    assert of_type(acts, Offer)[0].call_id == "k1"
    # a normal caller who waited longer than the boost (100 s at 1/s) beats a new critical one
    eng = RoutingEngine(make_config())
    add(eng, "a", general=5)
    eng.enqueue("n1", "general", now=0.0)
    eng.enqueue("k1", "general", now=101.0, customer_segment="critical")
    assert of_type(eng.agent_login("a", now=102.0), Offer)[0].call_id == "n1"


def test_fifo_within_same_priority(engine):
    add(engine, "a", general=5)
    for n in range(5):
        engine.enqueue(f"c{n}", "general", now=float(n // 2))     # some share the same instant
    assert engine.waiting_calls("general") == [f"c{n}" for n in range(5)]
    assert [engine.position(f"c{n}") for n in range(5)] == [1, 2, 3, 4, 5]


def test_routing_steps_relax_levels_then_widen_to_other_queue(engine):
    add(engine, "junior", accounts=2)
    add(engine, "generalist", general=5)
    login(engine, "generalist")
    engine.enqueue("c1", "accounts", now=0.0)                       # needs accounts 5
    engine.agent_login("junior", now=1.0)
    assert engine.agent("junior").state is AgentState.AVAILABLE
    acts = engine.handle_timer(30.0)                                # relax by 3 -> accounts 2
    assert of_type(acts, RoutingStepApplied)[0].step == 1
    assert of_type(acts, Offer)[0].agent_id == "junior"
    engine.offer_failed("c1", "junior", "rona", now=31.0)
    assert of_type(engine.handle_timer(60.0), Offer)[0].agent_id == "generalist"   # add_queues: general


def test_max_wait_overflow_to_queue_keeps_place_fairness(engine):
    add(engine, "g", general=5)
    engine.enqueue("c1", "cards", now=0.0)
    acts = engine.handle_timer(100.0)
    (ov,) = of_type(acts, Overflow)
    assert (ov.kind, ov.target, ov.from_queue) == (OverflowKind.QUEUE, "general", "cards")
    assert engine.call("c1").queue == "general"
    (cq,) = of_type(acts, CallQueued)
    assert cq.queue == "general"
    assert of_type(engine.agent_login("g", now=101.0), Offer)[0].call_id == "c1"
    assert engine.queue_snapshot("cards", now=102.0).overflowed == 1


def test_max_wait_voicemail_hangup_and_callback(engine):
    engine.enqueue("v", "vm", now=0.0)
    engine.enqueue("h", "general", now=0.0)
    engine.enqueue("cb", "cbq", now=0.0)
    acts = engine.handle_timer(50.0)
    kinds = {o.call_id: (o.kind, o.target, o.prompt) for o in of_type(acts, Overflow)}
    assert kinds["v"] == (OverflowKind.VOICEMAIL, "mailbox:1", "vm.wav")
    assert kinds["cb"] == (OverflowKind.CALLBACK, None, "cb.wav")
    assert "v" in {e.call_id for e in of_type(acts, CallLeftQueue)}
    assert engine.position("cb") == 1                  # callback offer: the caller keeps their place
    acts = engine.handle_timer(300.0)
    assert {o.call_id: o.kind for o in of_type(acts, Overflow)}["h"] is OverflowKind.HANGUP


def test_announcements_position_and_comfort(engine):
    add(engine, "a", general=5)
    acts = engine.enqueue("c1", "cbq", now=0.0)
    (q,) = of_type(acts, CallQueued)
    assert q.music_on_hold == "moh.wav"
    assert of_type(acts, Announce)[0].kind is AnnouncementKind.POSITION
    engine.enqueue("c2", "cbq", now=1.0)
    acts = engine.handle_timer(21.0)
    comfort = [a for a in of_type(acts, Announce) if a.kind is AnnouncementKind.COMFORT]
    assert {a.call_id for a in comfort} == {"c1", "c2"} and comfort[0].prompt == "comfort.wav"
    acts = engine.handle_timer(31.0)
    pos = {a.call_id: a.position for a in of_type(acts, Announce) if a.kind is AnnouncementKind.POSITION}
    assert pos == {"c1": 1, "c2": 2}
    assert all(a.ewt_seconds == math.inf for a in of_type(acts, Announce))   # nobody staffed
    engine.agent_login("a", now=32.0)
    engine.offer_answered("c1", "a", now=33.0)
    acts = engine.handle_timer(61.0)
    pos = [a for a in of_type(acts, Announce) if a.kind is AnnouncementKind.POSITION]
    assert [(a.call_id, a.position) for a in pos] == [("c2", 1)]
    assert 0 < pos[0].ewt_seconds < math.inf


def test_abandon_recorded_with_wait_and_abandon_while_ringing(engine):
    add(engine, "a", accounts=6)
    engine.enqueue("c1", "accounts", now=0.0)
    acts = engine.caller_abandoned("c1", now=12.5)
    assert of_type(acts, CallAbandoned)[0].waited_seconds == 12.5
    login(engine, "a", now=20.0)
    engine.enqueue("c2", "accounts", now=20.0)
    acts = engine.caller_abandoned("c2", now=23.0)
    assert of_type(acts, CancelOffer)[0].agent_id == "a"
    assert engine.agent("a").state is AgentState.AVAILABLE
    snap = engine.queue_snapshot("accounts", now=30.0)
    assert (snap.abandoned, snap.avg_abandon_wait, snap.waiting) == (2, 7.75, 0)
    assert engine.caller_abandoned("c2", now=31.0) == []


def test_callback_keeps_place_and_is_placed_when_agent_frees(engine):
    add(engine, "a", general=5)
    engine.enqueue("c1", "general", now=0.0)
    engine.enqueue("c2", "general", now=1.0)
    (cb,) = engine.request_callback("c1", "+390212345678", now=5.0)
    assert isinstance(cb, CallbackScheduled) and cb.position == 1
    assert engine.caller_abandoned("c1", now=6.0) == []      # the caller leaving is expected
    assert engine.reconcile({"c2"}, now=7.0) == []            # no dialog for a waiting callback: kept
    acts = engine.agent_login("a", now=10.0)
    (pc,) = of_type(acts, PlaceCallback)
    assert (pc.call_id, pc.number, pc.agent_id) == ("c1", "+390212345678", "a")
    engine.offer_answered("c1", "a", now=12.0)
    acts = engine.callback_failed("c1", now=30.0)             # customer did not pick up
    assert engine.agent("a").state is AgentState.WRAP_UP
    engine.handle_timer(40.0)                                 # wrap-up over -> takes c2
    assert engine.agent("a").call_id == "c2"
    engine.offer_answered("c2", "a", now=41.0)
    engine.call_ended("c2", now=50.0)
    acts = engine.handle_timer(90.0)                          # retry at 30+60
    assert of_type(acts, PlaceCallback)[0].call_id == "c1"
    acts = engine.callback_failed("c1", now=91.0)             # second failure: max_attempts 2
    assert of_type(acts, CallAbandoned)[0].reason == "callback_no_answer"


def test_transfer_to_queue_carries_context_and_frees_agent(engine):
    add(engine, "a", accounts=6)
    add(engine, "b", cards=6)
    login(engine, "a", "b")
    engine.enqueue("c1", "accounts", now=0.0, context={"customer_id": 42, "verified": True})
    engine.offer_answered("c1", "a", now=1.0)
    acts = engine.transfer("c1", now=10.0, to_queue="cards", context={"notes": "card declined"})
    assert of_type(acts, CallTransferred)[0].to_queue == "cards"
    assert of_type(acts, CallEnded)[0].by == "transfer"
    assert engine.agent("a").state is AgentState.WRAP_UP
    (o,) = of_type(acts, Offer)
    assert o.agent_id == "b"
    assert o.context["customer_id"] == 42 and o.context["notes"] == "card declined"
    assert o.context["transfers"][0]["from_agent"] == "a"


def test_transfer_to_agent_waits_for_that_agent(engine):
    add(engine, "a", accounts=6)
    add(engine, "b", accounts=6)
    add(engine, "c", accounts=6)
    login(engine, "a", "b")
    engine.enqueue("x", "accounts", now=0.0)        # a
    engine.enqueue("y", "accounts", now=0.0)        # b
    engine.offer_answered("x", "a", now=1.0)
    engine.offer_answered("y", "b", now=1.0)
    with pytest.raises(AgentUnavailable):
        engine.transfer("x", now=2.0, to_agent="c")
    acts = engine.transfer("x", now=2.0, to_agent="b")
    assert not of_type(acts, Offer)
    login(engine, "c", now=3.0)
    engine.enqueue("z", "accounts", now=3.0)        # goes to c, not waiting for b
    engine.call_ended("y", now=4.0)
    acts = engine.handle_timer(14.0)                # b's wrap-up over: personal transfer first
    assert of_type(acts, Offer)[0].call_id == "x" and of_type(acts, Offer)[0].agent_id == "b"


def test_reconcile_frees_agents_of_dead_dialogs(engine):
    for i in "abc":
        add(engine, i, accounts=6)
    login(engine, "a", "b", "c")
    engine.enqueue("ring", "accounts", now=0.0)
    engine.enqueue("talk", "accounts", now=0.0)
    engine.enqueue("ok", "accounts", now=0.0)
    engine.offer_answered("talk", "b", now=1.0)
    engine.offer_answered("ok", "c", now=1.0)
    engine.agent("c").state   # sanity
    add(engine, "d", cards=6)
    engine.enqueue("queued", "cards", now=2.0)
    acts = engine.reconcile({"ok"}, now=5.0)
    assert engine.agent("a").state is AgentState.AVAILABLE
    assert engine.agent("b").state is AgentState.WRAP_UP
    assert engine.agent("c").state is AgentState.ON_CALL
    assert {e.call_id for e in of_type(acts, CallAbandoned)} == {"ring", "queued"}
    assert of_type(acts, CancelOffer)[0].call_id == "ring"
    for ag in engine.agents():
        assert ag.state not in (AgentState.ON_CALL, AgentState.RESERVED) or ag.call_id == "ok"


def test_estimated_wait_and_snapshot(engine):
    for i in "ab":
        add(engine, i, general=5)
    login(engine, "a", "b")
    for n in range(2):
        engine.enqueue(f"busy{n}", "general", now=0.0)
        engine.offer_answered(f"busy{n}", "ab"[n], now=0.0)
    for n in range(4):
        engine.enqueue(f"w{n}", "general", now=float(n))
    e1 = engine.estimated_wait(now=5.0, call_id="w0")
    e4 = engine.estimated_wait(now=5.0, call_id="w3")
    assert 0 < e1 < e4
    # AHT 100 + wrap 10, 2 agents: 4th in line waits about 3.5 * 110 / 2
    assert e4 == pytest.approx(3.5 * 110 / 2)
    snap = engine.queue_snapshot("general", now=10.0)
    assert (snap.waiting, snap.longest_wait, snap.staffed, snap.available) == (4, 10.0, 2, 0)
    assert snap.ewt_seconds >= e4


def test_update_agent_skills_reindexes(engine):
    add(engine, "a", cards=3)
    login(engine, "a")
    engine.enqueue("c", "accounts", now=0.0)
    acts = engine.update_agent(AgentProfile("a", "A", Phone(uri="sip:a@pbx"), {"accounts": 7}), now=1.0)
    (o,) = of_type(acts, Offer)
    assert o.phone == "sip:a@pbx"


def test_logout_and_pause_take_agent_out_of_pools(engine):
    add(engine, "a", general=5)
    login(engine, "a")
    engine.agent_pause("a", "break", now=1.0)
    assert not of_type(engine.enqueue("c1", "general", now=2.0), Offer)
    engine.agent_available("a", now=3.0)
    engine.offer_failed("c1", "a", "failed", now=4.0)
    engine.agent_logout("a", now=5.0)
    assert engine.agent("a").state is AgentState.OFFLINE
    assert not of_type(engine.enqueue("c2", "general", now=6.0), Offer)


def test_engine_rebuilds_from_existing_store():
    store = InMemoryRoutingStore()
    eng = RoutingEngine(make_config(), store=store)
    add(eng, "a", accounts=6)
    add(eng, "b", accounts=6)
    login(eng, "a")
    eng.enqueue("c1", "accounts", now=0.0)
    eng.enqueue("c2", "accounts", now=1.0)
    eng2 = RoutingEngine(make_config(), store=store)       # e.g. after a restart
    acts = eng2.agent_login("b", now=2.0)
    assert of_type(acts, Offer)[0].call_id == "c2"
    assert of_type(eng2.handle_timer(15.0), CancelOffer)[0].call_id == "c1"   # ring timer restored
