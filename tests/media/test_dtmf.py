import glob

import numpy as np
import pytest
from scipy.io import wavfile

from ivr.media import g711
from ivr.media.dtmf import (
    DIGITS,
    DtmfDigit,
    DtmfSource,
    InbandDtmfDetector,
    Rfc4733Receiver,
    TelephoneEvent,
    encode_event,
    generate_tone,
    parse_info_body,
    tone_sequence,
)
from ivr.media.errors import DtmfError
from tests.conftest import SHARED


def test_encoder_packet_sequence():
    pkts = encode_event("5", timestamp=1000, duration_ms=100, ptime_ms=20)
    events = [TelephoneEvent.parse(p.payload) for p in pkts]
    assert [p.marker for p in pkts] == [True] + [False] * 6
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {5}
    assert {p.timestamp for p in pkts} == {1000}
    assert pkts[-1].payload == bytes([5, 0x80 | 10, 0x03, 0x20])


def test_encoder_rejects_non_digit():
    with pytest.raises(DtmfError):
        encode_event("x", 0)


def feed_all(rx, pkts, ssrc, now=0.0, step=0.02):
    out = []
    for i, p in enumerate(pkts):
        out += rx.receive(ssrc, p.timestamp, p.payload, now + i * step)
    return out


def test_receiver_one_digit_per_event_with_end_retransmissions():
    rx = Rfc4733Receiver()
    got = []
    t = 0.0
    for n, d in enumerate("1234#"):
        pkts = encode_event(d, timestamp=n * 1600, duration_ms=100)
        got += feed_all(rx, pkts + pkts[-2:], ssrc=7, now=t)  # duplicated end packets too
        t += 0.3
    assert "".join(x.digit for x in got) == "1234#"
    assert all(x.source is DtmfSource.RFC4733 and x.duration_ms == 100 for x in got)
    assert rx.get_timer() is None


def test_receiver_same_digit_twice_distinct_timestamps():
    rx = Rfc4733Receiver()
    got = feed_all(rx, encode_event("1", 0), 1) + feed_all(rx, encode_event("1", 1600), 1, now=0.5)
    assert [x.digit for x in got] == ["1", "1"]


def test_receiver_keys_by_ssrc_interleaved_streams():
    # SIPp: two SSRCs from one port; overlapping streams must not merge or split digits
    rx = Rfc4733Receiver()
    a = encode_event("1", 5000)
    b = encode_event("2", 5000)
    got = []
    for i, (pa, pb) in enumerate(zip(a, b)):
        got += rx.receive(1, pa.timestamp, pa.payload, i * 0.02)
        got += rx.receive(2, pb.timestamp, pb.payload, i * 0.02)
    assert sorted(x.digit for x in got) == ["1", "2"]


def test_receiver_lost_end_reported_after_timeout():
    rx = Rfc4733Receiver(end_timeout=0.25)
    pkts = [p for p in encode_event("9", 0) if not p.end]
    assert feed_all(rx, pkts, 3) == []
    last = (len(pkts) - 1) * 0.02
    assert rx.get_timer() == pytest.approx(last + 0.25)
    assert rx.handle_timer(last + 0.1) == []
    assert [x.digit for x in rx.handle_timer(last + 0.3)] == ["9"]
    # a late end packet of the same event is absorbed
    end = encode_event("9", 0)[-1]
    assert rx.receive(3, end.timestamp, end.payload, last + 0.35) == []


def test_receiver_only_start_packet_then_next_event():
    rx = Rfc4733Receiver()
    first = encode_event("4", 0)[0]
    assert rx.receive(1, 0, first.payload, 0.0) == []
    got = feed_all(rx, encode_event("5", 1600), 1, now=0.1)
    assert [x.digit for x in got] == ["4", "5"]


def test_receiver_ignores_flash_and_short_payload():
    rx = Rfc4733Receiver()
    assert rx.receive(1, 0, bytes(TelephoneEvent(16, True, 10, 800)), 0.0) == []
    assert rx.receive(1, 0, b"\x01", 0.0) == []
    assert rx.get_timer() is None


