"""SIP message model (RFC 3261 section 7), parsing and serialisation.

Everything here is sans-IO: bytes in, objects out, and back. ``parse_message`` treats its input as one
datagram (a missing Content-Length means "the rest of the datagram"); stream transports frame first with
``ivr.sip.framing.StreamFramer``, which hands over exactly one message.

Public API (other modules rely on exactly these names):

    class SipError(Exception)                         # root of the package's exceptions
    class RemoteProtocolError(SipError)               # the peer sent something bad
        .status: int | None   # status to answer with (400, 413, 416, 505, ...) or None = drop silently
        .reason: str          # reason phrase, also usable in logs
        .request: SipRequest | None  # partial request (start line + readable headers) to answer with
    class LocalProtocolError(SipError)                # we tried to build/send something invalid

    class Headers                                      # ordered, case-insensitive multi-map
        Headers(items: Iterable[tuple[str, str]] = ())
        .get(name, default=None) -> str | None         # first value; compact forms accepted ("v" == "Via")
        .get_all(name) -> list[str]                    # every value, comma-separated lists split for
                                                        # list headers (Via, Route, Record-Route, Contact, Allow,
                                                        # Supported, Require, ...), respecting quotes and <...>
        .raw_values(name) -> list[str]                 # one value per header line, unsplit
        .set(name, value)                              # replace all values of name with one
        .add(name, value, first: bool = False)         # append (or prepend, for a new top Via)
        .remove(name)                                  # drop all values
        .__contains__(name), .__iter__() -> (canonical_name, value) pairs in order, .copy()
        names are stored in canonical long form ("Call-ID", "CSeq", "WWW-Authenticate", "Via") for output

    @dataclass class Via: transport, host, port: int|None, params: dict[str, str|None]
        .branch, .received, .rport (int|None or True when empty), __str__, parse(value) -> Via
    @dataclass class SipUri: scheme ("sip"/"sips"/"tel"), user: str|None, password, host, port: int|None,
        params: dict[str, str|None], headers: dict[str,str]; parse(text) -> SipUri; __str__
    @dataclass class NameAddr: display: str|None, uri: SipUri, params: dict (tag, expires, q, ...)
        .tag; parse(text) -> NameAddr; __str__  ("From", "To", "Contact", "Route", "P-Asserted-Identity")

    @dataclass class SipRequest:  method: str, uri: SipUri, headers: Headers, body: bytes = b"",
                                  version: str = "SIP/2.0"
    @dataclass class SipResponse: status: int, reason: str, headers: Headers, body: bytes = b"",
                                  version: str = "SIP/2.0"
    both have: __bytes__() (sets Content-Length from the body), .call_id, .cseq -> tuple[int, str],
        .vias -> list[Via], .from_ / .to -> NameAddr, .top_via -> Via, .content_type -> str|None

    parse_message(data: bytes, max_size=MAX_MESSAGE_SIZE, max_headers=MAX_HEADERS) -> SipRequest | SipResponse
        # raises RemoteProtocolError only
    make_response(request, status, reason=None, to_tag=None, headers=()) -> SipResponse
        # copies Via, From, To (+tag), Call-ID, CSeq per RFC 3261 8.2.6
    new_branch() -> str ("z9hG4bK" + random), new_tag() -> str, new_call_id(host) -> str
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from .headers import (
    is_digits,
    TOKEN_RE,
    Headers,
    LocalProtocolError,
    RemoteProtocolError,
    SipError,
    canonical_name,
)
from .uri import NameAddr, SipUri, Via

__all__ = [
    "SipError",
    "RemoteProtocolError",
    "LocalProtocolError",
    "Headers",
    "Via",
    "SipUri",
    "NameAddr",
    "SipRequest",
    "SipResponse",
    "parse_message",
    "make_response",
    "new_branch",
    "new_tag",
    "new_call_id",
    "reason_phrase",
    "MAX_MESSAGE_SIZE",
    "MAX_HEADERS",
    "SUPPORTED_URI_SCHEMES",
]

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 65535
MAX_HEADERS = 256
SUPPORTED_URI_SCHEMES = frozenset({"sip", "sips", "tel"})

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status) or REASONS.get(status // 100 * 100, "Unknown")


class _MessageMixin:
    __slots__ = ()
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return _parse_cseq(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        v = self.headers.get("Via")
        if v is None:
            raise RemoteProtocolError("Missing Via header")
        return Via.parse(v)

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("To") or "")

    @property
    def content_type(self) -> str | None:
        """Media type, lowercased, without parameters (``application/sdp``)."""
        v = self.headers.get("Content-Type")
        if v is None:
            return None
        return v.partition(";")[0].strip().lower()

    def _serialise(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            if "\n" in value or "\r" in value:
                raise LocalProtocolError(f"{name} header value contains a line break")
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body


@dataclass(slots=True)
class SipRequest(_MessageMixin):
    method: str
    uri: SipUri
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def __bytes__(self) -> bytes:
        return self._serialise(f"{self.method} {self.uri} {self.version}")


@dataclass(slots=True)
class SipResponse(_MessageMixin):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def __bytes__(self) -> bytes:
        if "\n" in self.reason or "\r" in self.reason:
            raise LocalProtocolError("Reason phrase contains a line break")
        return self._serialise(f"{self.version} {self.status} {self.reason}")


_CSEQ_RE = re.compile(rf"(\d+)\s+({TOKEN_RE.pattern})")
_VERSION_RE = re.compile(r"SIP/(\d+)\.(\d+)", re.IGNORECASE)
_STATUS_RE = re.compile(r"SIP/(\d+)\.(\d+) (\d{3})(?: (.*))?", re.IGNORECASE | re.DOTALL)
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type", "Expires")
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")


def _parse_cseq(value: str) -> tuple[int, str]:
    m = _CSEQ_RE.fullmatch(value.strip())
    if m is None:
        raise RemoteProtocolError("Malformed CSeq header")
    digits = m.group(1).lstrip("0")
    if len(digits) > 10 or int(digits or "0") >= 2**31:
        raise RemoteProtocolError("CSeq number out of range")
    return int(digits or "0"), m.group(2)


def parse_message(
    data: bytes, max_size: int = MAX_MESSAGE_SIZE, max_headers: int = MAX_HEADERS
) -> SipRequest | SipResponse:
    """Parse one datagram-framed SIP message. Only RemoteProtocolError ever escapes."""
    try:
        return _parse(data, max_size, max_headers)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # the contract: bad input never crashes the server
        log.warning("SIP parser bug on %d bytes: %r", len(data), exc)
        raise RemoteProtocolError("Unparseable message", None) from exc


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    m = _BLANK_LINE_RE.search(data)
    if m is None:
        return data, b""
    return data[: m.start()], data[m.end() :]


def _parse(data: bytes, max_size: int, max_headers: int) -> SipRequest | SipResponse:
    start = 0
    n = len(data)
    while start < n and data[start] in b"\r\n":
        start += 1
    if start == n:
        raise RemoteProtocolError("Empty message", None)
    if start:
        data = data[start:]
    head, rest = _split_head(data)
    too_large = len(data) > max_size
    if too_large and len(head) > max_size:
        raise RemoteProtocolError("Message Too Large", 413 if not data[:4].upper().startswith(b"SIP/") else None)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("Header is not valid UTF-8", None if data[:4].upper() == b"SIP/" else 400)
    lines = text.split("\n")
    start_line = lines[0].removesuffix("\r")
    is_response = start_line[:4].upper() == "SIP/"
    drop = None if is_response else 400
    if "\r" in start_line:
        raise RemoteProtocolError("Bare CR in start line", drop)

    method: str | None = None
    uri: SipUri | None = None
    error: RemoteProtocolError | None = None
    status = 0
    reason = ""
    version = "SIP/2.0"
    if is_response:
        m = _STATUS_RE.fullmatch(start_line)
        if m is None:
            raise RemoteProtocolError("Malformed status line", None)
        if (m.group(1), m.group(2)) != ("2", "0"):
            raise RemoteProtocolError("Unsupported SIP version", None)
        status = int(m.group(3))
        if not 100 <= status <= 699:
            raise RemoteProtocolError("Status code out of range", None)
        reason = m.group(4) or ""
    else:
        parts = start_line.split(" ")
        if len(parts) != 3 or not all(parts):
            error = RemoteProtocolError("Malformed request line")
            parts = start_line.split()
            if parts and TOKEN_RE.fullmatch(parts[0]):
                method = parts[0]
        else:
            m_text, uri_text, version = parts
            if TOKEN_RE.fullmatch(m_text) is None:
                raise RemoteProtocolError("Malformed method")
            method = m_text
            vm = _VERSION_RE.fullmatch(version)
            if vm is None:
                error = RemoteProtocolError("Malformed SIP version")
            elif (vm.group(1), vm.group(2)) != ("2", "0"):
                error = RemoteProtocolError("Version Not Supported", 505)
            else:
                version = "SIP/2.0"
            try:
                uri = _parse_request_uri(uri_text)
            except RemoteProtocolError as exc:
                error = error or exc
        if method is None:
            raise error or RemoteProtocolError("Malformed request line")

    headers = _parse_headers(lines, max_headers, drop)
    if error is None and "\x00" in text and re.search(r"(?<!\\)\x00", text):
        # only a quoted-pair may hold a NUL (RFC 4475 3.1.1.2); passed on it truncates C strings and PostgreSQL refuses it
        error = RemoteProtocolError("NUL byte in the start line or headers", drop)

    if error is None:
        try:
            _validate(headers, method, drop)
            body = _body(headers, rest, drop)
        except RemoteProtocolError as exc:
            error = exc
    if error is None and too_large:
        error = RemoteProtocolError("Message Too Large", drop and 413)
    if error is not None:
        if is_response:
            error.status = None
        else:
            error.request = _partial_request(method, uri, start_line, headers)
        raise error
    if is_response:
        return SipResponse(status, reason, headers, body, version)
    assert method is not None and uri is not None
    return SipRequest(method, uri, headers, body, version)


def _parse_request_uri(text: str) -> SipUri:
    if text.startswith("<"):
        raise RemoteProtocolError("Request-URI must not be enclosed in <>")
    scheme, colon, _ = text.partition(":")
    if colon and scheme.lower() not in SUPPORTED_URI_SCHEMES:
        SipUri.parse(text)
        raise RemoteProtocolError("Unsupported URI Scheme", 416)
    uri = SipUri.parse(text)
    if uri.headers:
        raise RemoteProtocolError("Request-URI must not contain headers")
    return uri


def _parse_headers(lines: list[str], max_headers: int, drop: int | None) -> Headers:
    items: list[tuple[str, str, str]] = []
    cur_name: str | None = None
    cur_value = ""
    for raw in lines[1:]:
        line = raw.removesuffix("\r")
        if "\r" in line:
            raise RemoteProtocolError("Bare CR in header", drop)
        if line[:1] in (" ", "\t"):
            if cur_name is None:
                raise RemoteProtocolError("Continuation line before the first header", drop)
            cur_value = f"{cur_value} {line.strip()}" if cur_value else line.strip()
            continue
        if cur_name is not None:
            items.append((cur_name.lower(), cur_name, cur_value))
        if not line:
            cur_name = None
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or TOKEN_RE.fullmatch(name) is None:
            raise RemoteProtocolError("Malformed header line", drop)
        cur_name = canonical_name(name)
        cur_value = value.strip()
        if len(items) >= max_headers:
            raise RemoteProtocolError("Too many headers", drop)
    if cur_name is not None:
        items.append((cur_name.lower(), cur_name, cur_value))
    return Headers._from_parsed(items)


def _validate(headers: Headers, method: str | None, drop: int | None) -> None:
    counts: dict[str, int] = {}
    for key, _, _ in headers._items:
        counts[key] = counts.get(key, 0) + 1
    for name in _MANDATORY:
        if name.lower() not in counts:
            raise RemoteProtocolError(f"Missing {name} header", drop)
    for name in _SINGLE:
        if counts.get(name.lower(), 0) > 1:
            raise RemoteProtocolError(f"Multiple {name} headers", drop)
    vias = headers.get_all("Via")
    if not vias:
        raise RemoteProtocolError("Empty Via header", drop)
    for v in vias:
        Via.parse(v)
    _, cseq_method = _parse_cseq(headers.get("CSeq") or "")
    if method is not None and cseq_method != method:
        raise RemoteProtocolError("CSeq method does not match the request method")
    if not (headers.get("Call-ID") or "").strip():
        raise RemoteProtocolError("Empty Call-ID header", drop)
    NameAddr.parse(headers.get("From") or "")
    NameAddr.parse(headers.get("To") or "")
    mf = headers.get("Max-Forwards")
    if mf is not None and (not is_digits(mf) or len(mf) > 10 or int(mf) > 255):
        raise RemoteProtocolError("Malformed Max-Forwards header", drop)
    exp = headers.get("Expires")
    if exp is not None and (not is_digits(exp) or len(exp) > 10 or int(exp) >= 2**32):
        raise RemoteProtocolError("Malformed Expires header", drop)
    date = headers.get("Date")
    if date is not None and not date.endswith(" GMT"):
        raise RemoteProtocolError("Date header must be in GMT", drop)
    for c in headers.get_all("Contact"):
        if c != "*":
            NameAddr.parse(c)


def _body(headers: Headers, rest: bytes, drop: int | None) -> bytes:
    cl = headers.get("Content-Length")
    if cl is None:
        return rest
    if not is_digits(cl) or len(cl) > 10:
        raise RemoteProtocolError("Malformed Content-Length header", drop)
    length = int(cl)
    if length > len(rest):
        raise RemoteProtocolError("Content-Length larger than the message body", drop)
    return rest[:length] if length < len(rest) else rest


def _partial_request(method: str | None, uri: SipUri | None, start_line: str, headers: Headers) -> SipRequest | None:
    if method is None:
        return None
    try:
        Via.parse(headers.get("Via") or "", strict=False)
    except RemoteProtocolError:
        return None
    if uri is None:
        uri = SipUri("", host=start_line)
    return SipRequest(method, uri, headers, b"")


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> SipResponse:
    """Build a response that copies Via, From, To (adding ``to_tag`` if To has none), Call-ID and CSeq."""
    if not 100 <= status <= 699:
        raise LocalProtocolError(f"Status {status} is not a SIP status code (100-699)")
    src = request.headers
    out = Headers()
    for v in src.raw_values("Via"):
        out.add("Via", v)
    for name in ("From", "To", "Call-ID", "CSeq"):
        v = src.get(name)
        if v is None:
            continue
        if name == "To" and to_tag and status > 100:
            try:
                has_tag = NameAddr.parse(v).tag is not None
            except RemoteProtocolError:
                has_tag = True
            if not has_tag:
                v = f"{v};tag={to_tag}"
        out.add(name, v)
    if status == 100 and "Timestamp" in src:
        out.add("Timestamp", src.get("Timestamp") or "")
    for name, value in headers:
        out.add(name, value)
    return SipResponse(status, reason if reason is not None else reason_phrase(status), out)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"
