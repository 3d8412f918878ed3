"""Calling windows: when a campaign may start a call. A window is the IVR's ``Schedule`` (IANA time zone,
weekly hours, holidays), so campaigns and opening hours are written and checked the same way."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ivr.flow.model import Schedule
from ivr.flow.schedule import _weekly_of, is_holiday, is_open

__all__ = ["Schedule", "is_open", "next_open"]

_SEARCH_DAYS = 400


def next_open(s: Schedule, now: float) -> float | None:
    """The first instant at or after ``now`` when ``s`` is open, or None when it never opens again within a
    year (every day a holiday, or no hours at all)."""
    if is_open(s, now):
        return now
    tz = ZoneInfo(s.timezone)
    weekly = _weekly_of(s)
    today = datetime.fromtimestamp(now, tz).date()
    for offset in range(_SEARCH_DAYS):
        day = today + timedelta(days=offset)
        ranges = weekly.get(day.weekday(), ())
        if not ranges:
            continue
        midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
        if is_holiday(s, midnight.timestamp() + 12 * 3600):
            continue
        for start, end in ranges:
            t0 = max(now, (midnight + timedelta(minutes=start)).timestamp())
            t1 = (midnight + timedelta(minutes=end)).timestamp() if end < 24 * 60 else \
                (midnight + timedelta(days=1)).timestamp()
            # A range start that falls in a DST gap resolves to an instant the schedule reads as closed:
            # step forward by minutes until it opens (at most the hour the clocks skipped).
            t = t0
            while t < t1:
                if is_open(s, t):
                    return t
                t = (t // 60 + 1) * 60
                if t - t0 > 2 * 3600:
                    break
    return None
