"""Estimated wait time and per-queue statistics.

Erlang C gives the expected wait of a queue from its arrival rate, handle time and staffed agents; it is
optimistic when a backlog already exists, so a caller's own estimate also uses their position and the measured
handle time, and the queue estimate is blended with the measured average wait of recently answered calls.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


def erlang_c(agents: int, traffic: float) -> float:
    """Probability that an arriving call has to wait (Erlang C) for ``agents`` servers and ``traffic`` Erlangs.

    Computed with the Erlang B recursion, which is stable for thousands of agents (no factorials).
    """
    if agents <= 0:
        return 1.0
    if traffic <= 0:
        return 0.0
    if traffic >= agents:
        return 1.0
    b = 1.0
    for k in range(1, agents + 1):
        b = traffic * b / (k + traffic * b)
    rho = traffic / agents
    return b / (1.0 - rho * (1.0 - b))


def erlang_c_asa(agents: int, arrivals_per_second: float, handle_seconds: float) -> float:
    """Average speed of answer (mean wait, seconds); ``math.inf`` when the queue is overloaded."""
    traffic = arrivals_per_second * handle_seconds
    if agents <= 0 or traffic >= agents:
        return math.inf
    if traffic <= 0:
        return 0.0
    return erlang_c(agents, traffic) * handle_seconds / (agents - traffic)


def service_level(agents: int, arrivals_per_second: float, handle_seconds: float, target_seconds: float) -> float:
    """Share of calls answered within ``target_seconds`` predicted by Erlang C (for staffing what-ifs)."""
    traffic = arrivals_per_second * handle_seconds
    if agents <= 0 or traffic >= agents:
        return 0.0
    pw = erlang_c(agents, traffic)
    return 1.0 - pw * math.exp(-(agents - traffic) * target_seconds / handle_seconds)


@dataclass(slots=True)
class QueueStats:
    """Counters for the wallboard and KPIs; ``recent_*`` windows feed the EWT."""

    queue: str
    sl_seconds: float
    offered: int = 0
    answered: int = 0
    answered_within_sl: int = 0
    abandoned: int = 0
    abandoned_wait_total: float = 0.0
    overflowed: int = 0
    callbacks_requested: int = 0
    rona: int = 0
    recent_handle: deque = field(default_factory=lambda: deque(maxlen=50))
    recent_wait: deque = field(default_factory=lambda: deque(maxlen=50))
    recent_arrivals: deque = field(default_factory=lambda: deque(maxlen=200))

    def service_level(self) -> float | None:
        """Answered within target / (answered + abandoned); None before any call finished waiting."""
        done = self.answered + self.abandoned
        return None if done == 0 else self.answered_within_sl / done

    def avg_handle(self, default: float) -> float:
        return sum(self.recent_handle) / len(self.recent_handle) if self.recent_handle else default

    def avg_wait(self) -> float | None:
        return sum(self.recent_wait) / len(self.recent_wait) if self.recent_wait else None

    def arrival_rate(self, now: float, window: float = 900.0) -> float:
        """Calls per second over the recent window (at most ``window`` seconds back)."""
        arr = self.recent_arrivals
        if len(arr) < 2:
            return 0.0
        start = max(arr[0], now - window)
        n = sum(1 for t in arr if t >= start)
        span = max(now - start, 1.0)
        return n / span


def position_ewt(position: int, staffed: int, available: int, handle_seconds: float) -> float:
    """Wait of the caller at ``position`` (1-based): the calls ahead drain at ``staffed`` agents per AHT."""
    if available >= position:
        return 0.0
    if staffed <= 0:
        return math.inf
    # Agents free up on average every AHT/staffed seconds; the caller needs ``position`` of those events,
    # and the first one comes after about half a handle time.
    return (position - 0.5) * handle_seconds / staffed
