from pathlib import Path

import pytest

from ivr.errors import ConfigError
from routing import RoutingEngine, load_routing_config, load_routing_config_text
from routing.config import MaxWaitAction

REPO = Path(__file__).resolve().parents[2]

MINI = """\
version: 1
skills:
  cards: ""
queues:
  cards:
    skills: {cards: 5}
"""


def problems(text: str):
    with pytest.raises(ConfigError) as exc:
        load_routing_config_text(text, "q.yaml")
    return exc.value.problems


def test_demo_bank_config_loads_and_builds_an_engine():
    cfg = load_routing_config(REPO / "config" / "queues.yaml")
    for q in ("retail_accounts", "cards", "cards_lost_stolen", "online_banking", "trading", "general",
              "business_accounts", "business_cards"):
        assert q in cfg.queues
    assert cfg.queues["cards_lost_stolen"].hours == "24/7"
    assert cfg.queues["cards"].max_wait.action is MaxWaitAction.OVERFLOW
    assert {a.phone.extension for a in cfg.agents if a.phone.extension} >= {f"{n}" for n in range(2001, 2008)}
    eng = RoutingEngine(cfg)
    assert len(list(eng.agents())) == 8


def test_unknown_key_points_at_the_key():
    text = MINI + "    colour: blue\n"
    (p,) = problems(text)
    assert (p.file, p.line, p.column) == ("q.yaml", 7, 5)
    assert "unknown key 'colour'" in p.message


def test_unknown_skill_is_reported_where_it_is_used():
    text = MINI.replace("{cards: 5}", "{cards: 5, karts: 3}")
    (p,) = problems(text)
    assert p.line == 6 and "unknown skill 'karts'" in p.message


def test_level_out_of_range_and_bad_overflow_target():
    text = MINI.replace("{cards: 5}", "{cards: 11}") + "    max_wait: {seconds: 10, action: overflow, target: nope}\n"
    ps = problems(text)
    assert any("level must be 1..10" in p.message for p in ps)
    text = MINI + "    max_wait: {seconds: 10, action: overflow, target: nope}\n"
    (p,) = problems(text)
    assert p.line == 7 and "overflow target 'nope'" in p.message


def test_overflow_needs_target_and_steps_must_increase():
    ps = problems(MINI + "    max_wait: {seconds: 10, action: overflow}\n")
    assert "needs 'target" in ps[0].message
    ps = problems(MINI + "    steps:\n      - {after: 20, relax_levels: 1}\n      - {after: 10, relax_levels: 1}\n")
    assert "strictly increasing" in ps[0].message
    ps = problems(MINI + "    steps:\n      - {after: 20}\n")
    assert "relax_levels" in ps[0].message


def test_unknown_strategy_and_duplicate_agent():
    ps = problems(MINI + "    strategy: fastest_hands\n")
    assert ps[0].line == 7 and "unknown strategy 'fastest_hands'" in ps[0].message
    agents = ("agents:\n  - {id: '1', name: A, phone: {extension: '1'}, skills: {cards: 3}}\n"
              "  - {id: '1', name: B, phone: {extension: '2'}, skills: {cards: 3}}\n")
    ps = problems(MINI + agents)
    assert ps[0].line == 9 and "already used" in ps[0].message


def test_phone_needs_exactly_one_of_extension_or_uri():
    agents = "agents:\n  - {id: '1', name: A, phone: {extension: '1', uri: 'sip:a@b'}, skills: {cards: 3}}\n"
    ps = problems(MINI + agents)
    assert "exactly one" in ps[0].message
    agents = "agents:\n  - {id: '1', name: A, phone: {uri: 'tel:123'}, skills: {cards: 3}}\n"
    assert "sip:" in problems(MINI + agents)[0].message


def test_yaml_syntax_error_has_position():
    ps = problems("skills: [unclosed\n")
    assert ps[0].line >= 1 and "YAML syntax error" in ps[0].message
