"""Property test of transfers in the routing core: random blind transfers, consultations, completions,
cancellations, answers, failures, hang-ups, timers and reconciliation never leave an agent with two calls, a
call with two agents, a reserved agent without a ringing call, or a consultation without its connected call."""

from __future__ import annotations

import textwrap

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from routing import AgentProfile, Phone, RoutingEngine, load_routing_config_text
from routing.calls import CallState
from routing.errors import RoutingError
from routing.events import AgentStateChanged, Offer

CFG = """
version: 1
defaults: {wrap_up_seconds: 4, ring_timeout_seconds: 20, aging_per_second: 1.0}
skills: {a: "", b: ""}
queues:
  qa: {skills: {a: 3}, priority: 0}
  qb: {skills: {b: 3}, priority: 5}
"""


class TransferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = RoutingEngine(load_routing_config_text(textwrap.dedent(CFG), "xfer.yaml"))
        self.now = 0.0
        self.n = 0
        self.agents: list[str] = []
        self.last_state: dict[str, str] = {}

    def apply(self, acts) -> None:
        for ev in acts:
            if isinstance(ev, AgentStateChanged):
                if ev.new == "reserved":
                    assert ev.old == "available", f"{ev.agent_id} reserved from {ev.old}"
                self.last_state[ev.agent_id] = ev.new
            elif isinstance(ev, Offer):
                assert self.engine.agent(ev.agent_id).state.value == "reserved"

    def _try(self, fn) -> None:
        try:
            self.apply(fn())
        except RoutingError:
            pass

    def calls(self, *states):
        return sorted(c.call_id for c in self.engine.store.calls() if not states or c.state in states)

    @initialize(roster=st.lists(st.fixed_dictionaries({"a": st.integers(1, 10), "b": st.integers(3, 10)}),
                                min_size=3, max_size=5))
    def make_agents(self, roster):
        for i, skills in enumerate(roster):
            aid = f"ag{i}"
            self.engine.add_agent(AgentProfile(aid, aid, Phone(extension=aid), skills))
            self.agents.append(aid)
            self.apply(self.engine.agent_login(aid, now=self.now))
        for _ in range(len(roster) - 2):           # start with calls in conversation and two agents free
            self.enqueue("qb")
            (offer,) = [a for a in self.engine.agents() if a.state.value == "reserved"][:1]
            self.apply(self.engine.offer_answered(offer.call_id, offer.id, now=self.now))

    @rule(queue=st.sampled_from(["qa", "qb"]))
    def enqueue(self, queue):
        self.n += 1
        self.apply(self.engine.enqueue(f"c{self.n}", queue, now=self.now))

    @rule(data=st.data(), answer=st.sampled_from([True, True, True, False]))
    def resolve_offer(self, data, answer):
        offered = self.calls(CallState.OFFERED)
        if not offered:
            return
        cid = data.draw(st.sampled_from(offered))
        agent = self.engine.call(cid).agent_id
        if answer:
            self.apply(self.engine.offer_answered(cid, agent, now=self.now))
        else:
            self.apply(self.engine.offer_failed(cid, agent, "busy", now=self.now))

    def _connected_customer_calls(self):
        return [c for c in self.calls(CallState.CONNECTED) if "~" not in c]

    @rule(data=st.data(), by=st.sampled_from(["caller", "agent"]))
    def hang_up(self, data, by):
        live = self._connected_customer_calls()
        if live:
            self.apply(self.engine.call_ended(data.draw(st.sampled_from(live)), now=self.now, by=by))

    @rule(data=st.data(), to_queue=st.sampled_from(["qa", "qb", None]))
    def blind(self, data, to_queue):
        live = self._connected_customer_calls() + self.calls(CallState.WAITING)
        live = [c for c in live if "~" not in c]
        if not live:
            return
        cid = data.draw(st.sampled_from(live))
        if to_queue:
            self._try(lambda: self.engine.transfer(cid, now=self.now, to_queue=to_queue, note="n"))
        else:
            agent = data.draw(st.sampled_from(self.agents))
            self._try(lambda: self.engine.transfer(cid, now=self.now, to_agent=agent))

    @rule(data=st.data(), to_queue=st.sampled_from(["qa", "qb", None]))
    def consult(self, data, to_queue):
        live = self._connected_customer_calls()
        if not live:
            return
        cid = data.draw(st.sampled_from(live))
        if to_queue:
            self._try(lambda: self.engine.consult(cid, now=self.now, to_queue=to_queue))
        else:
            agent = data.draw(st.sampled_from(self.agents))
            self._try(lambda: self.engine.consult(cid, now=self.now, to_agent=agent))

    @rule(data=st.data())
    def consult_a_free_agent(self, data):
        live = self._connected_customer_calls()
        free = [a for a in self.agents if self.engine.agent(a).state.value == "available"]
        if live and free:
            cid = data.draw(st.sampled_from(live))
            self._try(lambda: self.engine.consult(cid, now=self.now, to_agent=data.draw(st.sampled_from(free))))

    @rule(data=st.data())
    def talk_with_a_free_agent(self, data):
        """A connected call and nobody waiting: the usual moment for a consultation."""
        if self.calls(CallState.WAITING):
            return
        self.consult_a_free_agent(data)

    @rule(data=st.data(), answer=st.sampled_from([True, True, False]))
    def resolve_consult(self, data, answer):
        ringing = [c for c in self.calls(CallState.OFFERED) if "~" in c]
        if ringing:
            cid = data.draw(st.sampled_from(ringing))
            agent = self.engine.call(cid).agent_id
            if answer:
                self.apply(self.engine.offer_answered(cid, agent, now=self.now))
            else:
                self.apply(self.engine.offer_failed(cid, agent, "rona", now=self.now))

    @rule(data=st.data(), complete=st.booleans())
    def end_consult(self, data, complete):
        live = self._connected_customer_calls()
        if not live:
            return
        cid = data.draw(st.sampled_from(live))
        if complete:
            self._try(lambda: self.engine.consult_complete(cid, now=self.now))
        else:
            self._try(lambda: self.engine.consult_cancel(cid, now=self.now))

    @rule(data=st.data())
    def state_change(self, data):
        aid = data.draw(st.sampled_from(self.agents))
        action = data.draw(st.sampled_from(["available", "pause", "logout", "login"]))
        if action == "available":
            self._try(lambda: self.engine.agent_available(aid, now=self.now))
        elif action == "pause":
            self._try(lambda: self.engine.agent_pause(aid, "break", now=self.now))
        elif action == "logout":
            self._try(lambda: self.engine.agent_logout(aid, now=self.now))
        else:
            self._try(lambda: self.engine.agent_login(aid, now=self.now))

    @rule(halves=st.integers(1, 12))
    def advance(self, halves):
        self.now += halves / 2
        self.apply(self.engine.handle_timer(self.now))

    @rule(data=st.data())
    def reconcile(self, data):
        customers = [c for c in self.calls() if "~" not in c]
        dead = set(data.draw(st.lists(st.sampled_from(customers), unique=True, max_size=2))) if customers else set()
        self.apply(self.engine.reconcile(set(customers) - dead, now=self.now))

    @invariant()
    def one_call_per_agent_and_one_agent_per_call(self):
        holders: dict[str, str] = {}
        for aid in self.agents:
            a = self.engine.agent(aid)
            assert a.state.value == self.last_state.get(aid, a.state.value)
            if a.state.value in ("reserved", "on_call"):
                assert a.call_id not in holders, f"{a.call_id} held by {holders.get(a.call_id)} and {aid}"
                holders[a.call_id] = aid
                call = self.engine.store.get_call(a.call_id)
                assert call is not None and call.agent_id == aid, (aid, a.call_id)
                want = CallState.OFFERED if a.state.value == "reserved" else CallState.CONNECTED
                assert call.state is want, (aid, a.state.value, call.state)
        for c in self.engine.store.calls():
            if c.state in (CallState.OFFERED, CallState.CONNECTED):
                assert holders.get(c.call_id) == c.agent_id, (c.call_id, c.state, c.agent_id)

    @invariant()
    def a_consultation_belongs_to_a_connected_call(self):
        for c in self.engine.store.calls():
            if c.consult_of is None:
                continue
            parent = self.engine.store.get_call(c.consult_of)
            assert parent is not None and parent.state is CallState.CONNECTED, c.call_id
            assert c.state is not CallState.WAITING            # rings or talks, never waits in line
            assert c.agent_id != parent.agent_id


TransferMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
TestTransferMachine = TransferMachine.TestCase
