import struct

import pytest

from ivr.media.errors import RtpError
from ivr.media.rtp import RtpInvalidPadding, RtpInvalidVersion, RtpPacket, RtpTruncated, is_rtcp


def test_roundtrip_plain():
    p = RtpPacket(payload_type=0, marker=True, sequence=65535, timestamp=0xFFFFFFF0, ssrc=0x12345678,
                  payload=b"\xff" * 160)
    data = bytes(p)
    assert data[:2] == b"\x80\x80"
    assert len(data) == 172
    assert RtpPacket.parse(data) == p


def test_roundtrip_csrc_extension_padding():
    p = RtpPacket(payload_type=101, sequence=7, timestamp=8, ssrc=9, payload=b"\x05\x8a\x03\x20",
                  csrc=(1, 2, 3), extension=True, extension_profile=0xBEDE, extension_data=b"\x10\xaa\x00\x00",
                  padding=4)
    data = bytes(p)
    assert len(data) == 12 + 12 + 4 + 4 + 4 + 4
    q = RtpPacket.parse(data)
    assert q == p
    assert q.payload == b"\x05\x8a\x03\x20"


def test_known_bytes():
    data = bytes.fromhex("80e1 0102 00000a00 deadbeef 0a0b0c0d".replace(" ", ""))
    p = RtpPacket.parse(data)
    assert (p.version, p.marker, p.payload_type, p.sequence, p.timestamp, p.ssrc) == (2, True, 97, 258, 2560,
                                                                                     0xDEADBEEF)
    assert p.payload == b"\x0a\x0b\x0c\x0d"


@pytest.mark.parametrize(
    "data, exc, message",
    [
        (b"", RtpTruncated, "RTP packet length is less than 12 bytes"),
        (b"\x80\x00\x00\x01\x00\x00\x00", RtpTruncated, "RTP packet length is less than 12 bytes"),
        (bytes([0x40]) + bytes(11), RtpInvalidVersion, "RTP packet has invalid version"),
        (bytes([0x82]) + bytes(11) + bytes(4), RtpTruncated, "RTP packet has truncated CSRC"),
        (bytes([0x90]) + bytes(11) + b"\xbe\xde", RtpTruncated,
         "RTP packet has truncated extension profile / length"),
        (bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), RtpTruncated,
         "RTP packet has truncated extension value"),
        (bytes([0xA0]) + bytes(11) + b"\x01\x02\x00", RtpInvalidPadding, "RTP packet padding length is invalid"),
        (bytes([0xA0]) + bytes(11) + b"\x01\x02\x09", RtpInvalidPadding, "RTP packet padding length is invalid"),
    ],
)
def test_invalid_packets(data, exc, message):
    with pytest.raises(exc) as info:
        RtpPacket.parse(data)
    assert str(info.value) == message
    assert isinstance(info.value, RtpError)


def test_rtcp_recognised():
    rr = struct.pack("!BBHI", 0x80, 201, 1, 1234)
    sr = struct.pack("!BBHI", 0x80, 200, 6, 1234) + bytes(20)
    assert is_rtcp(rr) and is_rtcp(sr)
    assert not is_rtcp(bytes(RtpPacket(payload_type=0, payload=b"x")))
    assert not is_rtcp(bytes(RtpPacket(payload_type=101, marker=True, payload=b"x")))
    assert not is_rtcp(b"\x80")
