import os

import numpy as np
import pytest
from scipy.io import wavfile

from ivr.media.audio import PromptCache, load_prompt, load_wav_8k, resample, write_wav
from ivr.media.errors import AudioFileError


def tone(rate, freq=440.0, seconds=1.0, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def encode(x, dtype):
    if dtype == np.uint8:
        return np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8)
    if dtype == np.int16:
        return np.round(x * 32767).astype(np.int16)
    if dtype == np.int32:
        return np.round(x * 2147483647).astype(np.int32)
    return x.astype(dtype)


def dominant_freq(x, rate=8000):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32])
def test_load_any_rate_and_width(tmp_path, rate, dtype):
    path = tmp_path / "p.wav"
    wavfile.write(path, rate, encode(tone(rate), dtype))
    pcm = load_wav_8k(path)
    assert pcm.dtype == np.int16
    assert abs(len(pcm) - 8000) <= 2
    assert abs(dominant_freq(pcm) - 440) < 5
    rms = np.sqrt(np.mean((pcm[400:-400].astype(float) / 32768) ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.03)


def test_24_bit_wav(tmp_path):
    # scipy writes no 24-bit files: build one by hand
    x = encode(tone(16000), np.int32)
    raw = b"".join(int(v).to_bytes(4, "little", signed=True)[1:] for v in x)
    import wave

    with wave.open(str(tmp_path / "p24.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(16000)
        w.writeframes(raw)
    pcm = load_wav_8k(tmp_path / "p24.wav")
    assert abs(dominant_freq(pcm) - 440) < 5 and abs(len(pcm) - 8000) <= 2


def test_stereo_downmix(tmp_path):
    left = tone(48000, 440)
    stereo = np.stack([left, -left], axis=1)  # cancels out when mixed
    wavfile.write(tmp_path / "s.wav", 48000, encode(stereo, np.int16))
    assert np.abs(load_wav_8k(tmp_path / "s.wav")).max() <= 2
    stereo = np.stack([left, left * 0], axis=1)
    wavfile.write(tmp_path / "s2.wav", 48000, encode(stereo, np.int16))
    pcm = load_wav_8k(tmp_path / "s2.wav")
    assert np.abs(pcm).max() == pytest.approx(0.25 * 32768, rel=0.03)


def test_resampling_removes_content_above_nyquist(tmp_path):
    x = tone(48000, 6000)  # above 4 kHz: must not alias to 2 kHz
    wavfile.write(tmp_path / "hf.wav", 48000, encode(x, np.int16))
    pcm = load_wav_8k(tmp_path / "hf.wav")
    assert np.sqrt(np.mean(pcm.astype(float) ** 2)) < 50


def test_resample_function_int16():
    x = np.round(tone(16000) * 32767).astype(np.int16)
    y = resample(x, 16000, 8000)
    assert y.dtype == np.int16 and len(y) == 8000
    assert np.array_equal(resample(x, 16000, 16000), x)


def test_cache_converts_once_and_reloads_on_change(tmp_path):
    path = tmp_path / "c.wav"
    wavfile.write(path, 16000, encode(tone(16000), np.int16))
    cache = PromptCache()
    a = cache.load(path)
    b = cache.load(str(path))
    assert a is b and cache.conversions == 1
    assert not a.flags.writeable
    wavfile.write(path, 16000, encode(tone(16000, seconds=0.5), np.int16))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    c = cache.load(path)
    assert cache.conversions == 2 and len(c) == 4000
    assert load_prompt(path) is load_prompt(path)


def test_errors(tmp_path):
    with pytest.raises(AudioFileError, match="does not exist"):
        load_prompt(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(AudioFileError, match="cannot read"):
        load_wav_8k(tmp_path / "bad.wav")


def test_write_wav_roundtrip(tmp_path):
    pcm = (np.arange(800) - 400).astype(np.int16)
    write_wav(tmp_path / "sub" / "o.wav", pcm)
    rate, back = wavfile.read(tmp_path / "sub" / "o.wav")
    assert rate == 8000 and np.array_equal(back, pcm)
    stereo = np.stack([pcm, -pcm], axis=1)
    write_wav(tmp_path / "st.wav", stereo, 16000)
    rate, back = wavfile.read(tmp_path / "st.wav")
    assert rate == 16000 and back.shape == (800, 2)
