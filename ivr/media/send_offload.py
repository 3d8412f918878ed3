"""The event loop's side of the RTP send worker: start it, register the legs' sockets, hand it packets.

``put`` copies a packet into the shared ring; ``flush`` (once per pacer tick) tells the worker how far to
send. The engine uses the worker once it has said it is ready (a Python start-up takes a few hundred ms). If the worker cannot start, falls behind (ring full) or dies, the engine sends those packets itself:
the offload only ever moves work, never loses a packet it could have sent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import mmap
import os
import socket
import struct
import subprocess
import sys

import numpy as np

from ivr.media.send_ring import (
    CTRL_CLOSE,
    CTRL_DEST,
    CTRL_OPEN,
    CTRL_RESET,
    DROPPED_OFF,
    READY,
    ERRORS_OFF,
    SENT_OFF,
    RingFull,
    RingWriter,
    SendStatsArea,
    read_counter,
    region_size,
)

log = logging.getLogger(__name__)

_SLOT = struct.Struct("<I")
_SLOT_PORT = struct.Struct("<IH")
_HEAD = struct.Struct("<Q")

__all__ = ["RingFull", "SendOffload", "SendOffloadError"]


class SendOffloadError(Exception):
    pass


class SendOffload:
    def __init__(self, capacity: int = 1 << 20, priority: str = "realtime"):
        self.capacity = capacity
        self.priority = priority
        self.priority_got = ""
        self.alive = False
        self.ready = False
        self.on_ready = None  # called once when the worker can take packets
        self.proc: subprocess.Popen | None = None
        self.writer: RingWriter | None = None
        self.stats: SendStatsArea | None = None
        self._mm: mmap.mmap | None = None
        self._ctrl: socket.socket | None = None
        self._wake_w = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_death = None  # called once when the worker is lost
        self._backlog: collections.deque[tuple[bytes, int | None]] = collections.deque()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if not hasattr(os, "memfd_create") or not hasattr(socket, "send_fds"):
            raise SendOffloadError("the RTP send worker needs Linux (memfd_create, SCM_RIGHTS)")
        size = region_size(self.capacity)
        memfd = os.memfd_create("rtp-send-ring", os.MFD_CLOEXEC)
        ctrl, ctrl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        wake_r, wake_w = os.pipe()
        try:
            os.ftruncate(memfd, size)
            self._mm = mmap.mmap(memfd, size)
            fds = (memfd, ctrl_child.fileno(), wake_r)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ivr.media.send_worker", str(memfd), str(self.capacity),
                 str(ctrl_child.fileno()), str(wake_r), self.priority], pass_fds=fds, stdin=subprocess.DEVNULL)
        except BaseException:
            ctrl.close()
            os.close(wake_w)
            raise
        finally:
            os.close(memfd)
            ctrl_child.close()
            os.close(wake_r)
        os.set_blocking(wake_w, False)
        ctrl.setblocking(False)
        try:
            ctrl.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        except OSError:
            pass
        self._ctrl = ctrl
        self._wake_w = wake_w
        buf = memoryview(self._mm)
        self.writer = RingWriter(buf, self.capacity)
        self.stats = SendStatsArea(buf)
        self._loop = loop
        loop.add_reader(ctrl.fileno(), self._on_ctrl)
        self.alive = True

    def _on_ctrl(self) -> None:
        try:
            data = self._ctrl.recv(16) if self._ctrl else b""
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost("the RTP send worker exited")
        elif data.startswith(READY) and not self.ready:
            self.ready = True
            self.priority_got = data[len(READY):].decode(errors="replace")
            log.info("RTP send worker ready (pid %s, priority %s)", self.proc.pid if self.proc else "?",
                     self.priority_got)
            if self.on_ready:
                self.on_ready()

    def _lost(self, why: str) -> None:
        if not self.alive:
            return
        self.alive = False
        code = self.proc.poll() if self.proc else None
        log.error("%s (exit status %s): the event loop sends RTP itself from now on", why, code)
        if self._loop is not None and self._ctrl is not None:
            self._loop.remove_reader(self._ctrl.fileno())
            self._loop.remove_writer(self._ctrl.fileno())
        self._close_backlog()
        if self.on_death:
            self.on_death()

    def _control(self, msg: bytes, fd: int | None = None) -> None:
        """Messages wait in order in ``_backlog`` while the socket is full (a worker that is behind, hundreds of
        calls set up at once); a socket queued with its message is a duplicate, so the leg may close meanwhile."""
        if not self.alive or self._ctrl is None:
            return
        if self._backlog:
            self._backlog.append((msg, os.dup(fd) if fd is not None else None))
            return
        try:
            self._send_control(msg, fd)
        except BlockingIOError:
            self._backlog.append((msg, os.dup(fd) if fd is not None else None))
            assert self._loop is not None
            self._loop.add_writer(self._ctrl.fileno(), self._drain_backlog)
        except OSError as e:
            self._lost(f"the RTP send worker's control socket failed ({e})")

    def _send_control(self, msg: bytes, fd: int | None) -> None:
        assert self._ctrl is not None
        if fd is not None:
            socket.send_fds(self._ctrl, [msg], [fd])
        else:
            self._ctrl.send(msg)

    def _drain_backlog(self) -> None:
        while self._backlog and self._ctrl is not None:
            msg, fd = self._backlog[0]
            try:
                self._send_control(msg, fd)
            except BlockingIOError:
                return
            except OSError as e:
                self._lost(f"the RTP send worker's control socket failed ({e})")
                return
            self._backlog.popleft()
            if fd is not None:
                os.close(fd)
        if self._ctrl is not None and self._loop is not None:
            self._loop.remove_writer(self._ctrl.fileno())

    def _close_backlog(self) -> None:
        while self._backlog:
            _, fd = self._backlog.popleft()
            if fd is not None:
                os.close(fd)

    def open(self, slot: int, sock: socket.socket) -> None:
        self._control(CTRL_OPEN + _SLOT.pack(slot), sock.fileno())

    def dest(self, slot: int, addr: tuple) -> None:
        self._control(CTRL_DEST + _SLOT_PORT.pack(slot, addr[1]) + str(addr[0]).encode())

    def close(self, slot: int) -> None:
        self._control(CTRL_CLOSE + _SLOT.pack(slot))

    def reset_stats(self) -> None:
        self._control(CTRL_RESET)

    def flush(self) -> None:
        w = self.writer
        if w is None or w.head == w.published or not self.alive:
            return
        try:
            os.write(self._wake_w, _HEAD.pack(w.head))
        except BlockingIOError:
            return  # the worker has wake-ups queued; the next flush publishes this head
        except OSError as e:
            self._lost(f"the RTP send worker's wake-up pipe failed ({e})")
            return
        w.published = w.head

    def counters(self) -> dict[str, int]:
        if self._mm is None:
            return {"sent": 0, "errors": 0, "dropped": 0}
        buf = memoryview(self._mm)
        try:
            return {"sent": read_counter(buf, SENT_OFF), "errors": read_counter(buf, ERRORS_OFF),
                    "dropped": read_counter(buf, DROPPED_OFF)}
        finally:
            buf.release()

    def histogram(self, which: int) -> tuple[np.ndarray, int, float] | None:
        return self.stats.snapshot(which) if self.stats is not None else None

    async def stop(self) -> None:
        was_alive = self.alive
        self.alive = False
        if self._ctrl is not None:
            if self._loop is not None and was_alive:
                self._loop.remove_reader(self._ctrl.fileno())
                self._loop.remove_writer(self._ctrl.fileno())
            self._ctrl.close()
            self._ctrl = None
        self._close_backlog()
        if self._wake_w >= 0:
            os.close(self._wake_w)
            self._wake_w = -1
        if self.proc is not None:
            for _ in range(100):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.02)
            else:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
            self.proc = None
