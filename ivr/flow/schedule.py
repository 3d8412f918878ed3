"""Business hours: is a schedule open at a POSIX time? Pure functions over the validated :class:`Schedule`."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from ivr.flow.model import Schedule, parse_days, parse_range


def easter_sunday(year: int) -> date:
    """Gregorian Easter (anonymous algorithm): Easter Monday is an Italian bank holiday and it moves every year."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    ll = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ll) // 451
    month = (h + ll - 7 * m + 114) // 31
    day = (h + ll - 7 * m + 114) % 31 + 1
    return date(year, month, day)


@lru_cache(maxsize=64)
def _weekly(hours_items: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[int, tuple[tuple[int, int], ...]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for key, ranges in hours_items:
        for d in parse_days(key):
            out.setdefault(d, []).extend(parse_range(r) for r in ranges)
    return {d: tuple(sorted(v)) for d, v in out.items()}


def _weekly_of(s: Schedule) -> dict[int, tuple[tuple[int, int], ...]]:
    items = tuple((k, (v,) if isinstance(v, str) else tuple(v)) for k, v in s.hours.items())
    return _weekly(items)


def local_time(s: Schedule, now: float) -> datetime:
    return datetime.fromtimestamp(now, ZoneInfo(s.timezone))


def is_holiday(s: Schedule, now: float) -> bool:
    day = local_time(s, now).date()
    for h in s.holidays:
        if isinstance(h, date):
            if h == day:
                return True
        elif h == "easter":
            if easter_sunday(day.year) == day:
                return True
        elif h == "easter_monday":
            if easter_sunday(day.year) + timedelta(days=1) == day:
                return True
        elif len(h) == 10:
            if date.fromisoformat(h) == day:
                return True
        elif h == f"{day.month:02d}-{day.day:02d}":
            return True
    return False


def is_open(s: Schedule, now: float) -> bool:
    """Open when today is not a holiday and the local wall-clock minute lies in one of today's ranges."""
    if is_holiday(s, now):
        return False
    t = local_time(s, now)
    minute = t.hour * 60 + t.minute
    return any(a <= minute < b for a, b in _weekly_of(s).get(t.weekday(), ()))
