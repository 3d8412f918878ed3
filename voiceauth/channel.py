"""Telephone channel helpers: resampling to the model rate and G.711 simulation.

Private G.711 tables (ITU-T G.711, the classic Sun reference algorithm) so voiceauth never
imports the media stack; they are vectorised with lookup tables, no per-sample loops.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import soxr

from .errors import AudioError

__all__ = [
    "Codec",
    "as_float32",
    "resample",
    "ulaw_encode",
    "ulaw_decode",
    "alaw_encode",
    "alaw_decode",
    "simulate_g711",
    "pcm16_bytes",
]


class Codec(str, Enum):
    NONE = "none"
    ULAW = "ulaw"
    ALAW = "alaw"


def as_float32(audio: np.ndarray) -> np.ndarray:
    """Return mono float32 in [-1, 1]; int16 PCM is scaled, anything else is rejected clearly."""
    a = np.asarray(audio)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise AudioError(f"expected mono audio (1-D array), got shape {a.shape}; mix down to mono first")
    if a.dtype == np.int16:
        return (a.astype(np.float32) / 32768.0)
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32, copy=False)
        if not np.all(np.isfinite(a)):
            raise AudioError("audio contains NaN or infinite samples")
        return a
    raise AudioError(f"unsupported audio dtype {a.dtype}; pass float32 in [-1, 1] or int16 PCM")


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resample once with soxr (VHQ polyphase); telephone audio is upsampled 8 -> 16 kHz here."""
    a = as_float32(audio)
    if rate <= 0 or target_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {rate} -> {target_rate}")
    if rate == target_rate or a.size == 0:
        return a
    return soxr.resample(a, rate, target_rate, quality="VHQ").astype(np.float32, copy=False)


def pcm16_bytes(audio: np.ndarray) -> bytes:
    a = as_float32(audio)
    return (np.clip(a, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()


# --- mu-law -----------------------------------------------------------------------------
_BIAS = 0x84


def _ulaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit, as in the reference coder
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + (_BIAS >> 2)
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def _ulaw_decode_table() -> np.ndarray:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)


# --- A-law ------------------------------------------------------------------------------
def _alaw_encode_table() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    sign = np.where(pcm >= 0, 0x80, 0)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    mag = np.minimum(mag, 0x0FFF)
    seg = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    seg = np.clip(seg, 0, 7)
    mantissa = np.where(seg == 0, mag >> 1, mag >> seg) & 0x0F
    code = sign | (seg << 4) | mantissa
    return (code ^ 0x55).astype(np.uint8)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a >> 4) & 0x07
    mantissa = a & 0x0F
    mag = np.where(seg == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


_ULAW_ENC = _ulaw_encode_table()
_ULAW_DEC = _ulaw_decode_table()
_ALAW_ENC = _alaw_encode_table()
_ALAW_DEC = _alaw_decode_table()


def _to_int16(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio)
    if a.dtype == np.int16:
        return a
    return (np.clip(as_float32(a), -1.0, 32767 / 32768) * 32768.0).round().astype(np.int16)


def ulaw_encode(audio: np.ndarray) -> bytes:
    return _ULAW_ENC[_to_int16(audio).astype(np.int32) + 32768].tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """Decode to float32 in [-1, 1]."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)].astype(np.float32) / 32768.0


def alaw_encode(audio: np.ndarray) -> bytes:
    return _ALAW_ENC[_to_int16(audio).astype(np.int32) + 32768].tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)].astype(np.float32) / 32768.0


def simulate_g711(audio: np.ndarray, rate: int, codec: Codec | str = Codec.ULAW) -> np.ndarray:
    """Put audio through a phone line: to 8 kHz, G.711 encode/decode; returns float32 at 8 kHz."""
    codec = Codec(codec)
    a = resample(audio, rate, 8000)
    if codec is Codec.ULAW:
        return ulaw_decode(ulaw_encode(a))
    if codec is Codec.ALAW:
        return alaw_decode(alaw_encode(a))
    return a
