import glob

import numpy as np
import pytest
from scipy.io import wavfile

from ivr.media.collect import CollectReason, CollectResult, DigitCollector
from ivr.media.eos import EndOfSpeechDetector, EosEvent
from tests.conftest import SHARED

RATE = 8000


def noise(seconds, dbfs, seed=0):
    rng = np.random.default_rng(seed)
    amp = 32768 * 10 ** (dbfs / 20)
    return np.clip(rng.normal(0, amp, int(seconds * RATE)), -32768, 32767).astype(np.int16)


def speechlike(seconds, dbfs=-20, seed=1):
    """Noise modulated at a syllable rate: loud, with short dips, like speech."""
    t = np.arange(int(seconds * RATE)) / RATE
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return (noise(seconds, dbfs, seed) * env).astype(np.int16)


def run(det, pcm, chunk=160):
    events = []
    for i in range(0, len(pcm), chunk):
        events += det.feed(pcm[i : i + chunk])
        if det.done:
            break
    return events


def test_end_of_speech_after_silence():
    pcm = np.concatenate([noise(0.5, -60), speechlike(2.0), noise(3.0, -60)])
    det = EndOfSpeechDetector(silence_end_seconds=1.0)
    assert run(det, pcm) == [EosEvent.SPEECH_START, EosEvent.END_OF_SPEECH]
    assert det.speech_start == pytest.approx(0.5 * RATE, abs=0.06 * RATE)
    assert det.speech_end == pytest.approx(2.5 * RATE, abs=0.1 * RATE)
    assert det.samples == pytest.approx(det.speech_end + 1.0 * RATE, abs=160)


def test_noisy_line_still_ends():
    pcm = np.concatenate([noise(0.5, -38), speechlike(1.5, -15), noise(3.0, -38, seed=5)])
    det = EndOfSpeechDetector(silence_end_seconds=1.0)
    assert run(det, pcm) == [EosEvent.SPEECH_START, EosEvent.END_OF_SPEECH]


def test_no_speech_timeout_and_click_is_not_speech():
    pcm = noise(6.0, -60)
    pcm[8000:8040] = 20000  # a 5 ms click
    det = EndOfSpeechDetector(start_timeout=3.0)
    assert run(det, pcm) == [EosEvent.NO_SPEECH]
    assert det.samples == 3 * RATE and det.speech_start is None


def test_max_duration_while_talking():
    det = EndOfSpeechDetector(max_seconds=2.0)
    assert run(det, speechlike(5.0)) == [EosEvent.SPEECH_START, EosEvent.MAX_DURATION]
    assert det.samples == 2 * RATE and det.speech_end == 2 * RATE
    assert det.feed(speechlike(1.0)) == []


def test_chunking_independent():
    pcm = np.concatenate([noise(0.3, -60), speechlike(1.0), noise(2.0, -60)])
    results = set()
    for chunk in (80, 160, 333, 4000):
        det = EndOfSpeechDetector(silence_end_seconds=0.8)
        run(det, pcm, chunk)
        results.add((det.result, det.speech_start, det.speech_end))
    assert len(results) == 1


def test_real_speech_is_detected_and_ends():
    files = sorted(glob.glob(str(SHARED / "voice_data/audio/librispeech_test-other/*/*.wav")))[:5]
    assert files, f"no speech under {SHARED}/voice_data: the shared data set must sit beside the repository"
    for f in files:
        _, x = wavfile.read(f)
        pcm = np.concatenate([noise(0.5, -65), x.astype(np.int16), noise(3.0, -65)])
        det = EndOfSpeechDetector(max_seconds=60, silence_end_seconds=1.5)
        events = run(det, pcm)
        assert events[0] is EosEvent.SPEECH_START, f
        assert events[-1] is EosEvent.END_OF_SPEECH, f
        assert det.speech_end <= 0.5 * RATE + len(x) + 0.1 * RATE


def test_collect_max_digits():
    c = DigitCollector(4, first_timeout=5, inter_digit_timeout=3, now=0.0)
    assert c.on_digit("1", 1.0) is None
    assert c.get_timer() == 4.0
    assert c.on_digit("2", 2.0) is None
    assert c.get_timer() == 5.0


def test_collect_reasons():
    c = DigitCollector(4, 5, 3, now=0.0)
    c.on_digit("1", 1.0)
    c.on_digit("2", 1.5)
    c.on_digit("3", 1.6)
    assert c.on_digit("4", 1.7) == CollectResult("1234", CollectReason.MAX)
    assert c.get_timer() is None

    c = DigitCollector(10, 5, 3, terminator="#", now=0.0)
    c.on_digit("1", 1.0)
    assert c.on_digit("#", 2.0) == CollectResult("1", CollectReason.TERMINATOR)

    c = DigitCollector(10, 5, 3, terminator="#*", now=0.0)
    assert c.on_digit("*", 1.0) == CollectResult("", CollectReason.TERMINATOR)

    c = DigitCollector(10, 5, 3, terminator=None, now=0.0)
    assert c.on_digit("#", 1.0) is None and c.digits == "#"

    c = DigitCollector(10, 5, 3, now=0.0)
    assert c.handle_timer(4.9) is None
    assert c.handle_timer(5.0) == CollectResult("", CollectReason.TIMEOUT)

    c = DigitCollector(10, 5, 3, now=0.0)
    c.on_digit("7", 4.0)
    assert c.handle_timer(6.9) is None
    assert c.handle_timer(7.0) == CollectResult("7", CollectReason.TIMEOUT)
    # a digit arriving after the deadline (timer not yet run) does not count
    c = DigitCollector(10, 5, 3, now=0.0)
    assert c.on_digit("1", 5.5) == CollectResult("", CollectReason.TIMEOUT)


def test_collect_validation():
    with pytest.raises(ValueError):
        DigitCollector(0, 1, 1)
