"""One heap of deadlines for every timer the engine owns (wrap-up, ring, steps, max wait, announcements).

Entries are never removed when they become moot: each carries a version and the engine tells whether it
still applies when it reaches the top, which keeps rescheduling O(log n).
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field
from itertools import count
from typing import Callable


class TimerKind(str, enum.Enum):
    WRAP_UP_END = "wrap_up_end"
    RING_TIMEOUT = "ring_timeout"
    ROUTING_STEP = "routing_step"
    MAX_WAIT = "max_wait"
    ANNOUNCE_POSITION = "announce_position"
    ANNOUNCE_EWT = "announce_ewt"
    COMFORT = "comfort"
    CALLBACK_RETRY = "callback_retry"


@dataclass(order=True, slots=True)
class Timer:
    when: float
    seq: int
    kind: TimerKind = field(compare=False)
    ref: str = field(compare=False)
    version: tuple = field(compare=False)


class TimerQueue:
    def __init__(self, is_live: Callable[[Timer], bool]) -> None:
        self._heap: list[Timer] = []
        self._seq = count()
        self._is_live = is_live

    def schedule(self, when: float, kind: TimerKind, ref: str, version: tuple = ()) -> None:
        heapq.heappush(self._heap, Timer(when, next(self._seq), kind, ref, version))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0].when if heap else None

    def pop_due(self, now: float) -> Timer | None:
        heap = self._heap
        while heap and heap[0].when <= now:
            t = heapq.heappop(heap)
            if self._is_live(t):
                return t
        return None

    def __len__(self) -> int:
        return len(self._heap)
