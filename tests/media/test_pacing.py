"""The send path driven tick by tick (no real timers involved): burst limit, skipping, hold, phases."""

import asyncio

import numpy as np
import pytest

from ivr.media.g711 import Codec
from ivr.media.rtp import RtpPacket
from ivr.media.sdp import Direction, NegotiatedMedia
from ivr.media.engine import LatencyHistogram, MediaEngine
from ivr.media.session import PlayEnd


class CaptureTransport:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append((RtpPacket.parse(bytes(data)), addr))

    def close(self):
        pass


def neg(direction=Direction.SENDRECV, ptime=20, ip="127.0.0.1"):
    return NegotiatedMedia(ip, 4000, Codec.PCMU, 0, 101, ptime, direction)


@pytest.fixture
async def engine():
    eng = MediaEngine("127.0.0.1", 41000, 41100, max_burst=3, tick_ms=10)
    yield eng
    await eng.close()


async def paced_session(engine, **kw):
    s = await engine.open_session(**kw)
    s._transport.close()
    cap = CaptureTransport()
    s._transport = cap
    s.start(neg())
    engine._unpace(s)  # driven by hand below
    return s, cap


async def test_late_loop_sends_at_most_max_burst_and_skips_the_rest(engine):
    s, cap = await paced_session(engine)
    s._next_tick = 10
    s._pace_tick(10)
    assert len(cap.sent) == 1 and s._next_tick == 12
    ts0 = cap.sent[0][0].timestamp
    s._pace_tick(12 + 2 * 9)  # ten frames due at once
    pkts = [p for p, _ in cap.sent]
    assert len(pkts) == 1 + 3
    assert s.stats.skipped_frames == 7 and engine.skipped_frames == 7
    assert [p.sequence - pkts[0].sequence for p in pkts] == [0, 1, 2, 3]  # no sequence gap: nothing lost
    assert [(p.timestamp - ts0) & 0xFFFFFFFF for p in pkts] == [0, 160 * 8, 160 * 9, 160 * 10]
    assert pkts[1].marker and not pkts[2].marker
    assert s._next_tick == 32


async def test_playback_advances_with_skips_and_completes(engine):
    s, cap = await paced_session(engine)
    prompt = np.arange(160 * 10, dtype=np.int16)
    task = asyncio.ensure_future(s.play(prompt))
    await asyncio.sleep(0)
    s._next_tick = 0
    s._pace_tick(2 * 4)  # 5 frames due: 3 sent, 2 skipped
    s._pace_tick(2 * 9)  # 5 more: 3 sent, 2 skipped, prompt done
    res = await task
    assert res.samples_played == len(prompt)
    assert len(cap.sent) == 6 and s.stats.skipped_frames == 4


async def test_skipping_past_the_end_of_a_prompt_finishes_it_with_silence(engine):
    """A stalled loop can skip beyond the last frame of a prompt: the frames still due are silence, the prompt
    completes, and the session keeps sending (it once raised and closed the call)."""
    s, cap = await paced_session(engine)
    prompt = (np.arange(160 * 2 + 40, dtype=np.int16) * 50)  # 2 frames and a quarter
    task = asyncio.ensure_future(s.play(prompt))
    await asyncio.sleep(0)
    s._next_tick = 0
    s._pace_tick(2 * 5)  # 6 frames due: 3 skipped (past the end), 3 sent
    res = await task
    assert res.reason is PlayEnd.COMPLETED
    assert s.stats.skipped_frames == 3 and len(cap.sent) >= 1
    assert not s.closed
    s._pace_tick(s._next_tick)
    silence = Codec.PCMU.silence_byte
    assert cap.sent[-1][0].payload == bytes([silence]) * 160


async def test_hold_sends_nothing_but_time_moves(engine):
    s, cap = await paced_session(engine)
    s.update(neg(Direction.RECVONLY))
    engine._unpace(s)
    ts = s._ts
    s._next_tick = 0
    s._pace_tick(2)
    assert cap.sent == [] and (s._ts - ts) & 0xFFFFFFFF == 320
    s.update(neg(ip="0.0.0.0"))
    engine._unpace(s)
    s._next_tick = 0
    s._pace_tick(0)
    assert cap.sent == []
    s.update(neg())
    engine._unpace(s)
    s._next_tick = 0
    s._pace_tick(0)
    assert len(cap.sent) == 1 and cap.sent[0][0].marker


async def test_no_silence_mode_marks_talkspurts(engine):
    s, cap = await paced_session(engine, send_silence=False)
    s._next_tick = 0
    s._pace_tick(4)
    assert cap.sent == []
    task = asyncio.ensure_future(s.play(np.ones(320, np.int16)))
    await asyncio.sleep(0)
    s._pace_tick(6)
    s._pace_tick(8)
    await task
    s._pace_tick(10)
    assert [p.marker for p, _ in cap.sent] == [True, False]


async def test_ptime_30_sends_240_samples_every_third_tick(engine):
    s, cap = await paced_session(engine)
    s.update(neg(ptime=30))
    engine._unpace(s)
    assert s._ticks_per_frame == 3
    s._next_tick = 0
    for g in range(0, 9):
        if s._next_tick <= g:
            s._pace_tick(g)
    pkts = [p for p, _ in cap.sent]
    assert len(pkts) == 3 and {len(p.payload) for p in pkts} == {240}


async def test_sessions_spread_over_phases(engine):
    sessions = []
    for _ in range(10):
        s = await engine.open_session()
        s.start(neg())
        sessions.append(s)
    phases = [s._next_tick % 2 for s in sessions]
    assert phases.count(0) == 5 and phases.count(1) == 5


def test_histogram_percentiles():
    h = LatencyHistogram()
    for ms in range(1, 101):
        h.add(ms / 1000)
    assert h.count == 100
    assert h.percentile_ms(50) == pytest.approx(50, abs=0.2)
    assert h.percentile_ms(99) == pytest.approx(99, abs=0.2)
    assert h.max == pytest.approx(0.1)
    h.add(5.0)
    assert h.percentile_ms(100) == 1000.0


async def test_sessions_spread_evenly_over_the_ten_phases_of_a_2ms_tick():
    eng = MediaEngine("127.0.0.1", 41200, 41400)
    try:
        assert eng.tick_ms == 2
        sessions = []
        for _ in range(30):
            s = await eng.open_session()
            s._transport.close()
            s._transport = CaptureTransport()
            s.start(neg())
            sessions.append(s)
        assert all(s._ticks_per_frame == 10 for s in sessions)
        phases = [s._next_tick % 10 for s in sessions]
        assert sorted(phases.count(p) for p in range(10)) == [3] * 10
        # a bucket holds only the sessions due at its tick
        assert all(all(s._next_tick == t for s in bucket) for t, bucket in eng._due.items())
        await asyncio.sleep(0.2)
        sent = [len(s._transport.sent) for s in sessions]
        assert min(sent) >= 3 and max(sent) <= 12          # one packet per 20 ms each, none starved
        for s in sessions[:10]:
            eng._unpace(s)
        assert sum(eng._phase_load.values()) == 20 and sum(len(b) for b in eng._due.values()) == 20
        before = [len(s._transport.sent) for s in sessions[:10]]
        await asyncio.sleep(0.1)
        assert [len(s._transport.sent) for s in sessions[:10]] == before   # unpaced: nothing more sent
    finally:
        await eng.close()
