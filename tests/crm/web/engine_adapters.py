"""AgentControl and WallboardSource over a real routing engine (sans-IO, wall-clock ``now``), for the web tests
and the browser test: the desktop drives the same state machine the server's QueueService drives."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from routing.config import load_routing_config
from routing.engine import RoutingEngine
from routing.events import Offer, RoutingEvent
from routing.model import AgentState

QUEUES = Path(__file__).resolve().parents[3] / "config" / "queues.yaml"


class EngineControl:
    def __init__(self, engine: RoutingEngine, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.engine = engine
        self.clock = clock
        self.actions: list[RoutingEvent] = []

    def _run(self, acts: list[RoutingEvent]) -> None:
        self.actions.extend(acts)

    def offers(self) -> list[Offer]:
        return [a for a in self.actions if isinstance(a, Offer)]

    async def login(self, agent_id: str) -> dict[str, Any]:
        self._run(self.engine.agent_login(agent_id, now=self.clock(), available=False))
        return self.state(agent_id)

    async def set_available(self, agent_id: str) -> dict[str, Any]:
        if self.engine.agent(agent_id).state is AgentState.OFFLINE:
            self._run(self.engine.agent_login(agent_id, now=self.clock(), available=True))
        else:
            self._run(self.engine.agent_available(agent_id, now=self.clock()))
        return self.state(agent_id)

    async def pause(self, agent_id: str, reason: str) -> dict[str, Any]:
        self._run(self.engine.agent_pause(agent_id, reason, now=self.clock()))
        return self.state(agent_id)

    async def logout(self, agent_id: str) -> dict[str, Any]:
        self._run(self.engine.agent_logout(agent_id, now=self.clock()))
        return self.state(agent_id)

    async def wrap_up_done(self, agent_id: str, disposition: str | None = None, notes: str | None = None,
                           call_id: str | None = None) -> dict[str, Any]:
        if self.engine.agent(agent_id).state is AgentState.WRAP_UP:
            self._run(self.engine.agent_available(agent_id, now=self.clock()))
        return self.state(agent_id)

    def state(self, agent_id: str) -> dict[str, Any]:
        a = self.engine.agent(agent_id)
        return {"agent_id": a.id, "name": a.profile.name, "state": a.state.value, "reason": a.reason,
                "call_id": a.call_id, "since": a.state_since, "calls_handled": a.calls_handled}


class EngineWallboardSource:
    def __init__(self, engine: RoutingEngine, clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.engine = engine
        self.clock = clock

    def queues(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for q in self.engine.config.queues:
            snap = asdict(self.engine.queue_snapshot(q, now=now))
            if snap["ewt_seconds"] == float("inf"):
                snap["ewt_seconds"] = None
            out.append(snap)
        return out

    def agents(self) -> list[dict[str, Any]]:
        return [EngineControl(self.engine).state(a.id) for a in self.engine.agents()]

    def snapshot(self) -> dict[str, Any]:
        return {"at": self.clock(), "queues": self.queues(), "agents": self.agents()}


def demo_engine() -> RoutingEngine:
    return RoutingEngine(load_routing_config(QUEUES))
