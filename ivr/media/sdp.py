"""SDP (RFC 4566) for audio calls, and the RFC 3264 offer/answer model on top of it.

Only what a voice server needs is modelled (origin, connection, media lines, attributes); other lines are
kept verbatim so that a parsed description serialises back without loss. Negotiation picks the offerer's
preferred common codec (offer order), keeps the offerer's payload type numbers (static or dynamic), and
honours ptime and direction attributes, including RFC 2543 hold (c=0.0.0.0).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field

from ivr.media.errors import NoAudioStream, NoCommonCodec, OfferRejected, SdpError
from ivr.media.g711 import Codec

_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 9: ("G722", 8000),
           18: ("G729", 8000), 13: ("CN", 8000)}
_RTP_PROTOS = {"RTP/AVP", "RTP/AVPF"}
DEFAULT_PTIME = 20


class Direction(enum.Enum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def reverse(self) -> Direction:
        """The direction seen from the other end."""
        return {Direction.SENDONLY: Direction.RECVONLY, Direction.RECVONLY: Direction.SENDONLY}.get(self, self)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE


@dataclass
class Origin:
    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (f"{self.username} {self.session_id} {self.session_version} {self.nettype} {self.addrtype} "
                f"{self.address}")


@dataclass
class Connection:
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @property
    def is_hold(self) -> bool:
        return self.address in ("0.0.0.0", "::")


@dataclass(frozen=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1


def _attr_str(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for k, v in self.attributes:
            if k == name:
                return v if v is not None else ""
        return None

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        maps: dict[int, RtpMap] = {}
        for k, v in self.attributes:
            if k != "rtpmap" or not v:
                continue
            try:
                pt_s, enc = v.split(None, 1)
                parts = enc.strip().split("/")
                maps[int(pt_s)] = RtpMap(int(pt_s), parts[0], int(parts[1]) if len(parts) > 1 else 8000,
                                         int(parts[2]) if len(parts) > 2 else 1)
            except ValueError:
                raise SdpError(f"invalid a=rtpmap:{v} (expected 'PT NAME/RATE')") from None
        return maps

    def rtpmap(self, pt: int) -> RtpMap | None:
        """The payload's mapping, falling back to the static RFC 3551 table when there is no rtpmap."""
        m = self.rtpmaps.get(pt)
        if m is None and pt in _STATIC:
            name, rate = _STATIC[pt]
            m = RtpMap(pt, name, rate)
        return m

    @property
    def direction(self) -> Direction | None:
        for k, _ in self.attributes:
            try:
                return Direction(k)
            except ValueError:
                continue
        return None

    @property
    def ptime(self) -> int | None:
        return _ptime(self.attribute("ptime"))

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}"]
        out += [line for line in self.other_lines if line.startswith("i=")]
        if self.connection:
            out.append(f"c={self.connection}")
        out += [line for line in self.other_lines if not line.startswith("i=")]
        out += [_attr_str(k, v) for k, v in self.attributes]
        return out


def _ptime(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        p = round(float(value))
    except ValueError:
        raise SdpError(f"invalid a=ptime:{value} (expected milliseconds)") from None
    return p if p > 0 else None


@dataclass
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: list[str] = field(default_factory=lambda: ["0 0"])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)
    version: int = 0

    def attribute(self, name: str) -> str | None:
        for k, v in self.attributes:
            if k == name:
                return v if v is not None else ""
        return None

    @property
    def direction(self) -> Direction | None:
        for k, _ in self.attributes:
            try:
                return Direction(k)
            except ValueError:
                continue
        return None

    def __bytes__(self) -> bytes:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        lines += [line for line in self.other_lines if line[0] in "iuepb"]
        if self.connection:
            lines.append(f"c={self.connection}")
        lines += [f"t={t}" for t in self.times]
        lines += [line for line in self.other_lines if line[0] not in "iuepb"]
        lines += [_attr_str(k, v) for k, v in self.attributes]
        for m in self.media:
            lines += m.lines()
        return ("\r\n".join(lines) + "\r\n").encode()


