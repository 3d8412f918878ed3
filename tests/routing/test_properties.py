"""Property tests of the routing core against an independent model built from the emitted event stream.

The oracle does not reuse the engine's requirement or priority code: it recomputes who may take a call from the
YAML numbers (min levels, relax per applied step) and effective priority from base + waited * aging.
"""

from __future__ import annotations

import textwrap

from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from routing import AgentProfile, Phone, RoutingEngine, load_routing_config_text
from routing.events import (AgentStateChanged, CallAbandoned, CallAnswered, CallEnded, CallQueued, CallRequeued,
                            Offer, PlaceCallback, RoutingStepApplied)

AGING = 1.0
BOOST = 50.0
CFG = f"""
version: 1
defaults:
  wrap_up_seconds: 5
  ring_timeout_seconds: 10
  aging_per_second: {AGING}
  segment_boost: {{critical: {BOOST}}}
  critical_flag_boost: {BOOST}
skills: {{a: "", b: ""}}
queues:
  qa:
    skills: {{a: 6}}
    priority: 0
    steps: [{{after: 20, relax_levels: 3}}]
  qb:
    skills: {{b: 4}}
    priority: 0
    strategy: most_skilled
  qab:
    skills: {{a: 3, b: 3}}
    priority: 10
    strategy: round_robin
"""
QUEUES = {"qa": ({"a": 6}, [(20.0, 3)], 0.0), "qb": ({"b": 4}, [], 0.0), "qab": ({"a": 3, "b": 3}, [], 10.0)}


def oracle_eligible(queue: str, step: int, skills: dict[str, int]) -> bool:
    base, steps, _ = QUEUES[queue]
    relax = sum(r for _, r in steps[:step])
    return all(skills.get(s, 0) >= max(1, lvl - relax) for s, lvl in base.items())


class RoutingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = RoutingEngine(load_routing_config_text(textwrap.dedent(CFG), "prop.yaml"))
        self.now = 0.0
        self.skills: dict[str, dict[str, int]] = {}
        self.state: dict[str, str] = {}
        self.agent_call: dict[str, str | None] = {}
        self.waiting: dict[str, dict] = {}
        self.offered: dict[str, tuple[str, dict]] = {}
        self.connected: dict[str, str] = {}
        self.n_calls = 0
        self.max_overtake = 0.0

    # ---- oracle fed by the event stream -------------------------------------------------------------------
    def apply(self, acts) -> None:
        for ev in acts:
            if isinstance(ev, AgentStateChanged):
                assert ev.old == self.state[ev.agent_id], (ev, self.state[ev.agent_id])
                if ev.new == "reserved":
                    assert ev.old == "available", "only an available agent may be reserved"
                    assert self.agent_call.get(ev.agent_id) is None
                    self.agent_call[ev.agent_id] = ev.call_id
                elif ev.new in ("available", "not_ready", "paused", "offline"):
                    self.agent_call[ev.agent_id] = None
                self.state[ev.agent_id] = ev.new
            elif isinstance(ev, CallQueued):
                self.n_calls += 1
                self.waiting[ev.call_id] = {"queue": ev.queue, "base": ev.priority, "arrived": ev.at,
                                            "entered": ev.at, "seq": self.n_calls, "step": 0,
                                            "seq_engine": self.engine.call(ev.call_id).seq}
                assert ev.priority == QUEUES[ev.queue][2] + (BOOST if self._critical.get(ev.call_id) else 0)
            elif isinstance(ev, (Offer, PlaceCallback)):
                self._check_offer(ev)
            elif isinstance(ev, CallRequeued):
                agent, info = self.offered.pop(ev.call_id)
                assert agent == ev.agent_id
                self.waiting[ev.call_id] = info
            elif isinstance(ev, RoutingStepApplied):
                info = self.waiting.get(ev.call_id) or self.offered[ev.call_id][1]
                _, steps, _ = QUEUES[ev.queue]
                assert ev.at >= info["entered"] + steps[ev.step - 1][0], "step applied early"
                info["step"] = ev.step
            elif isinstance(ev, CallAnswered):
                agent, _ = self.offered.pop(ev.call_id)
                self.connected[ev.call_id] = agent
            elif isinstance(ev, CallEnded):
                self.connected.pop(ev.call_id, None)
            elif isinstance(ev, CallAbandoned):
                self.waiting.pop(ev.call_id, None)
                self.offered.pop(ev.call_id, None)

    def _eff(self, info: dict, at: float) -> float:
        return info["base"] + (at - info["arrived"]) * AGING

    def _check_offer(self, ev) -> None:
        info = self.waiting.pop(ev.call_id)
        skills = self.skills[ev.agent_id]
        assert self.state[ev.agent_id] == "reserved" and self.agent_call[ev.agent_id] == ev.call_id
        assert ev.call_id not in self.offered and ev.call_id not in self.connected
        assert oracle_eligible(info["queue"], info["step"], skills), "agent lacks the required skill/level"
        assert sum(1 for c, (a, _) in self.offered.items() if a == ev.agent_id) == 0, "agent offered two calls"
        mine = (self._eff(info, ev.at), -info["seq"])
        for other_id, other in self.waiting.items():
            if oracle_eligible(other["queue"], other["step"], skills):
                theirs = (self._eff(other, ev.at), -other["seq"])
                assert theirs <= mine, f"{other_id} {theirs} should go before {ev.call_id} {mine}"
                if other["arrived"] < info["arrived"]:
                    # overtaking is bounded by the priority gap / aging rate: aging bounds every wait
                    gap = info["base"] - other["base"]
                    assert info["arrived"] - other["arrived"] <= gap / AGING + 1e-9
        self.offered[ev.call_id] = (ev.agent_id, info)

    # ---- rules ---------------------------------------------------------------------------------------------
    @initialize(roster=st.lists(st.dictionaries(st.sampled_from("ab"), st.integers(1, 10), max_size=2),
                                min_size=1, max_size=6))
    def make_agents(self, roster):
        for i, skills in enumerate(roster):
            aid = f"ag{i}"
            self.engine.add_agent(AgentProfile(aid, aid, Phone(extension=aid), skills))
            self.skills[aid] = skills
            self.state[aid] = "offline"
        self._critical: dict[str, bool] = {}

    def _agents(self, *states):
        return sorted(a for a, s in self.state.items() if s in states)

    @rule(data=st.data(), available=st.booleans())
    def login(self, data, available):
        pool = self._agents("offline")
        if pool:
            self.apply(self.engine.agent_login(data.draw(st.sampled_from(pool)), now=self.now, available=available))

    @rule(data=st.data())
    def ready(self, data):
        pool = self._agents("paused", "not_ready", "wrap_up")
        if pool:
            self.apply(self.engine.agent_available(data.draw(st.sampled_from(pool)), now=self.now))

    @rule(data=st.data())
    def pause(self, data):
        pool = self._agents("available", "wrap_up", "not_ready", "on_call")
        if pool:
            self.apply(self.engine.agent_pause(data.draw(st.sampled_from(pool)), "break", now=self.now))

    @rule(data=st.data())
    def logout(self, data):
        pool = self._agents("available", "paused", "not_ready", "wrap_up")
        if pool:
            self.apply(self.engine.agent_logout(data.draw(st.sampled_from(pool)), now=self.now))

    @rule(queue=st.sampled_from(sorted(QUEUES)), critical=st.booleans())
    def enqueue(self, queue, critical):
        cid = f"c{self.n_calls + 1}"
        self._critical[cid] = critical
        self.apply(self.engine.enqueue(cid, queue, now=self.now, customer_segment="critical" if critical else None))

    @precondition(lambda self: self.offered)
    @rule(data=st.data(), answer=st.booleans(), reason=st.sampled_from(["rona", "busy", "failed"]))
    def resolve_offer(self, data, answer, reason):
        cid = data.draw(st.sampled_from(sorted(self.offered)))
        agent, info = self.offered[cid]
        if answer:
            self.apply(self.engine.offer_answered(cid, agent, now=self.now))
        else:
            self.apply(self.engine.offer_failed(cid, agent, reason, now=self.now))
            assert self.engine.call(cid).seq == info["seq_engine"]       # back at its original place

    @precondition(lambda self: self.connected)
    @rule(data=st.data())
    def hang_up(self, data):
        self.apply(self.engine.call_ended(data.draw(st.sampled_from(sorted(self.connected))), now=self.now))

    @precondition(lambda self: self.waiting or self.offered)
    @rule(data=st.data())
    def abandon(self, data):
        self.apply(self.engine.caller_abandoned(
            data.draw(st.sampled_from(sorted(self.waiting) + sorted(self.offered))), now=self.now))

    @rule(halves=st.integers(1, 40))
    def advance(self, halves):
        self.now += halves / 2
        self.apply(self.engine.handle_timer(self.now))

    @rule(data=st.data())
    def reconcile(self, data):
        live = sorted(self.waiting) + sorted(self.offered) + sorted(self.connected)
        dead = set(data.draw(st.lists(st.sampled_from(live), unique=True, max_size=3))) if live else set()
        self.apply(self.engine.reconcile(set(live) - dead, now=self.now))
        for aid in self.state:
            a = self.engine.agent(aid)
            assert not (a.state.value in ("on_call", "reserved") and a.call_id in dead)

    # ---- invariants ----------------------------------------------------------------------------------------
    @invariant()
    def engine_matches_oracle(self):
        holders: dict[str, str] = {}
        for aid, st_ in self.state.items():
            a = self.engine.agent(aid)
            assert a.state.value == st_
            if st_ in ("reserved", "on_call"):
                assert a.call_id is not None and a.call_id not in holders, "one call per agent, one agent per call"
                holders[a.call_id] = aid
        assert set(holders) == set(self.offered) | set(self.connected)

    @invariant()
    def no_idle_agent_for_a_waiting_call(self):
        for aid in self._agents("available"):
            for cid, info in self.waiting.items():
                assert not oracle_eligible(info["queue"], info["step"], self.skills[aid]), \
                    f"agent {aid} idle while {cid} waits"

    @invariant()
    def line_order_is_priority_then_fifo(self):
        for q in QUEUES:
            order = self.engine.waiting_calls(q)
            assert set(order) == {c for c, i in self.waiting.items() if i["queue"] == q}
            keys = [(-self._eff(self.waiting[c], self.now), self.waiting[c]["seq"]) for c in order]
            assert keys == sorted(keys)     # times move in half seconds: floats are exact, ties are FIFO


RoutingMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])
TestRoutingMachine = RoutingMachine.TestCase


@settings(max_examples=40, deadline=None)
@given(critical_gaps=st.lists(st.integers(1, 30), min_size=1, max_size=40),
       normal_at=st.integers(0, 200), service=st.integers(5, 40))
def test_aging_bounds_the_wait_of_a_normal_caller(critical_gaps, normal_at, service):
    """One agent, a stream of critical callers: the normal caller is served within a bound that only depends
    on the priority gap, the calls already ahead and the arrivals inside the gap window."""
    cfg = load_routing_config_text(textwrap.dedent(CFG), "prop.yaml")
    eng = RoutingEngine(cfg)
    eng.add_agent(AgentProfile("x", "x", Phone(extension="x"), {"a": 9, "b": 9}))
    arrivals = []
    t = 0.0
    for i, gap in enumerate(critical_gaps):
        t += gap
        arrivals.append((t, f"k{i}", "critical"))
    arrivals.append((float(normal_at) + 0.25, "normal", None))
    arrivals.sort()
    wrap = cfg.defaults.wrap_up_seconds
    eng.agent_login("x", now=0.0)
    pending = list(arrivals)
    now = 0.0
    served_at = None
    ahead = None
    current = None
    end_at = None
    while served_at is None:
        nxt = [p[0] for p in pending[:1]] + ([end_at] if end_at is not None else [])
        timer = eng.get_timer()
        if timer is not None:
            nxt.append(timer)
        assert nxt, "nothing left to happen but the normal caller was never served"
        now = min(nxt)
        acts = []
        while pending and pending[0][0] <= now:
            at, cid, seg = pending.pop(0)
            if cid == "normal":
                ahead = len(eng.waiting_calls("qa")) + (1 if current else 0)
            acts += eng.enqueue(cid, "qa", now=at, customer_segment=seg)
        if end_at is not None and end_at <= now:
            acts += eng.call_ended(current, now=now)
            current, end_at = None, None
        acts += eng.handle_timer(now)
        for a in acts:
            if isinstance(a, Offer):
                eng.offer_answered(a.call_id, a.agent_id, now=now)
                current, end_at = a.call_id, now + service
                if a.call_id == "normal":
                    served_at = now
    window_arrivals = sum(1 for at, cid, _ in arrivals if cid != "normal"
                          and normal_at + 0.25 < at <= normal_at + 0.25 + BOOST / AGING)
    bound = (ahead + window_arrivals + 1) * (service + wrap)
    assert served_at - (normal_at + 0.25) <= bound
