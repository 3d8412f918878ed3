"""Sessions talking to each other over 127.0.0.1 (no assertion on timing: only on content and counts)."""

import asyncio
import socket

import numpy as np
import pytest
from scipy.io import wavfile

from ivr.media.bridge import Bridge, RecordMode
from ivr.media.collect import CollectReason
from ivr.media.dtmf import DtmfMode, tone_sequence
from ivr.media.errors import MediaError, PortsExhausted
from ivr.media.g711 import Codec, alaw_encode
from ivr.media.rtp import RtpPacket
from ivr.media.sdp import Direction, NegotiatedMedia, answer_offer, make_offer, parse_answer
from ivr.media.engine import MediaEngine
from ivr.media.session import PlayEnd

pytestmark = pytest.mark.timeout(60)


def free_range(n=200):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    base = max(20000, min(port, 60000 - n)) & ~1
    return base, base + n


@pytest.fixture
async def engine():
    lo, hi = free_range()
    eng = MediaEngine("127.0.0.1", lo, hi)
    yield eng
    await eng.close()


async def connect(engine, offer_codecs=("PCMU",), answer_supported=("PCMU", "PCMA"), dtmf_pt=101,
                  mode_a=DtmfMode.AUTO, mode_b=DtmfMode.AUTO):
    a = await engine.open_session(dtmf_mode=mode_a, name="a")
    b = await engine.open_session(dtmf_mode=mode_b, name="b")
    offer = make_offer("127.0.0.1", a.local_port, codecs=offer_codecs, dtmf_pt=dtmf_pt)
    answer, neg_b = answer_offer(offer, "127.0.0.1", b.local_port, supported=answer_supported)
    a.start(parse_answer(offer, answer))
    b.start(neg_b)
    return a, b


def test_signal(seconds=1.5, seed=3):
    rng = np.random.default_rng(seed)
    t = np.arange(int(8000 * seconds)) / 8000
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (300, 523, 811, 1450, 2200))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    return (x * env * 3000).astype(np.int16)


test_signal.__test__ = False


def best_correlation(sent, got):
    sent = sent.astype(float)
    got = got.astype(float)
    if len(got) < len(sent):
        return 0.0
    xc = np.correlate(got, sent, mode="valid")
    k = int(np.argmax(xc))
    seg = got[k : k + len(sent)]
    return float(np.corrcoef(seg, sent)[0, 1])


async def test_play_and_record_through_ulaw(engine):
    a, b = await connect(engine)
    sig = test_signal()
    rec = asyncio.create_task(b.record_detailed(max_seconds=8, silence_end_seconds=0.5, start_timeout=5))
    await asyncio.sleep(0.1)
    res = await a.play(sig)
    assert res.reason is PlayEnd.COMPLETED and res.samples_played == len(sig)
    result = await rec
    assert result.speech_detected
    assert best_correlation(sig, result.audio) > 0.99
    assert b.stats.lost == 0 and b.stats.malformed == 0
    assert a.stats.packets_sent >= len(sig) // 160
    st = engine.send_stats()
    assert st.packets >= a.stats.packets_sent


