"""Digit collection for IVR menus and PINs (sans-IO: digits and the current time in, a result out)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CollectReason(enum.Enum):
    MAX = "max"
    TERMINATOR = "terminator"
    TIMEOUT = "timeout"
    CLOSED = "closed"
    """The session closed (hang-up) while collecting."""


@dataclass(frozen=True, slots=True)
class CollectResult:
    digits: str
    reason: CollectReason


class DigitCollector:
    """``first_timeout`` runs until the first digit, ``inter_digit_timeout`` after each digit. Any character of
    ``terminator`` ends the input and is not part of ``digits``; ``None`` or "" disables termination."""

    def __init__(self, max_digits: int, first_timeout: float, inter_digit_timeout: float,
                 terminator: str | None = "#", now: float = 0.0):
        if max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        self.max_digits = max_digits
        self.first_timeout = first_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.terminator = terminator or ""
        self.digits = ""
        self.result: CollectResult | None = None
        self._deadline = now + first_timeout

    def on_digit(self, digit: str, now: float) -> CollectResult | None:
        if self.result is not None:
            return self.result
        if self._deadline <= now:
            return self.handle_timer(now)
        if digit in self.terminator:
            self.result = CollectResult(self.digits, CollectReason.TERMINATOR)
            return self.result
        self.digits += digit
        if len(self.digits) >= self.max_digits:
            self.result = CollectResult(self.digits, CollectReason.MAX)
            return self.result
        self._deadline = now + self.inter_digit_timeout
        return None

    def get_timer(self) -> float | None:
        return None if self.result is not None else self._deadline

    def handle_timer(self, now: float) -> CollectResult | None:
        if self.result is None and now >= self._deadline:
            self.result = CollectResult(self.digits, CollectReason.TIMEOUT)
        return self.result
