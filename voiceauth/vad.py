"""Voice activity detection shared by the quality checks and the GE2E preprocessing.

webrtcvad works on 10/20/30 ms frames of 16-bit PCM at 8/16/32/48 kHz; the loop is per frame
(33 iterations a second), never per sample.
"""

from __future__ import annotations

import numpy as np
import webrtcvad

from .channel import as_float32
from .errors import AudioError

_VAD_RATES = (8000, 16000, 32000, 48000)


def speech_frames(audio: np.ndarray, rate: int, frame_ms: int = 30, aggressiveness: int = 3) -> np.ndarray:
    """One boolean per complete frame: True where webrtcvad hears speech."""
    if rate not in _VAD_RATES:
        raise AudioError(f"VAD needs a sample rate in {_VAD_RATES}, got {rate}; resample first")
    if frame_ms not in (10, 20, 30):
        raise AudioError(f"VAD frame must be 10, 20 or 30 ms, got {frame_ms}")
    a = as_float32(audio)
    n = rate * frame_ms // 1000
    frames = len(a) // n
    if frames == 0:
        return np.zeros(0, dtype=bool)
    pcm = (np.clip(a[: frames * n], -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()
    vad = webrtcvad.Vad(aggressiveness)
    step = 2 * n
    return np.fromiter(
        (vad.is_speech(pcm[i * step : (i + 1) * step], rate) for i in range(frames)),
        dtype=bool,
        count=frames,
    )


def smooth_mask(flags: np.ndarray, width: int = 8, max_silence: int = 6) -> np.ndarray:
    """Moving-average then dilate, as GE2E was trained with (short pauses stay, long silences go)."""
    if flags.size == 0:
        return flags
    kernel = np.ones(width) / width
    padded = np.concatenate((np.zeros((width - 1) // 2), flags.astype(float), np.zeros(width // 2)))
    mask = np.round(np.convolve(padded, kernel, mode="valid")).astype(bool)
    grow = max_silence + 1
    # binary dilation with a centred structuring element of size `grow`
    conv = np.convolve(mask.astype(int), np.ones(grow, dtype=int), mode="full")
    start = (grow - 1) // 2 + (0 if grow % 2 else 0)
    return conv[grow - 1 - start : grow - 1 - start + mask.size] > 0


def trim_long_silences(audio: np.ndarray, rate: int, frame_ms: int = 30) -> np.ndarray:
    """Drop silences longer than ~200 ms; returns the input unchanged if no speech is found."""
    a = as_float32(audio)
    flags = speech_frames(a, rate, frame_ms)
    if not flags.any():
        return a
    n = rate * frame_ms // 1000
    keep = np.repeat(smooth_mask(flags), n)
    out = a[: keep.size][keep]
    return out if out.size else a
