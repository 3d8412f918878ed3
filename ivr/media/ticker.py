"""The pacer's clock: a periodic callback at absolute deadlines ``t0 + k * interval`` of the monotonic clock.

Two implementations behind one small protocol. ``TimerfdTicker`` (Linux) arms a periodic timerfd and lets the
event loop watch it like a socket: the kernel wakes the loop within microseconds of each deadline, and the
timer never needs re-arming. ``LoopTicker`` uses the event loop's own timer and works everywhere, but uvloop's
(libuv's) timers count whole milliseconds from a clock rounded down, so they fire up to 1 ms after the
deadline, a different amount each time: at 500 calls that was half of the RTP send lateness and most of its
jitter. ``make_ticker`` picks the timerfd where the system has one.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import os
import time
from collections.abc import Callable
from typing import Protocol

from ivr.media.errors import MediaError


class TickerKind(enum.Enum):
    AUTO = "auto"
    TIMERFD = "timerfd"
    LOOP = "loop"


class Ticker(Protocol):
    def start(self, t0: float, interval: float) -> None:
        """Call back at ``t0 + k * interval`` (monotonic seconds) for every k >= 1 still in the future."""

    def stop(self) -> None:
        """No more callbacks until ``start`` is called again."""

    def close(self) -> None:
        """Stop and release what the ticker holds (a file descriptor)."""


class LoopTicker:
    """The event loop's timer, re-armed at the next absolute deadline after each callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]):
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._interval = 0.0
        self._active = False

    def start(self, t0: float, interval: float) -> None:
        self.stop()
        self._t0, self._interval, self._active = t0, interval, True
        self._arm()

    def _arm(self) -> None:
        now = time.monotonic()
        k = int((now - self._t0) / self._interval + 0.05) + 1
        self._handle = self._loop.call_later(self._t0 + k * self._interval - now, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()
        if self._active and self._handle is None:
            self._arm()

    def stop(self) -> None:
        self._active = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        self.stop()


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


def _timespec(seconds: float) -> _Timespec:
    sec = int(seconds)
    return _Timespec(sec, int(round((seconds - sec) * 1e9)))


class _TimerfdApi:
    """timerfd through ``os`` (Python 3.13+) or libc via ctypes (3.11, 3.12)."""

    def __init__(self) -> None:
        self._libc = None
        if not hasattr(os, "timerfd_create"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                             ctypes.c_void_p]
            self._libc = libc

    def create(self) -> int:
        if self._libc is None:
            return os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
        fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return fd

    def arm(self, fd: int, first: float, interval: float) -> None:
        """Absolute first expiry on CLOCK_MONOTONIC, then every ``interval``; zeros disarm."""
        if self._libc is None:
            os.timerfd_settime(fd, flags=os.TFD_TIMER_ABSTIME if first else 0, initial=first, interval=interval)
            return
        spec = _Itimerspec(_timespec(interval), _timespec(first))
        if self._libc.timerfd_settime(fd, _TFD_TIMER_ABSTIME if first else 0, ctypes.byref(spec), None) < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))


_api: _TimerfdApi | None = None


def _timerfd_api() -> _TimerfdApi:
    global _api
    if _api is None:
        _api = _TimerfdApi()
    return _api


class TimerfdTicker:
    """A periodic timerfd watched by the event loop. A late loop reads several expirations at once and gets
    one callback: the pacer works out from the clock which ticks are due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]):
        self._loop = loop
        self._callback = callback
        self._api = _timerfd_api()
        self._fd = self._api.create()
        self._watching = False

    def start(self, t0: float, interval: float) -> None:
        k = int((time.monotonic() - t0) / interval) + 1
        self._api.arm(self._fd, t0 + k * interval, interval)
        if not self._watching:
            self._loop.add_reader(self._fd, self._fire)
            self._watching = True

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        self._callback()

    def stop(self) -> None:
        if self._fd < 0:
            return
        self._api.arm(self._fd, 0.0, 0.0)
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def close(self) -> None:
        if self._fd < 0:
            return
        self.stop()
        os.close(self._fd)
        self._fd = -1


def make_ticker(loop: asyncio.AbstractEventLoop, callback: Callable[[], None],
                kind: TickerKind | str = TickerKind.AUTO) -> Ticker:
    kind = TickerKind(kind)
    if kind is TickerKind.LOOP:
        return LoopTicker(loop, callback)
    try:
        return TimerfdTicker(loop, callback)
    except (OSError, AttributeError) as e:
        if kind is TickerKind.TIMERFD:
            raise MediaError(f"no timerfd on this system ({e}): set the media pacer clock to 'loop' or 'auto'") from e
        return LoopTicker(loop, callback)
