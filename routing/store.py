"""Where the engine keeps agents and calls, behind a Protocol so a multi-node deployment can use PostgreSQL.

The engine mutates the objects it gets and calls ``save_*`` after each change; the in-memory store shares the
objects so saving is free. Indexes (pools, buckets, timers) are derived state the engine rebuilds on start.
"""

from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

from routing.calls import CallEntry
from routing.model import Agent


@runtime_checkable
class RoutingStateStore(Protocol):
    def get_agent(self, agent_id: str) -> Agent | None: ...
    def save_agent(self, agent: Agent) -> None: ...
    def delete_agent(self, agent_id: str) -> None: ...
    def agents(self) -> Iterable[Agent]: ...
    def get_call(self, call_id: str) -> CallEntry | None: ...
    def save_call(self, call: CallEntry) -> None: ...
    def delete_call(self, call_id: str) -> None: ...
    def calls(self) -> Iterable[CallEntry]: ...


class InMemoryRoutingStore:
    def __init__(self) -> None:
        self._agents: dict[str, Agent] = {}
        self._calls: dict[str, CallEntry] = {}

    def get_agent(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def save_agent(self, agent: Agent) -> None:
        self._agents[agent.id] = agent

    def delete_agent(self, agent_id: str) -> None:
        self._agents.pop(agent_id, None)

    def agents(self) -> Iterable[Agent]:
        return list(self._agents.values())

    def get_call(self, call_id: str) -> CallEntry | None:
        return self._calls.get(call_id)

    def save_call(self, call: CallEntry) -> None:
        self._calls[call.call_id] = call

    def delete_call(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    def calls(self) -> Iterable[CallEntry]:
        return list(self._calls.values())
