"""RTP packets (RFC 3550 section 5.1): parse and serialise, nothing else.

RTCP is not implemented; ``is_rtcp`` lets the receive path recognise RTCP sent to the RTP port (RFC 5761
demultiplexing: second byte 192..223) and drop it without counting it as malformed.
Error messages follow aiortc's wording so that logs read the same as in other stacks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ivr.media.errors import RtpError

HEADER_LENGTH = 12
_HEADER = struct.Struct("!BBHII")


class RtpTruncated(RtpError):
    """The datagram ends before the header, CSRC list or extension it announces."""


class RtpInvalidVersion(RtpError):
    """The version field is not 2 (often STUN, ZRTP or garbage on the media port)."""


class RtpInvalidPadding(RtpError):
    """The padding count is zero or longer than the payload."""


def is_rtcp(data: bytes) -> bool:
    """True when a datagram on the RTP port is RTCP (SR 200, RR 201, SDES 202, BYE 203, APP 204, ...)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(slots=True)
class RtpPacket:
    payload_type: int = 0
    marker: bool = False
    sequence: int = 0
    timestamp: int = 0
    ssrc: int = 0
    payload: bytes = b""
    csrc: tuple[int, ...] = ()
    version: int = 2
    padding: int = 0
    """Number of padding bytes (0 = no padding); serialisation appends that many bytes."""
    extension: bool = False
    extension_profile: int = 0
    extension_data: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raises an ``RtpError`` subclass with a precise message when it is invalid."""
        n = len(data)
        if n < HEADER_LENGTH:
            raise RtpTruncated(f"RTP packet length is less than {HEADER_LENGTH} bytes")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        version = b0 >> 6
        if version != 2:
            raise RtpInvalidVersion("RTP packet has invalid version")
        cc = b0 & 0x0F
        pos = HEADER_LENGTH + 4 * cc
        if n < pos:
            raise RtpTruncated("RTP packet has truncated CSRC")
        csrc = struct.unpack_from(f"!{cc}I", data, HEADER_LENGTH) if cc else ()
        extension = bool(b0 & 0x10)
        ext_profile = 0
        ext_data = b""
        if extension:
            if n < pos + 4:
                raise RtpTruncated("RTP packet has truncated extension profile / length")
            ext_profile, ext_words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if n < pos + 4 * ext_words:
                raise RtpTruncated("RTP packet has truncated extension value")
            ext_data = bytes(data[pos : pos + 4 * ext_words])
            pos += 4 * ext_words
        end = n
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if not padding or padding > n - pos:
                raise RtpInvalidPadding("RTP packet padding length is invalid")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            marker=bool(b1 & 0x80),
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            csrc=tuple(csrc),
            version=version,
            padding=padding,
            extension=extension,
            extension_profile=ext_profile,
            extension_data=ext_data,
        )

    def __bytes__(self) -> bytes:
        if len(self.csrc) > 15:
            raise RtpError("an RTP packet carries at most 15 CSRC identifiers")
        if len(self.extension_data) % 4:
            raise RtpError("RTP header extension data must be a multiple of 4 bytes")
        b0 = (self.version << 6) | (0x20 if self.padding else 0) | (0x10 if self.extension else 0) | len(self.csrc)
        b1 = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        parts = [_HEADER.pack(b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension_data) // 4))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def pack_header_into(buf: bytearray, marker: bool, payload_type: int, sequence: int, timestamp: int, ssrc: int) -> None:
    """Write a 12-byte header (no CSRC, no extension) into ``buf`` in place: the send path reuses one buffer."""
    _HEADER.pack_into(buf, 0, 0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF,
                      timestamp & 0xFFFFFFFF, ssrc)
