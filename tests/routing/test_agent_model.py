import pytest

from routing.errors import BadRequest, IllegalTransition
from routing.model import AgentProfile, AgentState, Phone, Requirement, Agent
from routing.events import AgentStateChanged


def agent():
    return Agent(AgentProfile("7", "Seven", Phone(extension="7"), {"cards": 5}), seq=1)


def test_transition_emits_timestamped_event_and_tracks_time():
    a = agent()
    ev = a.transition(AgentState.AVAILABLE, 10.0)
    assert ev == AgentStateChanged(at=10.0, agent_id="7", old="offline", new="available", reason=None, call_id=None)
    a.transition(AgentState.RESERVED, 20.0, call_id="c1")
    a.transition(AgentState.ON_CALL, 25.0, call_id="c1")
    ev = a.transition(AgentState.WRAP_UP, 45.0)
    assert ev.call_id == "c1"
    a.transition(AgentState.AVAILABLE, 50.0)
    assert a.call_id is None
    assert a.occupancy(60.0) == pytest.approx(30.0 / 50.0)


@pytest.mark.parametrize("path", [
    ["reserved"], ["on_call"], ["wrap_up"], ["not_ready"],
    ["available", "on_call"], ["available", "reserved", "offline"], ["available", "reserved", "paused"],
])
def test_illegal_transitions_raise(path):
    a = agent()
    *ok, bad = [AgentState(p) for p in path]
    for st in ok:
        a.transition(st, 1.0, call_id="c")
    with pytest.raises(IllegalTransition) as exc:
        a.transition(bad, 2.0)
    assert "agent '7' cannot go from" in str(exc.value)


def test_phone_and_levels_validation():
    assert Phone(extension="2001").target == "ext:2001"
    assert Phone(uri="sip:x@y").target == "sip:x@y"
    with pytest.raises(BadRequest):
        Phone()
    with pytest.raises(BadRequest):
        Phone(uri="http://x")
    with pytest.raises(BadRequest):
        AgentProfile("1", "x", Phone(extension="1"), {"cards": 0})
    with pytest.raises(BadRequest):
        AgentProfile("1", "x", Phone(extension="1"), {"cards": 11})


def test_requirement_alternatives_and_score():
    r = Requirement.of({"cards": 5, "language_en": 3}, {"general": 2})
    assert r.accepts({"cards": 5, "language_en": 3})
    assert not r.accepts({"cards": 4, "language_en": 9})
    assert r.accepts({"general": 2})
    assert r.best_score({"cards": 7, "language_en": 3, "general": 9}) == 10
    assert Requirement.of({"a": 1}, {"a": 1}) == Requirement.of({"a": 1})