def _parse_connection(value: str, lineno: int) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"SDP line {lineno}: c={value!r} must be 'IN IP4 address'")
    return Connection(parts[0], parts[1], parts[2].split("/")[0])


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raises ``SdpError`` with the offending line number on malformed input."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP body is not UTF-8 text") from None
    else:
        text = data
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].startswith("v="):
        raise SdpError("SDP must start with a v= line")
    sd: SessionDescription | None = None
    origin: Origin | None = None
    session_attrs: list[tuple[str, str | None]] = []
    session_conn: Connection | None = None
    session_name = "-"
    times: list[str] = []
    other: list[str] = []
    media: list[MediaDescription] = []
    version = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"SDP line {lineno}: {line[:40]!r} is not 'x=value'")
        kind, value = line[0], line[2:].strip()
        current = media[-1] if media else None
        if kind == "v":
            if value != "0":
                raise SdpError(f"SDP line {lineno}: unsupported version v={value}")
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError(f"SDP line {lineno}: o= needs 6 fields, got {len(parts)}")
            origin = Origin(*parts)
        elif kind == "s" and current is None:
            session_name = value or " "
        elif kind == "c":
            conn = _parse_connection(value, lineno)
            if current is None:
                session_conn = conn
            else:
                current.connection = conn
        elif kind == "t" and current is None:
            times.append(value)
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpError(f"SDP line {lineno}: m= needs 'media port proto formats'")
            port_s, _, count_s = parts[1].partition("/")
            try:
                port = int(port_s)
                count = int(count_s) if count_s else None
            except ValueError:
                raise SdpError(f"SDP line {lineno}: invalid port {parts[1]!r}") from None
            if not 0 <= port <= 65535:
                raise SdpError(f"SDP line {lineno}: port {port} out of range")
            media.append(MediaDescription(parts[0], port, parts[2], parts[3:], count))
        elif kind == "a":
            name, sep, val = value.partition(":")
            attr = (name.strip(), val.strip() if sep else None)
            (current.attributes if current else session_attrs).append(attr)
        else:
            (current.other_lines if current else other).append(f"{kind}={value}")
    if origin is None:
        raise SdpError("SDP has no o= line")
    sd = SessionDescription(origin, session_name, session_conn, times or ["0 0"], session_attrs, media, other,
                            version)
    return sd


# ---------------------------------------------------------------------------------------------------------------
# Offer / answer


@dataclass(frozen=True)
class NegotiatedMedia:
    """The outcome of one offer/answer exchange, from this server's point of view."""

    remote_ip: str
    remote_port: int
    codec: Codec
    payload_type: int
    dtmf_payload_type: int | None
    ptime: int
    direction: Direction
    """What this server does: SENDRECV normally, RECVONLY while the peer holds the call."""
    remote_hold: bool = False

    @property
    def remote(self) -> tuple[str, int]:
        return (self.remote_ip, self.remote_port)

    @property
    def samples_per_packet(self) -> int:
        return 8 * self.ptime


def _new_id() -> str:
    return str(secrets.randbelow(2**62) + 1)


def _addrtype(ip: str) -> str:
    return "IP6" if ":" in ip else "IP4"


def _codec_of(md: MediaDescription, pt: int, names: tuple[str, ...]) -> Codec | None:
    m = md.rtpmap(pt)
    if m is None or m.clock_rate != 8000 or m.channels != 1 or m.encoding.upper() not in names:
        return None
    return Codec.from_name(m.encoding)


def _dtmf_pt(md: MediaDescription) -> int | None:
    for f in md.formats:
        if f.isdigit():
            m = md.rtpmaps.get(int(f))
            if m and m.encoding.lower() == "telephone-event" and m.clock_rate == 8000:
                return int(f)
    return None