@pytest.mark.parametrize(
    "ctype, body, expected",
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", DtmfDigit("5", DtmfSource.INFO, 160)),
        ("Application/DTMF-Relay; charset=x", "signal = #\nduration= 250", DtmfDigit("#", DtmfSource.INFO, 250)),
        ("application/dtmf-relay", b"Signal=11\r\n", DtmfDigit("#", DtmfSource.INFO, None)),
        ("application/dtmf-relay", b"Signal=10\r\n", DtmfDigit("*", DtmfSource.INFO, None)),
        ("application/dtmf", b"5", DtmfDigit("5", DtmfSource.INFO, None)),
        ("application/dtmf", b" a\r\n", DtmfDigit("A", DtmfSource.INFO, None)),
    ],
)
def test_info_bodies(ctype, body, expected):
    assert parse_info_body(ctype, body) == expected


def test_info_not_dtmf_and_malformed():
    assert parse_info_body("application/media_control+xml", b"<x/>") is None
    assert parse_info_body(None, b"") is None
    with pytest.raises(DtmfError, match="Signal"):
        parse_info_body("application/dtmf-relay", b"Duration=160")
    with pytest.raises(DtmfError):
        parse_info_body("application/dtmf-relay", b"Signal=Z")
    with pytest.raises(DtmfError, match="Duration"):
        parse_info_body("application/dtmf-relay", b"Signal=1\nDuration=abc")


def run_detector(det, pcm, chunk=160):
    out = []
    for i in range(0, len(pcm), chunk):
        out += det.feed(pcm[i : i + chunk])
    out += det.feed(np.zeros(800, np.int16))
    return "".join(d.digit for d in out)


@pytest.mark.parametrize("codec", list(g711.Codec))
@pytest.mark.parametrize("level", [-10, -15, -20, -25])
def test_inband_detects_all_digits_through_g711(codec, level):
    x = tone_sequence(DIGITS, on_ms=60, off_ms=60, level_dbm0=level)
    y = g711.decode(g711.encode(x, codec), codec)
    assert run_detector(InbandDtmfDetector(), y) == DIGITS


def test_inband_one_digit_per_long_tone_and_gap_between_same_digits():
    det = InbandDtmfDetector()
    long_tone = generate_tone("7", 1000, -12)
    assert run_detector(det, long_tone) == "7"
    assert run_detector(det, tone_sequence("777", 80, 60)) == "777"
    # a 10 ms drop-out inside a tone is still one key press; a 40 ms pause makes two
    x = generate_tone("3", 300)
    x[1200:1280] = 0
    assert run_detector(det, x) == "3"
    assert run_detector(det, tone_sequence("33", 50, 40, -20)) == "33"


def test_inband_rejects_short_weak_and_twisted_tones():
    det = InbandDtmfDetector()
    assert run_detector(det, generate_tone("1", 20, -10)) == ""
    assert run_detector(det, generate_tone("1", 100, -45)) == ""
    assert run_detector(det, generate_tone("1", 100, -10, twist_db=14)) == ""
    assert run_detector(det, generate_tone("1", 100, -10, twist_db=-10)) == ""


def test_inband_chunk_size_does_not_matter():
    x = tone_sequence("159#", 70, 70, -18)
    for chunk in (80, 160, 240, 1234):
        assert run_detector(InbandDtmfDetector(), x, chunk) == "159#"


def test_inband_no_false_digits_on_real_speech():
    files = sorted(glob.glob(str(SHARED / "voice_data/audio/librispeech_test-other/*/*.wav")))
    assert files, f"no speech under {SHARED}/voice_data: the shared data set must sit beside the repository"
    total = 0.0
    det = InbandDtmfDetector()
    for f in files:
        rate, x = wavfile.read(f)
        assert rate == 8000
        total += len(x) / rate
        det.reset()
        for gain in (1.0, 3.0):
            y = np.clip(x.astype(np.float64) * gain, -32768, 32767).astype(np.int16)
            assert run_detector(det, g711.ulaw_decode(g711.ulaw_encode(y))) == "", f
    assert total > 60
