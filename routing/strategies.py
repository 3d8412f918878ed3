"""Agent-selection strategies, as a registry: adding one is one class with ``@register_strategy("name")``.

A strategy does not search: it gives each available agent a sort key when the agent enters a pool of eligible
agents (lower key = chosen first). The pool keeps agents ordered, so choosing is reading its head, never a scan
of all agents. Keys are frozen at insertion time, which is exactly "idle since", "last offered" etc.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from routing.errors import UnknownStrategy
from routing.model import Agent, Requirement


@runtime_checkable
class RoutingStrategy(Protocol):
    name: str

    def agent_key(self, agent: Agent, requirement: Requirement, now: float) -> tuple:
        """Sort key of an available agent in a pool for ``requirement``; lowest is offered first."""
        ...


class StrategyRegistry:
    def __init__(self) -> None:
        self._classes: dict[str, type] = {}
        self._instances: dict[str, RoutingStrategy] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            cls.name = name
            self._classes[name] = cls
            self._instances.pop(name, None)
            return cls
        return deco

    def get(self, name: str) -> RoutingStrategy:
        inst = self._instances.get(name)
        if inst is None:
            cls = self._classes.get(name)
            if cls is None:
                raise UnknownStrategy(name, list(self._classes))
            inst = self._instances[name] = cls()
        return inst

    def names(self) -> list[str]:
        return sorted(self._classes)

    def copy(self) -> "StrategyRegistry":
        other = StrategyRegistry()
        other._classes = dict(self._classes)
        return other


default_registry = StrategyRegistry()


def register_strategy(name: str, registry: StrategyRegistry | None = None) -> Callable[[type], type]:
    return (registry or default_registry).register(name)


@register_strategy("longest_idle")
class LongestIdle:
    """Fairness default: the agent who has waited longest since their last call."""

    def agent_key(self, agent: Agent, requirement: Requirement, now: float) -> tuple:
        return (agent.idle_since, agent.seq)


@register_strategy("most_skilled")
class MostSkilled:
    """Best first-call resolution: highest total level on the required skills, then longest idle."""

    def agent_key(self, agent: Agent, requirement: Requirement, now: float) -> tuple:
        return (-requirement.best_score(agent.skills), agent.idle_since, agent.seq)


@register_strategy("round_robin")
class RoundRobin:
    """Each agent in turn: the one offered a call least recently (a never-offered agent first)."""

    def agent_key(self, agent: Agent, requirement: Requirement, now: float) -> tuple:
        return (agent.last_offer_seq, agent.seq)


@register_strategy("least_occupied")
class LeastOccupied:
    """Spread the load: lowest share of logged-in time spent ringing, talking or in wrap-up."""

    def agent_key(self, agent: Agent, requirement: Requirement, now: float) -> tuple:
        return (round(agent.occupancy(now), 6), agent.idle_since, agent.seq)