def _usable_audio(sd: SessionDescription) -> int | None:
    for i, m in enumerate(sd.media):
        if m.media == "audio" and m.port != 0 and m.proto.upper() in _RTP_PROTOS:
            return i
    return None


def _clamp_ptime(p: int | None) -> int:
    if p is None:
        return DEFAULT_PTIME
    return min(60, max(10, round(p / 10) * 10))


def answer_offer(offer: bytes | SessionDescription, local_ip: str, local_port: int,
                 supported: tuple[str, ...] = ("PCMU", "PCMA"), session_id: str | int | None = None,
                 session_version: str | int | None = None, direction: Direction = Direction.SENDRECV,
                 dtmf: bool = True) -> tuple[bytes, NegotiatedMedia]:
    """Answer an offer: the first usable audio stream gets the offerer's preferred codec among ``supported``;
    every other stream is rejected with port 0. ``direction`` is what we want locally (SENDONLY to put the
    peer on hold). Raises ``NoAudioStream`` / ``NoCommonCodec`` (both ``OfferRejected``: answer 488) and
    ``SdpError`` on malformed SDP (answer 400)."""
    sd = offer if isinstance(offer, SessionDescription) else parse_sdp(offer)
    idx = _usable_audio(sd)
    if idx is None:
        raise NoAudioStream("the offer has no active RTP/AVP audio stream")
    md = sd.media[idx]
    names = tuple(n.upper() for n in supported)
    chosen: tuple[int, Codec] | None = None
    for f in md.formats:
        if f.isdigit() and (codec := _codec_of(md, int(f), names)) is not None:
            chosen = (int(f), codec)
            break
    if chosen is None:
        raise NoCommonCodec(f"none of the offered payload types {' '.join(md.formats)} is one of "
                            f"{', '.join(supported)}")
    pt, codec = chosen
    dtmf_pt = _dtmf_pt(md) if dtmf else None
    conn = md.connection or sd.connection
    if conn is None:
        raise SdpError("the offer's audio stream has no connection address (c= line)")
    offered_dir = md.direction or sd.direction or Direction.SENDRECV
    remote_hold = conn.is_hold or not offered_dir.receives
    ours = offered_dir.reverse()
    ours = Direction.of(ours.sends and direction.sends and not conn.is_hold,
                        ours.receives and direction.receives)
    ptime = md.ptime or _ptime(sd.attribute("ptime"))
    rtpmap = md.rtpmap(pt)
    assert rtpmap is not None
    formats = [str(pt)] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
    attrs: list[tuple[str, str | None]] = [("rtpmap", f"{pt} {rtpmap.encoding}/8000")]
    if dtmf_pt is not None:
        attrs += [("rtpmap", f"{dtmf_pt} telephone-event/8000"), ("fmtp", f"{dtmf_pt} 0-16")]
    if ptime is not None:
        attrs.append(("ptime", str(_clamp_ptime(ptime))))
    attrs.append((ours.value, None))
    at = _addrtype(local_ip)
    media = []
    for i, m in enumerate(sd.media):
        if i == idx:
            media.append(MediaDescription("audio", local_port, md.proto, formats, attributes=attrs))
        else:
            media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1] or ["0"]))
    answer = SessionDescription(
        Origin("-", str(session_id or _new_id()), str(session_version or 1), "IN", at, local_ip),
        "-", Connection("IN", at, local_ip), ["0 0"], [], media)
    neg = NegotiatedMedia(conn.address, md.port, codec, pt, dtmf_pt, _clamp_ptime(ptime), ours, remote_hold)
    return bytes(answer), neg


