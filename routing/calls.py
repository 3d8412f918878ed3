"""A call while routing knows it: from enqueue until it is connected and ended, abandoned or leaves."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from routing.model import Requirement


class CallState(str, enum.Enum):
    WAITING = "waiting"        # in line (a callback waits here too, without a caller on the line)
    OFFERED = "offered"        # an agent's phone is ringing
    CONNECTED = "connected"    # agent talking


@dataclass(slots=True)
class CallEntry:
    call_id: str
    queue: str
    seq: int                               # arrival order: FIFO tie-breaker, kept across RONA and overflow
    arrived_at: float                      # first time the call entered routing (its place in line)
    queue_entered_at: float                # when it entered the current queue (steps, max wait)
    base_priority: float
    score: float                           # base - arrived_at*aging: effective priority minus now*aging
    segment: str | None = None
    critical: bool = False
    explicit_priority: float | None = None
    required_skills: tuple[tuple[str, int], ...] | None = None
    extra_skills: tuple[tuple[str, int], ...] = ()
    context: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    requirement: Requirement | None = None
    state: CallState = CallState.WAITING
    agent_id: str | None = None
    target_agent: str | None = None        # transferred to a named agent: only they may take it
    consult_of: str | None = None          # a warm-transfer consultation: the call whose agent asked for it
    callback_number: str | None = None
    callback_attempts: int = 0
    callback_not_before: float = 0.0
    answered_at: float | None = None
    waited_seconds: float = 0.0
    max_wait_done: bool = False
    epoch: int = 0                         # bumps when the call changes queue: old timers become stale
    offer_epoch: int = 0

    def sort_key(self) -> tuple:
        return (-self.score, self.seq)

    @property
    def is_callback(self) -> bool:
        return self.callback_number is not None


def consult_id(call_id: str) -> str:
    """The id of the consultation entry of ``call_id`` (at most one at a time)."""
    return f"{call_id}~consult"
