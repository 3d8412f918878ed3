"""A circuit breaker as a sans-IO state machine: the caller passes the time, so tests drive it exactly."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_timeout`` seconds lets one probe
    through (half-open); the probe's success closes it, its failure opens it again for another period.

    While open, a dead CRM costs nothing per call: ``allow`` answers False without any I/O.
    """

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    _state: BreakerState = BreakerState.CLOSED
    _failures: int = 0
    _opened_at: float = 0.0
    _probe_in_flight: bool = False

    def state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and now - self._opened_at >= self.reset_timeout:
            self._state = BreakerState.HALF_OPEN
            self._probe_in_flight = False
        return self._state

    def allow(self, now: float) -> bool:
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self, now: float) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_in_flight = False

    def record_failure(self, now: float) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = now
            self._probe_in_flight = False

    def retry_after(self, now: float) -> float:
        """Seconds until a probe will be allowed (0 when calls pass now)."""
        if self.state(now) is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout - now)
        return 0.0