def make_offer(local_ip: str, local_port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
               dtmf_pt: int | None = 101, direction: Direction = Direction.SENDRECV, ptime: int | None = 20,
               session_id: str | int | None = None, session_version: str | int | None = None) -> bytes:
    """An offer for an outgoing call (agent leg): codecs in preference order, static payload types."""
    formats: list[str] = []
    attrs: list[tuple[str, str | None]] = []
    for name in codecs:
        codec = Codec.from_name(name)
        if codec is None:
            raise SdpError(f"cannot offer codec {name!r}: supported are {', '.join(c.name for c in Codec)}")
        formats.append(str(codec.value))
        attrs.append(("rtpmap", f"{codec.value} {codec.name}/8000"))
    if not formats:
        raise SdpError("an offer needs at least one codec")
    if dtmf_pt is not None:
        if not 96 <= dtmf_pt <= 127:
            raise SdpError(f"telephone-event payload type {dtmf_pt} must be dynamic (96-127)")
        formats.append(str(dtmf_pt))
        attrs += [("rtpmap", f"{dtmf_pt} telephone-event/8000"), ("fmtp", f"{dtmf_pt} 0-16")]
    if ptime:
        attrs.append(("ptime", str(ptime)))
    attrs.append((direction.value, None))
    at = _addrtype(local_ip)
    sd = SessionDescription(
        Origin("-", str(session_id or _new_id()), str(session_version or 1), "IN", at, local_ip),
        "-", Connection("IN", at, local_ip), ["0 0"], [],
        [MediaDescription("audio", local_port, "RTP/AVP", formats, attributes=attrs)])
    return bytes(sd)


def parse_answer(offer: bytes | SessionDescription, answer: bytes | SessionDescription) -> NegotiatedMedia:
    """What an answer to our ``make_offer`` agreed on. Raises ``OfferRejected`` when the peer refused audio
    or answered with a codec we did not offer, ``SdpError`` when the answer is malformed."""
    osd = offer if isinstance(offer, SessionDescription) else parse_sdp(offer)
    asd = answer if isinstance(answer, SessionDescription) else parse_sdp(answer)
    oidx = _usable_audio(osd)
    if oidx is None:
        raise SdpError("our offer has no audio stream")
    if oidx >= len(asd.media) or asd.media[oidx].media != "audio":
        raise SdpError("the answer does not match the offer's media lines (RFC 3264 section 6)")
    om, am = osd.media[oidx], asd.media[oidx]
    if am.port == 0:
        raise NoAudioStream("the peer rejected the audio stream (port 0)")
    offered_names = tuple(m.encoding.upper() for f in om.formats if f.isdigit() and (m := om.rtpmap(int(f))))
    chosen: tuple[int, Codec] | None = None
    for f in am.formats:
        if f.isdigit() and (codec := _codec_of(am, int(f), offered_names)) is not None:
            chosen = (int(f), codec)
            break
    if chosen is None:
        raise NoCommonCodec(f"the answer's payload types {' '.join(am.formats)} match none we offered")
    conn = am.connection or asd.connection
    if conn is None:
        raise SdpError("the answer's audio stream has no connection address (c= line)")
    dtmf_pt = _dtmf_pt(am) if _dtmf_pt(om) is not None else None
    answered_dir = am.direction or asd.direction or Direction.SENDRECV
    offered_dir = om.direction or osd.direction or Direction.SENDRECV
    ours = answered_dir.reverse()
    ours = Direction.of(ours.sends and offered_dir.sends and not conn.is_hold, ours.receives and offered_dir.receives)
    ptime = am.ptime or _ptime(asd.attribute("ptime")) or om.ptime
    remote_hold = conn.is_hold or not answered_dir.receives
    return NegotiatedMedia(conn.address, am.port, chosen[1], chosen[0], dtmf_pt, _clamp_ptime(ptime), ours,
                           remote_hold)


__all__ = ["Connection", "Direction", "MediaDescription", "NegotiatedMedia", "NoAudioStream", "NoCommonCodec",
           "OfferRejected", "Origin", "RtpMap", "SdpError", "SessionDescription", "answer_offer", "make_offer",
           "parse_answer", "parse_sdp"]
