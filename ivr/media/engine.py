"""The media engine: the RTP port range, the sessions, and the shared pacer that sends their frames.

Pacing design: one shared timer per ``MediaEngine`` rather than one task per call. Every ``tick_ms``
(2 ms) a single callback sends the frames that are due. It runs at the absolute deadlines ``t0 + n * tick`` of
the monotonic clock (a periodic timerfd, see ``ivr.media.ticker``), so lateness never accumulates over a long
call.
With 500 calls, a task per call means 25,000 timer wake-ups and coroutine switches per second; the shared
tick is 500 wake-ups per second, and sessions are spread evenly over the ten phases of a 20 ms frame, so each
tick sends a tenth of them: the last packet of a tick leaves a tenth as late as it would if all calls were
sent at once. Sessions wait in buckets keyed by the tick they are due at, so a tick touches only the sessions
it sends. When the loop is late by more than a frame, a session sends at
most ``max_burst`` frames (peers' jitter buffers absorb a few) and skips the rest: the skipped audio and RTP
timestamps move on with the clock, so the stream stays in real time instead of drifting behind it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from dataclasses import dataclass

import numpy as np

from ivr.media.dtmf import DtmfMode
from ivr.media.errors import MediaError, PortsExhausted
from ivr.media.send_offload import SendOffload, SendOffloadError
from ivr.media.session import MediaSession, _RtpProtocol
from ivr.media.ticker import Ticker, TickerKind, make_ticker

log = logging.getLogger(__name__)


class LatencyHistogram:
    """Counts in 0.1 ms bins up to 1 s. The send path appends raw values to a list and they are binned in
    batches with numpy: one append per packet is the cheapest measurement the hot path can carry."""

    RES = 10_000.0
    BINS = 10_000
    FOLD_AT = 4096

    __slots__ = ("bins", "_count", "_max", "pending")

    def __init__(self) -> None:
        self.bins = np.zeros(self.BINS + 1, np.int64)
        self._count = 0
        self._max = 0.0
        self.pending: list[float] = []

    @property
    def count(self) -> int:
        return self._count + len(self.pending)

    @property
    def max(self) -> float:
        self.fold()
        return self._max

    def add(self, seconds: float) -> None:
        self.pending.append(seconds)
        if len(self.pending) >= self.FOLD_AT:
            self.fold()

    def fold(self) -> None:
        if not self.pending:
            return
        a = np.asarray(self.pending, np.float64)
        self.pending = []
        idx = np.clip((a * self.RES).astype(np.int64), 0, self.BINS)
        self.bins += np.bincount(idx, minlength=self.BINS + 1)
        self._count += len(a)
        self._max = max(self._max, float(a.max()))

    def merge(self, other: LatencyHistogram) -> None:
        other.fold()
        self.merge_bins(other.bins, other._count, other._max)

    def merge_bins(self, bins: np.ndarray, count: int, max_seconds: float) -> None:
        self.fold()
        self.bins += bins
        self._count += count
        self._max = max(self._max, max_seconds)

    def percentile_ms(self, q: float) -> float:
        self.fold()
        if not self._count:
            return 0.0
        cum = np.cumsum(self.bins)
        i = int(np.searchsorted(cum, q / 100 * self._count))
        return min(i, self.BINS) * 1000 / self.RES


@dataclass(frozen=True)
class SendStats:
    """Send timing of all sessions of an engine: lateness of each packet against its planned deadline, the gap
    between consecutive packets of one session (20 ms ideally) and the send jitter."""

    packets: int
    late_p50_ms: float
    late_p99_ms: float
    late_max_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    gap_max_ms: float
    skipped_frames: int
    jitter_p50_ms: float = 0.0
    jitter_p99_ms: float = 0.0
    jitter_max_ms: float = 0.0
    offloaded: bool = False
    """Whether a send worker process is sending (``media.send_worker``)."""
    offload_overflows: int = 0
    """Packets the loop sent itself because the worker's ring was full (since start: not reset)."""
    """Send jitter as RFC 3550 defines D(i-1, i) for a receiver, on the send side: how much the spacing of two
    consecutive packets of a call differs from the spacing of their timestamps (|lateness(i) - lateness(i-1)|).
    Lateness is stricter: it also counts a delay that every packet shares."""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class MediaEngine:
    """Owns the RTP port range and the shared pacer. One per process (or per media address)."""

    OFFLOAD_RESTART_S = 5.0

    def __init__(self, host: str = "0.0.0.0", port_min: int = 10000, port_max: int = 20000, *,
                 tick_ms: int = 2, max_burst: int = 3, send_silence: bool = True,
                 dtmf_mode: DtmfMode = DtmfMode.AUTO, receive_buffer: int = 1 << 18,
                 clock: TickerKind | str = TickerKind.AUTO, send_offload: bool = False,
                 send_priority: str = "realtime", send_needs_realtime: bool = False):
        if port_min < 1 or port_max > 65535 or port_max < port_min + 1:
            raise MediaError(f"invalid RTP port range {port_min}-{port_max}: needs at least two ports in 1-65535")
        self.host = host
        self.port_min = port_min + (port_min & 1)
        self.port_max = port_max
        if self.port_min > self.port_max:
            raise MediaError(f"RTP port range {port_min}-{port_max} holds no even port")
        self.tick = tick_ms / 1000
        self.tick_ms = tick_ms
        self.max_burst = max_burst
        self.send_silence = send_silence
        self.dtmf_mode = dtmf_mode
        self.receive_buffer = receive_buffer
        self._used: set[int] = set()
        self._cursor = self.port_min
        self._sessions: set[MediaSession] = set()
        self._due: dict[int, list[MediaSession]] = {}     # tick -> sessions due then
        self._paced: set[MediaSession] = set()
        self._phase_load: dict[tuple[int, int], int] = {}  # (ticks per frame, phase) -> sessions
        self._last_tick = -1
        self._t0 = 0.0
        self.clock = TickerKind(clock)
        self.send_offload = send_offload
        self.send_priority = send_priority
        self.send_needs_realtime = send_needs_realtime
        self.offload: SendOffload | None = None
        self.offload_on = False
        self.offload_overflows = 0
        self._offload_tried = False
        self._flush_handle: asyncio.Handle | None = None
        self._restart_handle: asyncio.TimerHandle | None = None
        self._offload_restarts = 0
        self._closing = False
        self._tasks: set[asyncio.Task] = set()
        self._slots = 0
        self._ticker: Ticker | None = None
        self._ticking = False
        self.next_deadline = float("inf")
        """When the next tick is due while ticking (infinity otherwise): receive callbacks compare the clock
        with it and run an overdue tick themselves (``tick_if_due``)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.late_hist = LatencyHistogram()
        self.gap_hist = LatencyHistogram()
        self.jitter_hist = LatencyHistogram()
        self.skipped_frames = 0

    # -- ports -----------------------------------------------------------------------------------------------
    @property
    def ports_in_use(self) -> int:
        return len(self._used)

    @property
    def sessions(self) -> frozenset[MediaSession]:
        return frozenset(self._sessions)

    def _bind(self) -> tuple[socket.socket, int]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        count = (self.port_max - self.port_min) // 2 + 1
        for _ in range(count):
            port = self._cursor
            self._cursor += 2
            if self._cursor > self.port_max:
                self._cursor = self.port_min
            if port in self._used:
                continue
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, port))
            except OSError as e:
                sock.close()
                if e.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise MediaError(f"cannot bind RTP socket on {self.host}:{port}: {e}") from e
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            except OSError:
                pass
            self._used.add(port)
            return sock, port
        raise PortsExhausted(f"all {count} RTP ports of {self.port_min}-{self.port_max} on {self.host} are in use: "
                             f"widen the range or lower the call limit")

    async def open_session(self, *, dtmf_mode: DtmfMode | None = None, send_silence: bool | None = None,
                           name: str = "") -> MediaSession:
        """Bind a port (for the SDP answer or offer); call ``session.start(negotiated)`` once SDP is agreed."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.send_offload and not self._offload_tried:
            self._start_offload(loop)
        sock, port = self._bind()
        session = MediaSession(self, port, dtmf_mode or self.dtmf_mode,
                               self.send_silence if send_silence is None else send_silence, name)
        try:
            await loop.create_datagram_endpoint(lambda: _RtpProtocol(session), sock=sock)
        except BaseException:
            sock.close()
            self._used.discard(port)
            raise
        self._slots = (self._slots + 1) & 0xFFFFFFFF
        session._slot = self._slots
        session._sock = sock
        if self.offload_on:
            assert self.offload is not None
            self.offload.open(session._slot, sock)
        self._sessions.add(session)
        return session

    def _release(self, session: MediaSession) -> None:
        self._sessions.discard(session)
        self._used.discard(session.local_port)
        self._unpace(session)
        if self.offload_on:
            assert self.offload is not None
            self.offload.close(session._slot)

    async def start(self, ready_timeout: float = 5.0) -> None:
        """Start the send worker now rather than at the first call, and wait until it is ready (or has failed):
        a server should not pay the worker's start-up during a call. Optional: sessions work without it."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if not self.send_offload or self._offload_tried:
            return
        self._start_offload(loop)
        for _ in range(int(ready_timeout / 0.02)):
            if self.offload is None or self.offload_on or not self.offload.alive:
                return  # ready, declined or failed
            await asyncio.sleep(0.02)
        log.warning("the RTP send worker is not ready after %.0f s: the event loop sends until it is", ready_timeout)

    # -- send worker -------------------------------------------------------------------------------------------
    def _start_offload(self, loop: asyncio.AbstractEventLoop) -> None:
        self._offload_tried = True
        offload = SendOffload(priority=self.send_priority)
        try:
            offload.start(loop)
        except (SendOffloadError, OSError) as e:
            log.warning("RTP send worker not started (%s): the event loop sends RTP itself", e)
            return
        offload.on_death = self._offload_lost
        offload.on_ready = self._offload_ready
        self.offload = offload

    def _offload_ready(self) -> None:
        assert self.offload is not None
        if self.send_needs_realtime and self.offload.priority_got != "realtime":
            log.info("RTP send worker without real-time priority (%s) on a small machine: the event loop sends "
                     "(rtp.send_worker: on keeps it)", self.offload.priority_got)
            offload, self.offload = self.offload, None
            self.offload_on = False
            self._background(offload.stop())
            return
        for s in self._sessions:
            self.offload.open(s._slot, s._sock)
            s._offload_dest = None  # a new worker knows no destination yet
        self.offload_on = self.offload.alive

    def _background(self, coro) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _offload_lost(self) -> None:
        """The loop sends from now on; a new worker is started a little later (a worker that keeps dying costs
        one start every ``OFFLOAD_RESTART_S``, the calls nothing)."""
        self.offload_on = False
        if self._loop is not None and not self._closing:
            self._restart_handle = self._loop.call_later(self.OFFLOAD_RESTART_S, self._restart_offload)

    def _restart_offload(self) -> None:
        self._restart_handle = None
        if self._closing or self._loop is None:
            return
        old = self.offload
        self.offload = None
        if old is not None:
            self._background(old.stop())
        self._offload_restarts += 1
        self._start_offload(self._loop)

    def schedule_flush(self) -> None:
        """Packets put outside a tick (relayed by a bridge from a receive callback) are published once per
        loop iteration, not once each."""
        if self._flush_handle is None and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self.offload_on:
            assert self.offload is not None
            self.offload.flush()

    async def close(self) -> None:
        self._closing = True
        if self._restart_handle is not None:
            self._restart_handle.cancel()
            self._restart_handle = None
        for s in list(self._sessions):
            await s.close()
        if self._ticker is not None:
            self._ticker.close()
            self._ticker = None
            self._ticking = False
            self.next_deadline = float("inf")
        if self.offload is not None:
            self.offload_on = False
            await self.offload.stop()
        for task in list(self._tasks):
            await task

    # -- pacer -------------------------------------------------------------------------------------------------
    def _pace(self, session: MediaSession) -> None:
        if session in self._paced:
            return
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        now = time.monotonic()
        if not self._ticking:
            if not self._paced:
                self._t0 = now
                self._last_tick = 0
            if self._ticker is None:
                self._ticker = make_ticker(loop, self._on_tick, self.clock)
            self._ticker.start(self._t0, self.tick)
            self._ticking = True
            self.next_deadline = self._t0 + (max(int((now - self._t0) / self.tick), self._last_tick) + 1) * self.tick
        g = int((now - self._t0) / self.tick)
        tpf = session._ticks_per_frame
        load = self._phase_load
        best = min(range(tpf), key=lambda p: load.get((tpf, p), 0))
        nxt = max(g, self._last_tick) + 1
        nxt += (best - nxt) % tpf
        session._next_tick = nxt
        session._phase = (tpf, best)
        load[(tpf, best)] = load.get((tpf, best), 0) + 1
        self._paced.add(session)
        self._due.setdefault(nxt, []).append(session)

    def _unpace(self, session: MediaSession) -> None:
        if session not in self._paced:
            return
        self._paced.discard(session)
        bucket = self._due.get(session._next_tick)
        if bucket is not None:
            try:
                bucket.remove(session)
            except ValueError:
                pass
            if not bucket:
                del self._due[session._next_tick]
        key = session._phase
        if key is not None:
            self._phase_load[key] -= 1
            session._phase = None

    def _on_tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = time.monotonic()
        tick = self.tick
        g = int((now - self._t0) / tick + 0.05)
        due = self._due
        last = self._last_tick
        if g - last <= 64:
            ticks = [t for t in range(last + 1, g + 1) if t in due]
        else:                                  # the loop stalled: walk the buckets, not the ticks
            ticks = sorted(t for t in due if t <= g)
        self._last_tick = max(last, g)
        self.next_deadline = self._t0 + (self._last_tick + 1) * tick
        for t in ticks:
            bucket = due.pop(t, None)
            if not bucket:
                continue
            for s in bucket:
                try:
                    s._pace_tick(g)
                except Exception:  # one broken session must not silence the others
                    log.exception("media session %s failed to send; closing it", s.name)
                    loop.create_task(s.close())
                    continue
                if s in self._paced:
                    due.setdefault(s._next_tick, []).append(s)
        if self.offload_on:
            assert self.offload is not None
            self.offload.flush()
        if len(self.late_hist.pending) >= LatencyHistogram.FOLD_AT:
            for h in (self.late_hist, self.gap_hist, self.jitter_hist):
                h.fold()
        if not self._paced and self._ticker is not None:
            self._ticker.stop()
            self._ticking = False
            self.next_deadline = float("inf")

    def tick_if_due(self, now: float) -> None:
        """Send the frames of an overdue tick now. The loop runs every callback that is ready before it looks at
        its timers, and a peer that sends the RTP of hundreds of calls in one burst makes hundreds of receive
        callbacks ready at once: checking the clock in each of them bounds the tick's delay to one callback
        instead of the whole burst."""
        if now >= self.next_deadline:
            self._on_tick()

    def send_stats(self) -> SendStats:
        """Timing of every packet sent, by this loop and by the send worker (measured where each left)."""
        hists = []
        for i, h in enumerate((self.late_hist, self.gap_hist, self.jitter_hist)):
            merged = LatencyHistogram()
            merged.merge(h)
            worker = self.offload.histogram(i) if self.offload is not None else None
            if worker is not None:
                merged.merge_bins(*worker)
            hists.append(merged)
        lh, gh, jh = hists
        return SendStats(lh.count, lh.percentile_ms(50), lh.percentile_ms(99), lh.max * 1000,
                         gh.percentile_ms(50), gh.percentile_ms(99), gh.max * 1000, self.skipped_frames,
                         jh.percentile_ms(50), jh.percentile_ms(99), jh.max * 1000, self.offload_on,
                         self.offload_overflows)

    def reset_send_stats(self) -> None:
        self.late_hist = LatencyHistogram()
        self.gap_hist = LatencyHistogram()
        self.jitter_hist = LatencyHistogram()
        self.skipped_frames = 0
        if self.offload is not None:
            self.offload.reset_stats()
