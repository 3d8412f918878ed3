"""The pacer's clocks (timerfd and the loop's timer) and the overdue tick run from a receive callback."""

import asyncio
import os
import time

import pytest

from ivr.media.engine import MediaEngine
from ivr.media.errors import MediaError
from ivr.media.g711 import Codec
from ivr.media.rtp import RtpPacket
from ivr.media.sdp import Direction, NegotiatedMedia
from ivr.media.session import _RtpProtocol
from ivr.media.ticker import LoopTicker, TickerKind, TimerfdTicker, make_ticker


@pytest.mark.parametrize("kind", [TickerKind.TIMERFD, TickerKind.LOOP])
async def test_ticks_never_fire_before_their_deadline_and_stop_stops_them(kind):
    loop = asyncio.get_running_loop()
    times: list[float] = []
    ticker = make_ticker(loop, lambda: times.append(time.monotonic()), kind)
    interval = 0.004
    t0 = time.monotonic()
    ticker.start(t0, interval)
    while len(times) < 8:
        await asyncio.sleep(interval)
    ticker.stop()
    n = len(times)
    # a late loop may merge expirations into one callback, so callback i is due at tick i + 1 at the earliest
    for i, t in enumerate(times):
        assert t >= t0 + (i + 1) * interval - 1e-6
    await asyncio.sleep(5 * interval)
    assert len(times) == n
    ticker.start(time.monotonic(), interval)  # restartable
    while len(times) < n + 2:
        await asyncio.sleep(interval)
    ticker.close()


async def test_auto_takes_the_timerfd_on_linux_and_close_releases_it():
    loop = asyncio.get_running_loop()
    ticker = make_ticker(loop, lambda: None)
    assert isinstance(ticker, TimerfdTicker)
    fd = ticker._fd
    os.fstat(fd)
    ticker.start(time.monotonic(), 0.002)
    ticker.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    ticker.close()  # twice is harmless
    assert isinstance(make_ticker(loop, lambda: None, "loop"), LoopTicker)


async def test_a_system_without_timerfd_falls_back_unless_timerfd_was_required(monkeypatch):
    import ivr.media.ticker as ticker_mod

    class NoTimerfd:
        def create(self):
            raise OSError(38, "Function not implemented")

    monkeypatch.setattr(ticker_mod, "_timerfd_api", lambda: NoTimerfd())
    loop = asyncio.get_running_loop()
    assert isinstance(make_ticker(loop, lambda: None, TickerKind.AUTO), LoopTicker)
    with pytest.raises(MediaError, match="no timerfd on this system"):
        make_ticker(loop, lambda: None, TickerKind.TIMERFD)


class CaptureTransport:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append(RtpPacket.parse(bytes(data)))

    def close(self):
        pass


@pytest.mark.parametrize("clock", ["timerfd", "loop"])
async def test_engine_paces_a_call_at_20ms_on_either_clock(clock):
    eng = MediaEngine("127.0.0.1", 41500, 41600, clock=clock)
    try:
        s = await eng.open_session()
        s._transport.close()
        cap = s._transport = CaptureTransport()
        s.start(NegotiatedMedia("127.0.0.1", 4000, Codec.PCMU, 0, 101, 20, Direction.SENDRECV))
        while len(cap.sent) < 6:
            await asyncio.sleep(0.01)
        seqs = [p.sequence for p in cap.sent]
        assert [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])] == [1] * (len(seqs) - 1)
        assert eng.send_stats().packets >= 6
    finally:
        await eng.close()
    assert eng.next_deadline == float("inf")


async def test_an_overdue_tick_runs_from_the_receive_path_before_the_timer():
    """A burst of receive callbacks must not hold the frames that fall due meanwhile: the first packet
    received after the deadline sends them."""
    eng = MediaEngine("127.0.0.1", 41700, 41800, tick_ms=2)
    try:
        s = await eng.open_session()
        s._transport.close()
        cap = s._transport = CaptureTransport()
        s.start(NegotiatedMedia("127.0.0.1", 4000, Codec.PCMU, 0, 101, 20, Direction.SENDRECV))
        deadline = s.engine._t0 + s._next_tick * eng.tick
        eng.tick_if_due(deadline - 0.0001)
        assert cap.sent == []
        eng.next_deadline = deadline
        while time.monotonic() < deadline:  # no await: the loop cannot run the timer meanwhile
            pass
        _RtpProtocol(s).datagram_received(b"\x00junk", ("127.0.0.1", 4000))
        assert len(cap.sent) == 1
        assert s.stats.malformed == 1
        assert eng.next_deadline > deadline
    finally:
        await eng.close()
