"""The RTP send worker as a real process with real sockets: packets leave from each leg's own port, in order,
through the hand-over from the loop to the worker, and through the worker's death back to the loop."""

import asyncio
import os
import signal

import pytest

from ivr.media.engine import MediaEngine
from ivr.media.g711 import Codec
from ivr.media.rtp import RtpPacket
from ivr.media.sdp import Direction, NegotiatedMedia
from ivr.media.send_ring import RingFull


class Receiver(asyncio.DatagramProtocol):
    def __init__(self):
        self.packets: dict[int, list[RtpPacket]] = {}

    def datagram_received(self, data, addr):
        self.packets.setdefault(addr[1], []).append(RtpPacket.parse(data))


async def receiver():
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    return transport, proto, transport.get_extra_info("sockname")[1]


def neg(port):
    return NegotiatedMedia("127.0.0.1", port, Codec.PCMU, 0, 101, 20, Direction.SENDRECV)


async def wait_for(pred, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def contiguous(pkts):
    seqs = [p.sequence for p in pkts]
    return all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))


async def test_worker_sends_each_legs_packets_from_its_port_in_order_and_measures_them():
    transport, rx, port = await receiver()
    eng = MediaEngine("127.0.0.1", 43200, 43300, send_offload=True, send_priority="normal")
    try:
        sessions = []
        for _ in range(4):
            s = await eng.open_session()
            s.start(neg(port))
            sessions.append(s)
        assert not eng.offload_on  # the loop sends until the worker says it is ready
        await wait_for(lambda: eng.offload_on)
        before = eng.offload.counters()["sent"]
        await wait_for(lambda: eng.offload.counters()["sent"] >= before + 40)
        late = await eng.open_session()  # opened while the worker runs
        late.start(neg(port))
        await wait_for(lambda: len(rx.packets.get(late.local_port, [])) >= 10)
        for s in sessions + [late]:
            pkts = rx.packets[s.local_port]
            assert contiguous(pkts), s.local_port
            assert {p.ssrc for p in pkts} == {s.ssrc}
        await wait_for(lambda: eng.send_stats().packets > 0)
        stats = eng.send_stats()
        assert stats.offloaded and stats.offload_overflows == 0
        assert 19.0 < stats.gap_p50_ms < 21.0
        assert eng.offload.counters()["errors"] == 0
        proc = eng.offload.proc
    finally:
        await eng.close()
        transport.close()
    assert proc.poll() is not None  # stopped with the engine


async def test_when_the_worker_dies_the_loop_sends_until_a_new_worker_is_up():
    transport, rx, port = await receiver()
    eng = MediaEngine("127.0.0.1", 43400, 43500, send_offload=True, send_priority="normal")
    eng.OFFLOAD_RESTART_S = 0.5
    try:
        s = await eng.open_session()
        s.start(neg(port))
        await wait_for(lambda: eng.offload_on)
        await wait_for(lambda: eng.offload.counters()["sent"] >= 10)
        first = eng.offload
        os.kill(first.proc.pid, signal.SIGKILL)
        await wait_for(lambda: not eng.offload_on)
        n = len(rx.packets[s.local_port])
        await wait_for(lambda: len(rx.packets[s.local_port]) >= n + 10)
        assert contiguous(rx.packets[s.local_port][n:])  # the loop's own sends
        await wait_for(lambda: eng.offload_on and eng.offload is not first)
        await wait_for(lambda: eng.offload.counters()["sent"] >= 10)  # the new worker knows the leg again
        pkts = rx.packets[s.local_port]
        assert contiguous(pkts[n:])
        # at most the packets in the ring when it died are lost
        assert (pkts[-1].sequence - pkts[0].sequence + 1) - len(pkts) <= 3
        assert first.proc is None or first.proc.poll() is not None
    finally:
        await eng.close()
        transport.close()


async def test_a_full_ring_falls_back_to_the_loop_and_counts_it():
    transport, rx, port = await receiver()
    eng = MediaEngine("127.0.0.1", 43600, 43700, send_offload=True, send_priority="normal")
    try:
        s = await eng.open_session()
        s.start(neg(port))
        await wait_for(lambda: eng.offload_on)
        os.kill(eng.offload.proc.pid, signal.SIGSTOP)  # a worker that is not scheduled
        try:
            n = len(rx.packets.get(s.local_port, []))
            # the 1 MB ring holds ~5,400 packets: fill it by hand, then the pacer's next packets overflow
            while True:
                try:
                    eng.offload.writer.put(s._slot, b"\x80" + bytes(171), 0.0)
                except RingFull:
                    break
            await wait_for(lambda: eng.offload_overflows >= 5)
            await wait_for(lambda: len(rx.packets.get(s.local_port, [])) >= n + 5)
        finally:
            os.kill(eng.offload.proc.pid, signal.SIGCONT)
        assert eng.send_stats().offload_overflows >= 5
    finally:
        await eng.close()
        transport.close()


@pytest.mark.parametrize("setting,cpus,expected", [("on", 1, True), ("off", 4, False), ("auto", 1, False),
                                                   ("auto", 2, True)])
