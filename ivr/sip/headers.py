"""SIP exceptions, header-name canonicalisation and the ordered case-insensitive header multi-map.

Lexical helpers (quote-aware splitting, parameter parsing) live here too because every header value
parser in ``uri.py`` and ``message.py`` needs them and they must agree on quoting rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ivr.errors import IvrError

__all__ = [
    "SipError",
    "RemoteProtocolError",
    "LocalProtocolError",
    "Headers",
    "canonical_name",
    "COMPACT_FORMS",
    "LIST_HEADERS",
]


class SipError(IvrError):
    """Root of the SIP package's exceptions."""


class RemoteProtocolError(SipError):
    """The peer sent something that violates SIP.

    ``status`` is the response to send (400, 413, 416, 505, ...) or None when the message must be dropped
    silently (a bad response, binary junk). ``request`` is a partial request (start line and the headers
    that could be read, top Via parseable) when one could be recovered, so the caller can build the error
    response with ``make_response(err.request, err.status, err.reason)``.
    """

    def __init__(self, reason: str, status: int | None = 400, request: object | None = None):
        super().__init__(reason if status is None else f"{status} {reason}")
        self.reason = reason
        self.status = status
        self.request = request


class LocalProtocolError(SipError):
    """We tried to build or send something that is not valid SIP: a bug in the caller, fix the call site."""


TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
    "Event", "Expires", "From", "History-Info", "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards",
    "Min-Expires", "Min-SE", "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity",
    "P-Charging-Vector", "P-Access-Network-Info", "Path", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By",
    "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route",
    "RSeq", "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
    "Session-Expires", "Subject", "Subscription-State", "Supported", "Timestamp", "To", "Unsupported",
    "User-Agent", "Via", "Warning", "WWW-Authenticate", "Diversion", "Remote-Party-ID",
]

_CANON: dict[str, str] = {n.lower(): n for n in _KNOWN}
_CANON.update(COMPACT_FORMS)

# Headers whose values are comma-separated lists (RFC 3261 7.3.1): get_all() splits them.
LIST_HEADERS = frozenset(
    n.lower()
    for n in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language", "Error-Info",
        "History-Info", "In-Reply-To", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
        "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Require", "Route", "Security-Client",
        "Security-Server", "Security-Verify", "Service-Route", "Supported", "Unsupported", "Via", "Warning",
        "Diversion",
    )
)


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() alone accepts superscripts that int() rejects."""
    return text.isascii() and text.isdigit()


def canonical_name(name: str) -> str:
    """Long canonical spelling for known headers (compact forms expanded); unknown names unchanged."""
    return _CANON.get(name.lower(), name)


def _key(name: str) -> str:
    return _CANON.get(name.lower(), name).lower()


def split_quoted(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings and <...>; pieces are not stripped."""
    if '"' not in value and "<" not in value:
        return value.split(sep)
    parts: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif in_angle:
            if c == ">":
                in_angle = False
        elif c == "<":
            in_angle = True
        elif c == sep:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value into stripped, non-empty elements."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    return [p for p in (s.strip() for s in split_quoted(value, ",")) if p]


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted string opening at ``text[start]``; return (unescaped content, index after it)."""
    end = text.find('"', start + 1)
    if end >= 0 and "\\" not in text[start + 1 : end]:
        return text[start + 1 : end], end + 1
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise RemoteProtocolError("Unterminated quoted string")


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PARAM_VALUE_RE = re.compile(r"[^\s;,\"<>]+")


def parse_params(pieces: Iterable[str], what: str) -> dict[str, str | None]:
    """Parse ``name[=value]`` header parameters (names lowercased, quoted values kept with their quotes)."""
    params: dict[str, str | None] = {}
    for piece in pieces:
        name, eq, val = piece.partition("=")
        name = name.strip()
        if not name or TOKEN_RE.fullmatch(name) is None:
            raise RemoteProtocolError(f"Malformed parameter in {what}")
        if eq:
            val = val.strip()
            if val.startswith('"'):
                _, end = read_quoted(val, 0)
                if end != len(val):
                    raise RemoteProtocolError(f"Malformed parameter value in {what}")
            elif _PARAM_VALUE_RE.fullmatch(val) is None:
                raise RemoteProtocolError(f"Malformed parameter value in {what}")
            params[name.lower()] = val
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


class Headers:
    """Ordered, case-insensitive multi-map of header fields; names kept in canonical long form."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self._items: list[tuple[str, str, str]] = [
            (_key(n), canonical_name(n), v) for n, v in items
        ]

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        return h

    def raw_values(self, name: str) -> list[str]:
        """Every field value of ``name`` exactly as received (one per header line, no list splitting)."""
        k = _key(name)
        return [v for key, _, v in self._items if key == k]

    def get(self, name: str, default: str | None = None) -> str | None:
        k = _key(name)
        for key, _, v in self._items:
            if key == k:
                if k in LIST_HEADERS and "," in v:
                    parts = split_list(v)
                    return parts[0] if parts else ""
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        k = _key(name)
        if k in LIST_HEADERS:
            out: list[str] = []
            for key, _, v in self._items:
                if key == k:
                    out.extend(split_list(v))
            return out
        return [v for key, _, v in self._items if key == k]

    def set(self, name: str, value: str) -> None:
        k = _key(name)
        entry = (k, canonical_name(name), value)
        for i, item in enumerate(self._items):
            if item[0] == k:
                self._items[i] = entry
                self._items[i + 1 :] = [it for it in self._items[i + 1 :] if it[0] != k]
                return
        self._items.append(entry)

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Append a value; with ``first`` it goes before the existing values of that name (new top Via)."""
        entry = (_key(name), canonical_name(name), value)
        if not first:
            self._items.append(entry)
            return
        k = entry[0]
        for i, item in enumerate(self._items):
            if item[0] == k:
                self._items.insert(i, entry)
                return
        self._items.insert(0, entry)

    def remove(self, name: str) -> None:
        k = _key(name)
        self._items = [it for it in self._items if it[0] != k]

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._items))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        k = _key(name)
        return any(key == k for key, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((n, v) for _, n, v in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({[(n, v) for _, n, v in self._items]!r})"
