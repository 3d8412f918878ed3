"""Small routing configs and helpers shared by the routing tests."""

from __future__ import annotations

import textwrap

import pytest

from routing import AgentProfile, Phone, RoutingEngine, load_routing_config_text

BASE_CFG = """
version: 1
defaults:
  wrap_up_seconds: 10
  ring_timeout_seconds: 15
  aging_per_second: 1.0
  segment_boost: {critical: 100, premium: 20}
  critical_flag_boost: 100
  handle_time_seconds: 100
  callback: {retry_seconds: 60, max_attempts: 2}
skills:
  accounts: ""
  cards: ""
  fraud: ""
  general: ""
  language_en: ""
queues:
  accounts:
    skills: {accounts: 5}
    priority: 10
    service_level: {percent: 80, seconds: 20}
    steps:
      - after: 30
        relax_levels: 3
      - after: 60
        add_queues: [general]
  cards:
    skills: {cards: 5}
    priority: 10
    max_wait: {seconds: 100, action: overflow, target: general}
  lost:
    skills: {fraud: 5}
    priority: 100
    strategy: most_skilled
    wrap_up_seconds: 0
  general:
    skills: {general: 1}
    priority: 0
    max_wait: {seconds: 300, action: hangup, prompt: bye.wav}
  vm:
    skills: {general: 1}
    max_wait: {seconds: 50, action: voicemail, target: "mailbox:1", prompt: vm.wav}
  cbq:
    skills: {general: 1}
    max_wait: {seconds: 50, action: callback, prompt: cb.wav}
    announcements:
      position_every: 30
      comfort_every: 20
      comfort_prompt: comfort.wav
      music_on_hold: moh.wav
  rr:
    skills: {general: 1}
    strategy: round_robin
  lo:
    skills: {general: 1}
    strategy: least_occupied
    wrap_up_seconds: 0
"""


def make_config(text: str = BASE_CFG):
    return load_routing_config_text(textwrap.dedent(text), "test_queues.yaml")


def add(engine: RoutingEngine, agent_id: str, **skills: int) -> None:
    engine.add_agent(AgentProfile(agent_id, f"Agent {agent_id}", Phone(extension=agent_id), skills))


def of_type(acts, cls):
    return [a for a in acts if isinstance(a, cls)]


@pytest.fixture
def engine() -> RoutingEngine:
    return RoutingEngine(make_config())
