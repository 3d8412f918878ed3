import warnings

import numpy as np
import pytest

from voiceauth.channel import (alaw_decode, alaw_encode, as_float32, resample, simulate_g711, ulaw_decode,
                               ulaw_encode)
from voiceauth.errors import AudioError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # reference G.711 coder of CPython (3.11)

ALL16 = np.arange(-32768, 32768, dtype=np.int16)


def test_ulaw_matches_reference_for_every_sample():
    assert ulaw_encode(ALL16) == audioop.lin2ulaw(ALL16.tobytes(), 2)
    ref = np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), dtype="<i2") / 32768.0
    assert np.array_equal(ulaw_decode(bytes(range(256))), ref.astype(np.float32))


def test_alaw_matches_reference_for_every_sample():
    assert alaw_encode(ALL16) == audioop.lin2alaw(ALL16.tobytes(), 2)
    ref = np.frombuffer(audioop.alaw2lin(bytes(range(256)), 2), dtype="<i2") / 32768.0
    assert np.array_equal(alaw_decode(bytes(range(256))), ref.astype(np.float32))


def test_resample_8k_to_16k_keeps_tone_and_level():
    t = np.arange(8000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    y = resample(x, 8000, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    spec = np.abs(np.fft.rfft(y[2000:14000] * np.hanning(12000)))
    peak_hz = np.argmax(spec) * 16000 / 12000
    assert abs(peak_hz - 1000) < 3
    assert abs(np.sqrt(np.mean(y[2000:14000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_g711_line_is_8k_and_close_to_input():
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for codec in ("ulaw", "alaw"):
        y = simulate_g711(x, 16000, codec)
        ref = resample(x, 16000, 8000)
        snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - y) ** 2))
        assert len(y) == 8000 and snr > 30


def test_bad_audio_is_rejected_clearly():
    with pytest.raises(AudioError, match="mono"):
        as_float32(np.zeros((100, 2), np.float32))
    with pytest.raises(AudioError, match="NaN"):
        as_float32(np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioError, match="dtype"):
        as_float32(np.zeros(10, np.int32))