def test_auto_uses_the_worker_only_with_a_second_cpu(monkeypatch, setting, cpus, expected):
    from ivr import app

    monkeypatch.setattr(app.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert app.use_send_worker(setting) is expected


async def test_start_brings_the_worker_up_before_the_first_call_and_close_stops_it():
    eng = MediaEngine("127.0.0.1", 43800, 43900, send_offload=True, send_priority="normal")
    try:
        await eng.start()
        assert eng.offload_on and eng.offload.priority_got == "normal"
        await eng.start()  # idempotent
        proc = eng.offload.proc
    finally:
        await eng.close()
    assert proc.poll() is not None and not eng.offload_on


async def test_an_engine_without_the_worker_starts_none():
    eng = MediaEngine("127.0.0.1", 43900, 43950)
    await eng.start()
    s = await eng.open_session()
    assert eng.offload is None and not eng.offload_on
    await s.close()
    await eng.close()


def test_a_legs_last_packets_leave_before_its_close_is_applied():
    """The worker in this process, one wake-up by hand: a leg closed right after its last packets were put in
    the ring still sends them (closing is applied after the ring pass, opening before)."""
    import socket
    import struct

    from ivr.media.send_ring import CTRL_CLOSE, CTRL_DEST, CTRL_OPEN, RingWriter, region_size
    from ivr.media.send_worker import SendWorker

    cap = 1 << 16
    buf = memoryview(bytearray(region_size(cap)))
    ctrl, ctrl_worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    wake_r, wake_w = os.pipe()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    leg = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    leg.bind(("127.0.0.1", 0))
    try:
        ctrl_worker.setblocking(False)
        worker = SendWorker(buf, cap, ctrl_worker, wake_r)
        writer = RingWriter(buf, cap)
        socket.send_fds(ctrl, [CTRL_OPEN + struct.pack("<I", 5)], [leg.fileno()])
        ctrl.send(CTRL_DEST + struct.pack("<IH", 5, rx.getsockname()[1]) + b"127.0.0.1")
        for i in range(3):
            writer.put(5, b"\x80\x00" + bytes([0, i]) + bytes(8), 0.0)
        writer.put(6, b"\x80\x00\x00\x09" + bytes(8), 0.0)  # a leg the worker was never given
        ctrl.send(CTRL_CLOSE + struct.pack("<I", 5))
        os.write(wake_w, struct.pack("<Q", writer.head))
        assert worker.control() and worker.wake()
        worker.send_pending()
        worker.close_legs()
        got = [rx.recvfrom(100) for _ in range(3)]
        assert [d[3] for d, _ in got] == [0, 1, 2]
        assert {a[1] for _, a in got} == {leg.getsockname()[1]}  # from the leg's own port
        assert worker.socks == {} and worker.dests == {}
        counters = struct.unpack_from("<QQQ", buf, 16)
        assert counters == (3, 0, 1)  # sent, errors, dropped (slot 6)
        ctrl.close()
        assert not worker.control()  # the loop's end is gone: the worker stops
    finally:
        for s in (rx, leg, ctrl, ctrl_worker):
            s.close()
        os.close(wake_r)
        os.close(wake_w)


async def test_a_full_control_socket_queues_messages_instead_of_dropping_the_worker():
    """Hundreds of legs set up while the worker is not scheduled fill its control socket: the messages wait
    (sockets duplicated, so legs may close meanwhile) and reach it in order once it runs again."""
    transport, rx, port = await receiver()
    eng = MediaEngine("127.0.0.1", 44000, 44990, send_offload=True, send_priority="normal")
    try:
        await eng.start()
        off = eng.offload
        os.kill(off.proc.pid, signal.SIGSTOP)
        try:
            sessions = []
            for _ in range(300):
                s = await eng.open_session()
                sessions.append(s)
            for i in range(20000):
                off.dest(sessions[0]._slot, ("127.0.0.1", port))
                if off._backlog:
                    break
            assert off._backlog and off.alive
            for s in sessions[1:]:
                await s.close()  # while their OPEN may still be queued
        finally:
            os.kill(off.proc.pid, signal.SIGCONT)
        await wait_for(lambda: not off._backlog)
        assert off.alive and eng.offload_on
        s = sessions[0]
        s.start(neg(port))
        await wait_for(lambda: len(rx.packets.get(s.local_port, [])) >= 5)
        assert contiguous(rx.packets[s.local_port])
    finally:
        await eng.close()
        transport.close()


async def test_a_worker_that_must_be_realtime_and_is_not_is_stopped_and_the_loop_sends():
    eng = MediaEngine("127.0.0.1", 44000, 44100, send_offload=True, send_priority="normal",
                      send_needs_realtime=True)
    try:
        await eng.start()
        assert not eng.offload_on and eng.offload is None
        transport, rx, port = await receiver()
        s = await eng.open_session()
        s.start(neg(port))
        await wait_for(lambda: len(rx.packets.get(s.local_port, [])) >= 3)
        transport.close()
    finally:
        await eng.close()


@pytest.mark.parametrize("setting,cpus,expected", [("auto", 2, True), ("auto", 3, True), ("auto", 4, False),
                                                   ("on", 2, False)])
def test_auto_on_a_small_machine_keeps_the_worker_only_with_realtime_priority(monkeypatch, setting, cpus,
                                                                               expected):
    from ivr import app

    monkeypatch.setattr(app.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert app.send_worker_needs_realtime(setting) is expected


def test_the_worker_exits_when_the_server_is_killed():
    """kill -9 of the server alone (not its process group) leaves no orphan: the worker sees its control socket
    close and exits."""
    import subprocess
    import sys
    import time

    script = (
        "import asyncio, sys\n"
        "from ivr.media.engine import MediaEngine\n"
        "async def main():\n"
        "    eng = MediaEngine('127.0.0.1', 44200, 44300, send_offload=True, send_priority='normal')\n"
        "    await eng.start()\n"
        "    print(eng.offload.proc.pid if eng.offload_on else 0, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n")
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    try:
        worker_pid = int(server.stdout.readline())
        assert worker_pid > 0
        server.kill()
        server.wait()
        for _ in range(250):
            try:
                os.kill(worker_pid, 0)
            except ProcessLookupError:
                break
            try:
                with open(f"/proc/{worker_pid}/stat") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        break  # exited, waiting to be reaped by init
            except FileNotFoundError:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the send worker outlived the server")
    finally:
        if server.poll() is None:
            server.kill()
