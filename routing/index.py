"""The indexes that make a routing decision cost O(log n) instead of a scan of every agent or call.

- ``SortedIndex``: ids kept ordered by a key, with O(1) head and O(log n) removal (bisect on a list; the
  memmove of a 10,000-entry list is a few microseconds, cheaper than any tree in Python).
- ``AgentPool``: the AVAILABLE agents eligible for one requirement, ordered by a strategy's key. One pool per
  (requirement, strategy), shared by every call with that need.
- ``SkillIndex``: skill -> {agent: level} for logged-in agents, so a new pool is seeded from the agents of its
  rarest skill rather than from the whole roster.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Hashable, Iterable, Iterator

from routing.model import Agent, Requirement


class SortedIndex:
    __slots__ = ("_items", "_key_of")

    def __init__(self) -> None:
        self._items: list[tuple[tuple, Hashable]] = []
        self._key_of: dict[Hashable, tuple] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __contains__(self, item: Hashable) -> bool:
        return item in self._key_of

    def add(self, item: Hashable, key: tuple) -> None:
        if item in self._key_of:
            self.discard(item)
        self._key_of[item] = key
        insort(self._items, (key, item))

    def discard(self, item: Hashable) -> bool:
        key = self._key_of.pop(item, None)
        if key is None:
            return False
        i = bisect_left(self._items, (key, item))
        del self._items[i]
        return True

    def first(self) -> Hashable | None:
        return self._items[0][1] if self._items else None

    def first_key(self) -> tuple | None:
        return self._items[0][0] if self._items else None

    def rank(self, item: Hashable) -> int:
        """0-based position of ``item``; raises KeyError when absent."""
        key = self._key_of[item]
        return bisect_left(self._items, (key, item))

    def key_of(self, item: Hashable) -> tuple | None:
        return self._key_of.get(item)

    def __iter__(self) -> Iterator[Hashable]:
        return (item for _, item in self._items)


class AgentPool:
    __slots__ = ("requirement", "strategy", "index")

    def __init__(self, requirement: Requirement, strategy) -> None:
        self.requirement = requirement
        self.strategy = strategy
        self.index = SortedIndex()

    def add(self, agent: Agent, now: float) -> None:
        self.index.add(agent.id, self.strategy.agent_key(agent, self.requirement, now))

    def discard(self, agent_id: str) -> None:
        self.index.discard(agent_id)

    def first(self) -> str | None:
        return self.index.first()

    def __len__(self) -> int:
        return len(self.index)


class SkillIndex:
    __slots__ = ("_by_skill", "_all")

    def __init__(self) -> None:
        self._by_skill: dict[str, dict[str, int]] = {}
        self._all: set[str] = set()

    def add(self, agent: Agent) -> None:
        self._all.add(agent.id)
        for skill, level in agent.skills.items():
            self._by_skill.setdefault(skill, {})[agent.id] = level

    def remove(self, agent: Agent) -> None:
        self._all.discard(agent.id)
        for skill in agent.skills:
            self._by_skill.get(skill, {}).pop(agent.id, None)

    def candidates(self, requirement: Requirement) -> Iterable[str]:
        """Agents that may satisfy ``requirement``: per alternative, those holding its rarest skill at level."""
        out: set[str] = set()
        for alt in requirement.alternatives:
            if not alt:
                return set(self._all)
            skill, level = min(alt, key=lambda sl: len(self._by_skill.get(sl[0], ())))
            out.update(a for a, lvl in self._by_skill.get(skill, {}).items() if lvl >= level)
        return out
