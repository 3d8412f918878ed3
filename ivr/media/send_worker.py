"""The RTP send worker: a process that sends the packets the event loop leaves in the ring (``send_ring``).

It holds duplicates of the call legs' sockets (passed over a Unix socket with SCM_RIGHTS), so packets leave
from each leg's own port as symmetric RTP requires, and it measures the send timing where the packets really
leave. It exits when the event loop's process closes its end of the control socket (or dies).

Run by ``SendOffload``: ``python -m ivr.media.send_worker MEMFD CAPACITY CONTROL_FD WAKE_FD PRIORITY``.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import struct
import sys
import time

from ivr.media.send_ring import (
    CTRL_CLOSE,
    CTRL_DEST,
    CTRL_OPEN,
    CTRL_RESET,
    DROPPED_OFF,
    READY,
    ERRORS_OFF,
    SENT_OFF,
    RingReader,
    SendStatsArea,
    add_counter,
    region_size,
)

_SLOT = struct.Struct("<I")
_SLOT_PORT = struct.Struct("<IH")
_HEAD = struct.Struct("<Q")
FOLD_EVERY = 1024
FOLD_SECONDS = 0.1


class SendWorker:
    def __init__(self, buf: memoryview, capacity: int, ctrl: socket.socket, wake_fd: int):
        self.buf = buf
        self.reader = RingReader(buf, capacity)
        self.stats = SendStatsArea(buf)
        self.ctrl = ctrl
        self.wake_fd = wake_fd
        self.socks: dict[int, socket.socket] = {}
        self.dests: dict[int, tuple] = {}
        self.last: dict[int, tuple[float, float]] = {}
        self.head = 0
        self.late: list[float] = []
        self.gap: list[float] = []
        self.jitter: list[float] = []
        self.folded = time.monotonic()
        self.closing: list[int] = []

    def control(self) -> bool:
        """Apply every pending control message; False when the event loop's end is gone."""
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.ctrl, 1024, 4)
            except BlockingIOError:
                return True
            if not msg and not fds:
                return False
            kind, body = msg[:1], msg[1:]
            if kind == CTRL_OPEN and fds:
                slot = _SLOT.unpack_from(body)[0]
                old = self.socks.pop(slot, None)
                if old is not None:
                    old.close()
                self.socks[slot] = socket.socket(fileno=fds[0])
                fds = fds[1:]
            elif kind == CTRL_DEST:
                slot, port = _SLOT_PORT.unpack_from(body)
                self.dests[slot] = (body[_SLOT_PORT.size:].decode(), port)
            elif kind == CTRL_CLOSE:  # after the ring pass: the leg's last packets are already in the ring
                self.closing.append(_SLOT.unpack_from(body)[0])
            elif kind == CTRL_RESET:
                self.late.clear()
                self.gap.clear()
                self.jitter.clear()
                self.stats.reset()
            for fd in fds:
                os.close(fd)

    def wake(self) -> bool:
        data = os.read(self.wake_fd, 8 * 512)
        if not data:
            return False
        n = len(data) // 8
        if n:
            self.head = max(self.head, _HEAD.unpack_from(data, (n - 1) * 8)[0])
        return True

    def send_pending(self) -> None:
        sent = errors = dropped = 0
        socks, dests, last = self.socks, self.dests, self.last
        late_l, gap_l, jit_l = self.late, self.gap, self.jitter
        mono = time.monotonic
        for slot, pkt, planned in self.reader.records(self.head):
            s = socks.get(slot)
            d = dests.get(slot)
            if s is None or d is None:
                dropped += 1
                continue
            try:
                s.sendto(pkt, d)
            except OSError:
                errors += 1
                continue
            sent += 1
            if planned:
                now = mono()
                late = now - planned
                late_l.append(late)
                prev = last.get(slot)
                if prev is not None:
                    gap_l.append(now - prev[0])
                    jit_l.append(abs(late - prev[1]))
                last[slot] = (now, late)
        self.reader.release()
        if sent:
            add_counter(self.buf, SENT_OFF, sent)
        if errors:
            add_counter(self.buf, ERRORS_OFF, errors)
        if dropped:
            add_counter(self.buf, DROPPED_OFF, dropped)
        if len(late_l) >= FOLD_EVERY or (late_l and time.monotonic() - self.folded >= FOLD_SECONDS):
            self.fold()

    def fold(self) -> None:
        self.folded = time.monotonic()
        for i, values in enumerate((self.late, self.gap, self.jitter)):
            self.stats.add(i, values)
            values.clear()

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.ctrl, selectors.EVENT_READ, "ctrl")
        sel.register(self.wake_fd, selectors.EVENT_READ, "wake")
        while True:
            events = sel.select(0.25)
            if not events:
                self.fold()
                continue
            ready = {key.data for key, _ in events}
            if not self.control():  # before the ring: a leg's socket and address precede its packets
                return
            if "wake" in ready and not self.wake():
                return
            self.send_pending()
            self.close_legs()

    def close_legs(self) -> None:
        for slot in self.closing:
            s = self.socks.pop(slot, None)
            if s is not None:
                s.close()
            self.dests.pop(slot, None)
            self.last.pop(slot, None)
        self.closing.clear()


def raise_priority(mode: str) -> str:
    """A packet waits in the ring until this process is scheduled: ask for a real-time priority (granted to root
    or with CAP_SYS_NICE; the process only ever runs briefly, then blocks, and the kernel's RT throttling caps
    it anyway), else a better nice value, else keep ours. Returns what it got."""
    if mode == "realtime":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            return "realtime"
        except (OSError, AttributeError):
            pass
    if mode in ("realtime", "nice"):
        try:
            os.nice(-10)
            return "nice"
        except OSError:
            pass
    return "normal"


def any_cpu() -> None:
    """The server may have left some CPUs to the voice workers (``voice.cpus``) before starting us: this process
    runs wherever a CPU is free, and with real-time priority it preempts a voice worker rather than the loop."""
    try:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    memfd, capacity, ctrl_fd, wake_fd = (int(a) for a in argv[:4])
    any_cpu()
    got = raise_priority(argv[4] if len(argv) > 4 else "normal")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is for the server; EOF stops us
    import mmap

    mm = mmap.mmap(memfd, region_size(capacity))
    os.close(memfd)
    ctrl = socket.socket(fileno=ctrl_fd)
    ctrl.setblocking(False)
    worker = SendWorker(memoryview(mm), capacity, ctrl, wake_fd)
    ctrl.send(READY + got.encode())
    try:
        worker.run()
    finally:
        worker.fold()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
