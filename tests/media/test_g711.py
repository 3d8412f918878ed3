"""G.711 tables against a per-sample transcription of the ITU-T G.191 reference code (g711.c)."""

import numpy as np
import pytest

from ivr.media import g711
from ivr.media.g711 import Codec


def ref_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high = 0x0008 - segno
    low = 0x000F - ((absno >> segno) & 0x000F)
    out = (high << 4) | low
    if x >= 0:
        out |= 0x0080
    return out


def ref_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x0080
    return ix ^ 0x0055


def ref_ulaw_expand(b: int) -> int:
    sign = -1 if b < 0x80 else 1
    mantissa = (~b) & 0xFF
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def ref_alaw_expand(b: int) -> int:
    ix = (b ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if b > 127 else -mant


ALL = np.arange(-32768, 32768, dtype=np.int32)


def test_ulaw_encode_all_inputs():
    expected = bytes(ref_ulaw_compress(int(v)) for v in ALL)
    assert g711.ulaw_encode(ALL.astype(np.int16)) == expected


def test_alaw_encode_all_inputs():
    expected = bytes(ref_alaw_compress(int(v)) for v in ALL)
    assert g711.alaw_encode(ALL.astype(np.int16)) == expected


def test_decode_all_codes():
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tolist() == [ref_ulaw_expand(b) for b in range(256)]
    assert g711.alaw_decode(codes).tolist() == [ref_alaw_expand(b) for b in range(256)]


def test_known_values():
    assert g711.ulaw_encode(np.array([0], np.int16)) == b"\xff"
    assert g711.alaw_encode(np.array([0], np.int16)) == b"\xd5"
    assert g711.ulaw_encode(np.array([32767, -32768], np.int16)) == b"\x80\x00"
    assert g711.alaw_encode(np.array([32767, -32768], np.int16)) == b"\xaa\x2a"
    assert g711.ulaw_decode(b"\xff\x7f").tolist() == [0, 0]
    assert g711.alaw_decode(b"\xd5\x55").tolist() == [8, -8]


def test_reencode_is_identity_on_codes():
    codes = bytes(range(256))
    assert g711.ulaw_encode(g711.ulaw_decode(codes)) == bytes(b if b != 0x7F else 0xFF for b in codes)
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes


def test_transcode_matches_decode_then_encode():
    codes = bytes(range(256))
    assert g711.ulaw_to_alaw(codes) == g711.alaw_encode(g711.ulaw_decode(codes))
    assert g711.alaw_to_ulaw(codes) == g711.ulaw_encode(g711.alaw_decode(codes))
    assert g711.transcode(codes, Codec.PCMU, Codec.PCMU) == codes


def test_encode_into_preallocated():
    pcm = (np.sin(np.arange(160) / 5) * 10000).astype(np.int16)
    out = np.zeros(160, np.uint8)
    g711.encode_into(pcm, Codec.PCMA, out)
    assert out.tobytes() == g711.alaw_encode(pcm)


def test_rejects_float_input():
    with pytest.raises(TypeError, match="int16"):
        g711.ulaw_encode(np.zeros(4))


def test_codec_enum():
    assert Codec.PCMU.value == 0 and Codec.PCMA.value == 8
    assert Codec.from_name("pcma") is Codec.PCMA and Codec.from_name("G722") is None
    assert Codec.PCMU.silence_byte == 0xFF and Codec.PCMA.silence_byte == 0xD5
