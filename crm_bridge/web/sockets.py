"""The open websockets of the process, by agent and for the wallboard, so pushes reach only their owner and
shutdown can close every one of them (aiohttp does not close websockets by itself on cleanup)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from aiohttp import WSCloseCode, web

from .. import metrics

log = logging.getLogger(__name__)

SEND_TIMEOUT = 2.0


class SocketRegistry:
    def __init__(self) -> None:
        self._agents: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.wallboards: set[web.WebSocketResponse] = set()

    def add_agent(self, agent_id: str, ws: web.WebSocketResponse) -> None:
        self._agents[agent_id].add(ws)
        metrics.DESKTOP_SOCKETS.labels(kind="agent").inc()

    def remove_agent(self, agent_id: str, ws: web.WebSocketResponse) -> None:
        group = self._agents.get(agent_id)
        if group is not None and ws in group:
            group.discard(ws)
            metrics.DESKTOP_SOCKETS.labels(kind="agent").dec()
            if not group:
                del self._agents[agent_id]

    def agent_sockets(self, agent_id: str) -> list[web.WebSocketResponse]:
        return list(self._agents.get(agent_id, ()))

    def connected_agents(self) -> list[str]:
        return list(self._agents)

    def add_wallboard(self, ws: web.WebSocketResponse) -> None:
        self.wallboards.add(ws)
        metrics.DESKTOP_SOCKETS.labels(kind="wallboard").inc()

    def remove_wallboard(self, ws: web.WebSocketResponse) -> None:
        if ws in self.wallboards:
            self.wallboards.discard(ws)
            metrics.DESKTOP_SOCKETS.labels(kind="wallboard").dec()

    async def send_agent(self, agent_id: str, text: str) -> int:
        """Send to every socket of ``agent_id``; returns how many got it. A socket that fails or stalls is
        closed (its page reconnects and gets the current pop again)."""
        return await _send_all(self.agent_sockets(agent_id), text)

    async def send_wallboards(self, text: str) -> int:
        return await _send_all(list(self.wallboards), text)

    async def close_all(self) -> None:
        everything = [ws for group in self._agents.values() for ws in group] + list(self.wallboards)
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                               for ws in everything), return_exceptions=True)


async def _send_one(ws: web.WebSocketResponse, text: str) -> bool:
    if ws.closed:
        return False
    try:
        await asyncio.wait_for(ws.send_str(text), SEND_TIMEOUT)
        return True
    except (ConnectionError, RuntimeError, asyncio.TimeoutError) as exc:
        log.info("desktop socket dropped while sending (%s)", type(exc).__name__)
        asyncio.ensure_future(ws.close())
        return False


async def _send_all(sockets: list[web.WebSocketResponse], text: str) -> int:
    if not sockets:
        return 0
    if len(sockets) == 1:
        return int(await _send_one(sockets[0], text))
    results = await asyncio.gather(*(_send_one(ws, text) for ws in sockets))
    return sum(results)