async def test_packets_on_the_wire(engine):
    """Sequence, timestamps, SSRC and marker of the paced stream, seen by a plain UDP socket."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    s = await engine.open_session()
    s.start(NegotiatedMedia("127.0.0.1", sink.getsockname()[1], Codec.PCMA, 8, 101, 20, Direction.SENDRECV))
    prompt = np.full(480, 1000, np.int16)
    await asyncio.sleep(0.1)
    await s.play(prompt)
    await asyncio.sleep(0.1)
    pkts = []
    while True:
        try:
            pkts.append(RtpPacket.parse(sink.recv(2048)))
        except BlockingIOError:
            break
    sink.close()
    assert len(pkts) >= 8
    assert [p.marker for p in pkts] == [True] + [False] * (len(pkts) - 1)
    assert {p.ssrc for p in pkts} == {s.ssrc} and {p.payload_type for p in pkts} == {8}
    assert all((q.sequence - p.sequence) & 0xFFFF == 1 for p, q in zip(pkts, pkts[1:]))
    assert all((q.timestamp - p.timestamp) & 0xFFFFFFFF == 160 for p, q in zip(pkts, pkts[1:]))
    payloads = [p.payload for p in pkts]
    assert payloads[0] == b"\xd5" * 160  # A-law silence before the prompt
    tone = alaw_encode(prompt[:160])
    assert payloads.count(tone) == 3
    i = payloads.index(tone)
    assert payloads[i : i + 3] == [tone] * 3 and payloads[i + 3] == b"\xd5" * 160


async def test_rfc4733_digits_arrive_once(engine):
    a, b = await connect(engine, mode_b=DtmfMode.RFC4733)
    seen = []
    b.add_dtmf_listener(lambda s, d: seen.append(d))
    a.send_dtmf("1234#")
    res = await b.collect_digits(5, first_timeout=5, inter_digit_timeout=3, terminator=None)
    assert res.digits == "1234#" and res.reason is CollectReason.MAX
    assert [d.digit for d in seen] == list("1234#")
    assert all(d.source.value == "rfc4733" for d in seen)
    await asyncio.sleep(0.3)
    assert b.pending_digits() == "" and b.stats.digits == 5
    assert b.stats.dtmf_packets == 5 * 7


async def test_inband_dtmf_from_audio(engine):
    a, b = await connect(engine, dtmf_pt=None)
    assert b.negotiated.dtmf_payload_type is None
    await a.play(tone_sequence("159", 80, 80, -15))
    a.send_dtmf("#")  # no telephone-event negotiated: sent as a tone
    res = await b.collect_digits(10, first_timeout=5, inter_digit_timeout=2, terminator="#")
    assert res.digits == "159" and res.reason is CollectReason.TERMINATOR


async def test_info_digits_and_barge_in(engine):
    a, b = await connect(engine)
    long_prompt = np.full(8000 * 20, 500, np.int16)
    play = asyncio.create_task(b.play(long_prompt, barge_in=True))
    await asyncio.sleep(0.2)
    a.send_dtmf("7")
    res = await play
    assert res.reason is PlayEnd.INTERRUPTED and res.digit == "7"
    b.inject_dtmf("8")
    b.inject_dtmf("#")
    got = await b.collect_digits(4, 1, 1)
    assert got.digits == "78" and got.reason is CollectReason.TERMINATOR
    # type-ahead skips a barge-in prompt; without barge-in the prompt plays to the end
    b.inject_dtmf("1")
    assert (await b.play(long_prompt, barge_in=True)).reason is PlayEnd.INTERRUPTED
    assert (await b.play(np.zeros(800, np.int16))).reason is PlayEnd.COMPLETED
    assert (await b.collect_digits(1, 1, 1)).digits == "1"


async def test_collect_timeout_and_stop_playback(engine):
    a, b = await connect(engine)
    res = await b.collect_digits(3, first_timeout=0.2, inter_digit_timeout=0.2)
    assert res.digits == "" and res.reason is CollectReason.TIMEOUT
    play = asyncio.create_task(b.play(np.full(8000 * 20, 500, np.int16)))
    await asyncio.sleep(0.1)
    b.stop_playback()
    assert (await play).reason is PlayEnd.STOPPED


async def test_garbage_does_not_break_session(engine):
    a, b = await connect(engine)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", b.local_port)
    for junk in (b"", b"\x00", b"garbage!" * 3, b"\x80\x00\x00", bytes([0x40]) + bytes(20),
                 bytes([0x8F]) + bytes(13), bytes([0x80, 0xC9, 0, 1, 0, 0, 0, 1])):
        raw.sendto(junk, target)
    # a valid packet with an unknown payload type from a foreign address
    raw.sendto(bytes(RtpPacket(payload_type=99, payload=b"x")), target)
    raw.close()
    sig = test_signal(1.0)
    rec = asyncio.create_task(b.record(max_seconds=6, silence_end_seconds=0.5))
    await asyncio.sleep(0.1)
    await a.play(sig)
    audio = await rec
    assert best_correlation(sig, audio) > 0.99
    assert b.stats.malformed >= 5 and b.stats.rtcp == 1
    assert b.stats.wrong_payload_type + b.stats.foreign_source >= 1


async def test_close_ends_waiters_and_releases_port(engine):
    a, b = await connect(engine)
    play = asyncio.create_task(b.play(np.full(8000 * 20, 500, np.int16)))
    collect = asyncio.create_task(a.collect_digits(3, 30, 30))
    rec = asyncio.create_task(a.record(max_seconds=30))
    await asyncio.sleep(0.1)
    ports = engine.ports_in_use
    await b.close()
    await a.close()
    assert (await play).reason is PlayEnd.CLOSED
    assert (await collect).reason is CollectReason.CLOSED
    assert len(await rec) == 0
    assert engine.ports_in_use == ports - 2
    with pytest.raises(MediaError, match="closed"):
        await a.play(np.zeros(10, np.int16))


async def test_port_allocation_even_skip_in_use_and_exhaustion():
    lo, _ = free_range()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", lo + 2))
    eng = MediaEngine("127.0.0.1", lo + 1, lo + 6)  # even ports lo+2, lo+4, lo+6; lo+2 taken
    try:
        s1 = await eng.open_session()
        s2 = await eng.open_session()
        assert {s1.local_port, s2.local_port} == {lo + 4, lo + 6}
        with pytest.raises(PortsExhausted, match="in use"):
            await eng.open_session()
        await s1.close()
        await asyncio.sleep(0)
        s3 = await eng.open_session()
        assert s3.local_port == s1.local_port
    finally:
        blocker.close()
        await eng.close()
    with pytest.raises(MediaError):
        MediaEngine("127.0.0.1", 5000, 5000)


async def test_play_before_start_is_an_error(engine):
    s = await engine.open_session()
    with pytest.raises(MediaError, match="negotiated"):
        await s.play(np.zeros(10, np.int16))
    await s.close()


async def test_bridge_relays_transcodes_dtmf_and_records(engine, tmp_path):
    # caller (PCMU) <-> leg_c [server] bridge [server] leg_g <-> agent (PCMA)
    caller, leg_c = await connect(engine, offer_codecs=("PCMU",))
    leg_g, agent = await connect(engine, offer_codecs=("PCMA",))
    assert leg_c.codec is Codec.PCMU and leg_g.codec is Codec.PCMA
    bridge = Bridge(leg_c, leg_g, record_to=tmp_path / "call.wav", record_mode=RecordMode.STEREO)
    bridge.start()
    sig = test_signal(1.2, seed=7)
    rec_agent = asyncio.create_task(agent.record(max_seconds=8, silence_end_seconds=0.5))
    await asyncio.sleep(0.1)
    await caller.play(sig)
    heard_by_agent = await rec_agent
    assert best_correlation(sig, heard_by_agent) > 0.98  # mu-law then A-law

    sig2 = test_signal(1.0, seed=9)
    rec_caller = asyncio.create_task(caller.record(max_seconds=8, silence_end_seconds=0.5))
    await asyncio.sleep(0.1)
    await agent.play(sig2)
    heard_by_caller = await rec_caller
    assert best_correlation(sig2, heard_by_caller) > 0.98

    agent.send_dtmf("42")
    res = await caller.collect_digits(2, 5, 3)
    assert res.digits == "42"
    assert bridge.digits_relayed == 2
    path = await bridge.stop()
    rate, data = wavfile.read(path)
    assert rate == 8000 and data.shape[1] == 2
    assert best_correlation(sig, data[:, 0]) > 0.98
    assert best_correlation(sig2, data[:, 1]) > 0.98
    # after the bridge the legs send their own silence again and prompts work
    rec = asyncio.create_task(caller.record(max_seconds=6, silence_end_seconds=0.5))
    await asyncio.sleep(0.1)
    await leg_c.play(sig)
    assert best_correlation(sig, await rec) > 0.99


async def test_sipp_style_two_ssrcs_from_one_port(engine):
    """SIPp sends audio and RFC 4733 from one port with different SSRCs (and PT 96, with filler on 97)."""
    from ivr.media.dtmf import encode_event
    from ivr.media.g711 import ulaw_encode

    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    s = await engine.open_session(dtmf_mode=DtmfMode.AUTO)
    s.start(NegotiatedMedia("127.0.0.1", peer.getsockname()[1], Codec.PCMU, 0, 96, 20, Direction.SENDRECV))
    target = ("127.0.0.1", s.local_port)
    audio = ulaw_encode(test_signal(2.0)[:160 * 80])
    seq_a, seq_d = 100, 5000
    events = [encode_event(d, 8000 * (i + 1)) for i, d in enumerate("1234")]
    for n in range(80):
        peer.sendto(bytes(RtpPacket(payload_type=0, sequence=seq_a + n, timestamp=160 * n, ssrc=0xAAAA,
                                    payload=audio[160 * n : 160 * n + 160])), target)
        if n < 20:
            peer.sendto(bytes(RtpPacket(payload_type=97, sequence=seq_d, timestamp=0, ssrc=0xBBBB,
                                        payload=b"\x00" * 4)), target)
            seq_d += 1
        elif (n - 20) // 12 < 4:
            ev = events[(n - 20) // 12]
            k = (n - 20) % 12
            if k < len(ev):
                peer.sendto(bytes(RtpPacket(payload_type=96, marker=ev[k].marker, sequence=seq_d,
                                            timestamp=ev[k].timestamp, ssrc=0xBBBB, payload=ev[k].payload)), target)
                seq_d += 1
        if n % 10 == 9:
            await asyncio.sleep(0.01)
    res = await s.collect_digits(4, 5, 3)
    peer.close()
    assert res.digits == "1234"
    assert s.stats.lost == 0 and s.stats.wrong_payload_type == 20
    assert s.stats.audio_packets == 80


def _events_from(session, digits: str, addr, ssrc=0x5150, seq0=100, ts0=8000):
    """RFC 4733 key presses handed to the session as if the socket had received them from ``addr`` (a source port
    of 0 cannot be produced with an ordinary socket; SIPp's pcap replay forges it)."""
    from ivr.media.dtmf import encode_event

    seq = seq0
    for i, d in enumerate(digits):
        for p in encode_event(d, ts0 + i * 1600):
            session._on_datagram(bytes(RtpPacket(payload_type=101, marker=p.marker, sequence=seq, timestamp=p.timestamp,
                                                 ssrc=ssrc, payload=p.payload)), addr)
            seq += 1


async def test_source_port_zero_is_heard_but_never_latched(engine):
    a, b = await connect(engine)
    sdp_addr = b.remote_address
    _events_from(b, "42", ("127.0.0.1", 0))
    assert (await b.collect_digits(2, 1, 1)).digits == "42"
    assert b.remote_address == sdp_addr
    # a different host with port 0 is foreign, and the peer's own packets still latch and carry audio
    before = b.stats.foreign_source
    _events_from(b, "7", ("127.0.0.9", 0), seq0=500)
    assert b.stats.foreign_source > before
    sig = test_signal(1.0)
    rec = asyncio.create_task(a.record(max_seconds=6, silence_end_seconds=0.5))
    await asyncio.sleep(0.1)
    await b.play(sig)
    assert best_correlation(sig, await rec) > 0.99
    _events_from(b, "9", ("127.0.0.1", 0), seq0=900, ts0=80000)
    assert (await b.collect_digits(1, 1, 1)).digits == "9"
    assert b.remote_address == sdp_addr
