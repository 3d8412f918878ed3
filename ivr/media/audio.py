"""Audio files for prompts and recordings: any PCM WAV in, 8 kHz mono int16 out.

Prompts are loaded on demand by the IVR, so conversion (downmix, resampling with soxr's high-quality
polyphase filter) happens once per file version: results are cached by (path, mtime, size) and returned
read-only so that no caller can corrupt the shared copy.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soxr
from scipy.io import wavfile

from ivr.media.errors import AudioFileError

log = logging.getLogger(__name__)

RATE = 8000


def to_float(samples: np.ndarray) -> np.ndarray:
    """Samples of any WAV dtype as float64 in [-1, 1)."""
    kind = samples.dtype
    if kind == np.uint8:
        return (samples.astype(np.float64) - 128.0) / 128.0
    if kind == np.int16:
        return samples.astype(np.float64) / 32768.0
    if kind == np.int32:  # scipy returns 24-bit data left-justified in int32
        return samples.astype(np.float64) / 2147483648.0
    if kind in (np.float32, np.float64):
        return samples.astype(np.float64)
    raise AudioFileError(f"unsupported sample type {kind}: use 8/16/24/32-bit PCM or float WAV")


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def resample(pcm: np.ndarray, from_rate: int, to_rate: int = RATE) -> np.ndarray:
    """Resample int16 or float audio; int16 in, int16 out."""
    if from_rate <= 0 or to_rate <= 0:
        raise AudioFileError(f"invalid sample rates {from_rate} -> {to_rate}")
    was_int = pcm.dtype == np.int16
    x = to_float(pcm) if was_int else np.asarray(pcm, dtype=np.float64)
    if from_rate != to_rate and len(x):
        x = soxr.resample(x, from_rate, to_rate, quality="HQ")
    return to_int16(x) if was_int else x


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(float64 samples, shape (n,) or (n, channels), rate) of a WAV file."""
    try:
        rate, data = wavfile.read(os.fspath(path))
    except FileNotFoundError:
        raise AudioFileError(f"audio file {path} does not exist") from None
    except (ValueError, EOFError, OSError) as e:
        raise AudioFileError(f"cannot read {path} as WAV ({e}): convert it with "
                             f"'sox {path} -r 8000 -c 1 -b 16 out.wav'") from None
    return to_float(data), int(rate)


def load_wav_8k(path: str | os.PathLike) -> np.ndarray:
    """Read a WAV of any rate, width and channel count as 8 kHz mono int16 (uncached)."""
    x, rate = read_wav(path)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if rate != RATE and len(x):
        x = soxr.resample(x, rate, RATE, quality="HQ")
    return to_int16(x)


class PromptCache:
    """Converted prompts keyed by (path, mtime_ns, size): a file edited on disk is converted again."""

    def __init__(self, max_entries: int = 512):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.conversions = 0

    def load(self, path: str | os.PathLike) -> np.ndarray:
        p = Path(path).resolve()
        try:
            st = p.stat()
        except FileNotFoundError:
            raise AudioFileError(f"audio file {path} does not exist") from None
        key = (str(p), st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        pcm = load_wav_8k(p)
        pcm.flags.writeable = False
        with self._lock:
            self.conversions += 1
            for stale in [k for k in self._items if k[0] == key[0]]:
                del self._items[stale]
            self._items[key] = pcm
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        log.debug("converted prompt %s (%d samples)", p, len(pcm))
        return pcm

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_default_cache = PromptCache()


def load_prompt(path: str | os.PathLike) -> np.ndarray:
    """8 kHz mono int16 of a WAV file, converted once per file version (read-only array).

    Conversion reads the disk: from a coroutine call it through ``asyncio.to_thread`` the first time."""
    return _default_cache.load(path)


def write_wav(path: str | os.PathLike, pcm: np.ndarray, rate: int = RATE) -> None:
    """Write int16 audio, mono ``(n,)`` or multi-channel ``(n, channels)``, as a PCM WAV."""
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        pcm = to_int16(pcm)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(os.fspath(path), rate, pcm)
