"""The shared-memory ring through which the event loop hands RTP packets to the send worker.

On loopback, and still on a NIC, most of the cost of an RTP packet is the ``sendto`` system call: the kernel's
network stack runs inside it, in the caller's thread. At 400 calls/s that was over 40% of the event loop's
core. The loop now only copies each packet into this ring (a ``memfd`` both processes map) and the worker
process, on another core, makes the system calls.

Layout (little-endian): a 64-byte header (``tail`` at 8, written by the worker; counters after it), the send
statistics the worker keeps (three histograms, see ``SendStatsArea``), then the data area. A record is
``u32 slot, u16 length, u16 kind, f64 planned`` and the packet, padded to 8 bytes; a record that does not fit
before the end of the area leaves a WRAP record and starts again at 0. Positions are absolute byte counts
(u64) taken modulo the capacity. The writer publishes its head through a pipe, one 8-byte write per batch:
the system call orders the memory writes before it, and wakes the worker.

Sans-IO: both ends work on a buffer, so they are tested without processes.
"""

from __future__ import annotations

import struct

import numpy as np

_REC = struct.Struct("<IHHd")
REC_HEADER = _REC.size  # 16
KIND_PACKET = 0
KIND_WRAP = 1

HEADER_BYTES = 64
TAIL_OFF = 8
SENT_OFF = 16
ERRORS_OFF = 24
DROPPED_OFF = 32

HIST_BINS = 10_001  # 0.1 ms bins up to 1 s, as LatencyHistogram
HIST_RES = 10_000.0
_HISTS = 3  # lateness, gap, jitter
STATS_OFF = HEADER_BYTES
# per histogram: bins, then count and max (as an int64 and a float64)
_HIST_BYTES = HIST_BINS * 8 + 16
DATA_OFF = STATS_OFF + _HISTS * _HIST_BYTES
DATA_OFF += -DATA_OFF % 64

_Q = struct.Struct("<Q")

# control messages on the Unix socket, event loop -> worker
CTRL_OPEN = b"O"  # + u32 slot, with the leg's socket as SCM_RIGHTS
CTRL_DEST = b"D"  # + u32 slot, u16 port, host
CTRL_CLOSE = b"C"  # + u32 slot
CTRL_RESET = b"R"  # zero the send statistics
READY = b"K"  # worker -> event loop, once, when it is ready to send


def region_size(capacity: int) -> int:
    return DATA_OFF + capacity


class RingFull(Exception):
    """No room for the packet: the worker is behind. The caller sends it itself."""


class RingWriter:
    """The event loop's end. ``put`` copies one packet in; ``head`` is what to publish to the worker."""

    def __init__(self, buf: memoryview, capacity: int):
        if capacity % 8 or capacity < 4096:
            raise ValueError("ring capacity must be a multiple of 8 and at least 4096 bytes")
        self.buf = buf
        self.capacity = capacity
        self.head = 0
        self.published = 0
        self._tail = 0  # last tail read: re-read only when the ring looks full

    def tail(self) -> int:
        return _Q.unpack_from(self.buf, TAIL_OFF)[0]

    def put(self, slot: int, packet, planned: float) -> None:
        n = len(packet)
        rec = (REC_HEADER + n + 7) & ~7
        cap = self.capacity
        head = self.head
        pos = head % cap
        wrap = cap - pos if pos + rec > cap else 0
        if head + wrap + rec - self._tail > cap:
            self._tail = self.tail()
            if head + wrap + rec - self._tail > cap:
                raise RingFull
        buf = self.buf
        if wrap:
            _REC.pack_into(buf, DATA_OFF + pos, 0, 0, KIND_WRAP, 0.0)
            head += wrap
            pos = 0
        off = DATA_OFF + pos
        _REC.pack_into(buf, off, slot, n, KIND_PACKET, planned)
        buf[off + REC_HEADER: off + REC_HEADER + n] = packet
        self.head = head + rec


class RingReader:
    """The worker's end: ``records(head)`` yields (slot, packet view, planned) up to ``head``; ``release``
    publishes how far it has read, which frees the space for the writer."""

    def __init__(self, buf: memoryview, capacity: int):
        self.buf = buf
        self.capacity = capacity
        self.tail = _Q.unpack_from(buf, TAIL_OFF)[0]

    def records(self, head: int):
        buf = self.buf
        cap = self.capacity
        tail = self.tail
        while tail < head:
            pos = tail % cap
            slot, n, kind, planned = _REC.unpack_from(buf, DATA_OFF + pos)
            if kind == KIND_WRAP:
                tail += cap - pos
                continue
            off = DATA_OFF + pos + REC_HEADER
            tail += (REC_HEADER + n + 7) & ~7
            self.tail = tail
            yield slot, buf[off: off + n], planned
        self.tail = tail

    def release(self) -> None:
        _Q.pack_into(self.buf, TAIL_OFF, self.tail)


def add_counter(buf: memoryview, off: int, n: int) -> None:
    _Q.pack_into(buf, off, _Q.unpack_from(buf, off)[0] + n)


def read_counter(buf: memoryview, off: int) -> int:
    return _Q.unpack_from(buf, off)[0]


class SendStatsArea:
    """Send timing measured where the packets really leave (in the worker), in shared memory so the event
    loop reads it without asking: for each of lateness, gap and jitter, 0.1 ms bins, a count and a max."""

    NAMES = ("late", "gap", "jitter")

    def __init__(self, buf: memoryview):
        self.bins = []
        self.meta = []
        for i in range(_HISTS):
            base = STATS_OFF + i * _HIST_BYTES
            self.bins.append(np.ndarray((HIST_BINS,), np.int64, buf, base))
            self.meta.append(np.ndarray((2,), np.float64, buf, base + HIST_BINS * 8))

    def add(self, which: int, values: list[float]) -> None:
        if not values:
            return
        a = np.asarray(values, np.float64)
        idx = np.clip((a * HIST_RES).astype(np.int64), 0, HIST_BINS - 1)
        self.bins[which] += np.bincount(idx, minlength=HIST_BINS)
        meta = self.meta[which]
        meta[0] += len(a)
        meta[1] = max(meta[1], float(a.max()))

    def reset(self) -> None:
        for b, m in zip(self.bins, self.meta):
            b[:] = 0
            m[:] = 0

    def snapshot(self, which: int) -> tuple[np.ndarray, int, float]:
        m = self.meta[which]
        return self.bins[which].copy(), int(m[0]), float(m[1])
