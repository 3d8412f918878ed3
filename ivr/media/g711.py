"""G.711 mu-law (PCMU) and A-law (PCMA) through lookup tables built once at import.

The tables are computed with the arithmetic of the ITU-T G.191 reference code (``g711.c`` of the Software Tool
Library), vectorised over all 65536 input values, so that every sample is byte-identical to the ITU
implementation: negative samples use the one's complement as G.191 does. Per packet the work is one
``np.take`` (no Python loop, no ``audioop``, which Python 3.13 removed).

Encode tables are indexed by the int16 sample reinterpreted as uint16 (``pcm.view(np.uint16)``): one gather,
no sign fix-up. Transcoding between the laws goes through the linear value (decode, then encode).
"""

from __future__ import annotations

import enum

import numpy as np


def _bit_length(v: np.ndarray) -> np.ndarray:
    return np.searchsorted(1 << np.arange(16), v, side="right")


def _build_ulaw_encode() -> np.ndarray:
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    segno = 1 + _bit_length(absno >> 6)
    high = 8 - segno
    low = 15 - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    return code.astype(np.uint8)


def _build_alaw_encode() -> np.ndarray:
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    ix = np.where(x < 0, (~x) >> 4, x >> 4)
    bits = _bit_length(ix)
    iexp = bits - 4
    mant = (ix >> np.maximum(bits - 5, 0)) - 16
    code = np.where(ix > 15, mant + (iexp << 4), ix)
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _build_ulaw_decode() -> np.ndarray:
    b = np.arange(256, dtype=np.int32)
    sign = np.where(b < 0x80, -1, 1)
    m = (~b) & 0xFF
    exponent = (m >> 4) & 0x07
    segment = exponent + 1
    mantissa = m & 0x0F
    step = 4 << segment
    return (sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)).astype(np.int16)


def _build_alaw_decode() -> np.ndarray:
    b = np.arange(256, dtype=np.int32)
    ix = (b ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    mant = np.where(iexp > 0, mant + 16, mant)
    mant = (mant << 4) + 8
    mant = np.where(iexp > 1, mant << np.maximum(iexp - 1, 0), mant)
    return np.where(b > 127, mant, -mant).astype(np.int16)


ULAW_ENCODE: np.ndarray = _build_ulaw_encode()
ALAW_ENCODE: np.ndarray = _build_alaw_encode()
ULAW_DECODE: np.ndarray = _build_ulaw_decode()
ALAW_DECODE: np.ndarray = _build_alaw_decode()
ULAW_TO_ALAW: np.ndarray = ALAW_ENCODE[ULAW_DECODE.view(np.uint16)]
ALAW_TO_ULAW: np.ndarray = ULAW_ENCODE[ALAW_DECODE.view(np.uint16)]
for _t in (ULAW_ENCODE, ALAW_ENCODE, ULAW_DECODE, ALAW_DECODE, ULAW_TO_ALAW, ALAW_TO_ULAW):
    _t.flags.writeable = False


class Codec(enum.Enum):
    """Audio codecs the server speaks; the value is the static RTP payload type (RFC 3551)."""

    PCMU = 0
    PCMA = 8

    @property
    def static_payload_type(self) -> int:
        return self.value

    @property
    def encode_table(self) -> np.ndarray:
        return ULAW_ENCODE if self is Codec.PCMU else ALAW_ENCODE

    @property
    def decode_table(self) -> np.ndarray:
        return ULAW_DECODE if self is Codec.PCMU else ALAW_DECODE

    @property
    def silence_byte(self) -> int:
        return int(self.encode_table[0])

    @classmethod
    def from_name(cls, name: str) -> Codec | None:
        try:
            return cls[name.upper()]
        except KeyError:
            return None


def _as_int16(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        raise TypeError(f"G.711 encodes int16 samples, got {pcm.dtype}: convert with np.clip(...).astype(np.int16)")
    return pcm


def encode(pcm: np.ndarray, codec: Codec) -> bytes:
    return codec.encode_table[_as_int16(pcm).view(np.uint16)].tobytes()


def encode_into(pcm: np.ndarray, codec: Codec, out: np.ndarray) -> None:
    """Encode into a preallocated uint8 array (the send path's packet buffer): no allocation per packet."""
    np.take(codec.encode_table, _as_int16(pcm).view(np.uint16), out=out)


def decode(payload: bytes | bytearray | memoryview | np.ndarray, codec: Codec) -> np.ndarray:
    return codec.decode_table[np.frombuffer(payload, dtype=np.uint8)]


def transcode(payload: bytes, source: Codec, target: Codec) -> bytes:
    if source is target:
        return bytes(payload)
    table = ULAW_TO_ALAW if source is Codec.PCMU else ALAW_TO_ULAW
    return table[np.frombuffer(payload, dtype=np.uint8)].tobytes()


def ulaw_encode(pcm: np.ndarray) -> bytes:
    return encode(pcm, Codec.PCMU)


def alaw_encode(pcm: np.ndarray) -> bytes:
    return encode(pcm, Codec.PCMA)


def ulaw_decode(payload: bytes) -> np.ndarray:
    return decode(payload, Codec.PCMU)


def alaw_decode(payload: bytes) -> np.ndarray:
    return decode(payload, Codec.PCMA)


def ulaw_to_alaw(payload: bytes) -> bytes:
    return transcode(payload, Codec.PCMU, Codec.PCMA)


def alaw_to_ulaw(payload: bytes) -> bytes:
    return transcode(payload, Codec.PCMA, Codec.PCMU)
