"""RFC 3261 timer values (section 17 and table 4).

Kept as one frozen value object so tests and deployments on slow links can scale every timer together
(RFC 3261 17.1.1.1 allows a larger T1 when the round-trip time is known to be higher).
"""

from __future__ import annotations

from dataclasses import dataclass

T1 = 0.5
"""Round-trip time estimate (seconds)."""
T2 = 4.0
"""Maximum retransmission interval for non-INVITE requests and INVITE responses."""
T4 = 5.0
"""Maximum time a message can remain in the network."""


@dataclass(frozen=True, slots=True)
class TimerValues:
    t1: float = T1
    t2: float = T2
    t4: float = T4

    @property
    def transaction_timeout(self) -> float:
        """64*T1: timers B, F, H, J (unreliable), L and M, and the 2xx retransmission give-up time."""
        return 64 * self.t1

    @property
    def timer_d(self) -> float:
        """Wait for response retransmissions in the INVITE client transaction (at least 32 s)."""
        return max(32.0, 64 * self.t1)

    def next_interval(self, interval: float, cap: bool = True) -> float:
        """Double a retransmission interval, capped at T2 unless ``cap`` is False (timer A is uncapped)."""
        doubled = interval * 2
        return min(doubled, self.t2) if cap else doubled


DEFAULT_TIMERS = TimerValues()


def retransmission_schedule(timers: TimerValues, until: float, cap: bool = True) -> list[float]:
    """Offsets from the first send at which a message is retransmitted before ``until``.

    Useful for tests and for explaining behaviour: with the defaults a 2xx is resent at
    0.5, 1.5, 3.5, 7.5, 11.5, ... seconds after it was first sent.
    """
    offsets: list[float] = []
    interval = timers.t1
    at = interval
    while at < until:
        offsets.append(at)
        interval = timers.next_interval(interval, cap)
        at += interval
    return offsets
