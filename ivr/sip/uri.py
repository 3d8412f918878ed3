"""SIP/SIPS/tel URIs (RFC 3261 19.1, RFC 3966), name-addr values and Via header values.

Users, passwords, URI parameters and URI headers are stored unescaped and re-escaped on output, so
``sip:%75ser@h`` and ``sip:user@h`` compare equal (RFC 3261 19.1.4). IPv6 hosts are stored without
brackets so they can go straight to a socket; ``__str__`` adds the brackets back. URIs of other schemes
(``http:``, ``urn:``, ``isbn:``) are kept opaque: ``host`` holds everything after the colon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from .headers import (
    is_digits,
    TOKEN_RE,
    RemoteProtocolError,
    format_params,
    parse_params,
    quote_string,
    read_quoted,
    split_quoted,
)

__all__ = ["SipUri", "NameAddr", "Via"]

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_BAD_URI_CHARS_RE = re.compile(r"[\s<>\"]")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOSTPORT_RE = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9\-.]+))(?::(\d{1,5}))?")
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+")

_USER_SAFE = "!*'()&=+$,;?/"
_PASSWORD_SAFE = "!*'()&=+$,"
_PARAM_SAFE = "!*'()[]/:&+$"
_HEADER_SAFE = "!*'()[]/?:+$"


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    if _BAD_ESCAPE_RE.search(text):
        raise RemoteProtocolError("Malformed escape in URI")
    return unquote(text, errors="surrogateescape")


def _escape(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogateescape")


def _host_str(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parse_port(text: str) -> int:
    port = int(text)
    if port > 65535:
        raise RemoteProtocolError("Port out of range")
    return port


def _parse_uri_params(pieces: list[str]) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for piece in pieces:
        if not piece:
            raise RemoteProtocolError("Empty URI parameter")
        name, eq, val = piece.partition("=")
        if not name:
            raise RemoteProtocolError("Malformed URI parameter")
        params[_unescape(name).lower()] = _unescape(val) if eq else None
    return params


@dataclass(slots=True)
class SipUri:
    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        if not colon or _SCHEME_RE.fullmatch(scheme) is None:
            raise RemoteProtocolError("Malformed URI")
        if not rest or _BAD_URI_CHARS_RE.search(rest):
            raise RemoteProtocolError("Malformed URI")
        scheme = scheme.lower()
        if scheme in ("sip", "sips"):
            return cls._parse_sip(scheme, rest)
        if scheme == "tel":
            number, *pieces = rest.split(";")
            if _TEL_RE.fullmatch(number) is None:
                raise RemoteProtocolError("Malformed tel URI")
            return cls(scheme, number, None, "", None, _parse_uri_params(pieces))
        return cls(scheme, None, None, rest)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str) -> SipUri:
        user = password = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            u, colon, pw = userinfo.partition(":")
            if not u:
                raise RemoteProtocolError("Empty user in SIP URI")
            user = _unescape(u)
            password = _unescape(pw) if colon else None
        headers: dict[str, str] = {}
        rest, q, hdrs = rest.partition("?")
        if q:
            for h in hdrs.split("&"):
                hn, eq, hv = h.partition("=")
                if not hn or not eq:
                    raise RemoteProtocolError("Malformed URI header")
                headers[_unescape(hn)] = _unescape(hv)
        hostport, *pieces = rest.split(";")
        m = _HOSTPORT_RE.fullmatch(hostport)
        if m is None:
            raise RemoteProtocolError("Malformed host in SIP URI")
        host = m.group(1) or m.group(2)
        port = _parse_port(m.group(3)) if m.group(3) else None
        return cls(scheme, user, password, host, port, _parse_uri_params(pieces), headers)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return "tel:" + (self.user or "") + self._params_str()
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.host}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                out.append(":" + _escape(self.password, _PASSWORD_SAFE))
            out.append("@")
        out.append(_host_str(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(self._params_str())
        if self.headers:
            out.append(
                "?"
                + "&".join(
                    f"{_escape(k, _HEADER_SAFE)}={_escape(v, _HEADER_SAFE)}" for k, v in self.headers.items()
                )
            )
        return "".join(out)

    def _params_str(self) -> str:
        return "".join(
            f";{_escape(k, _PARAM_SAFE)}" if v is None else f";{_escape(k, _PARAM_SAFE)}={_escape(v, _PARAM_SAFE)}"
            for k, v in self.params.items()
        )


_DISPLAY_TOKENS_RE = re.compile(rf"{TOKEN_RE.pattern}(?:[ \t]+{TOKEN_RE.pattern})*")


@dataclass(slots=True)
class NameAddr:
    """``[display] <uri> *(;param)``: From, To, Contact, Route, P-Asserted-Identity values."""

    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        s = text.strip()
        display: str | None = None
        if s.startswith('"'):
            display, end = read_quoted(s, 0)
            s = s[end:].lstrip()
            if not s.startswith("<"):
                raise RemoteProtocolError("Display name not followed by <URI>")
            lt = 0
        else:
            lt = s.find("<")
        if lt >= 0:
            if lt > 0:
                disp = s[:lt].rstrip()
                if disp:
                    if _DISPLAY_TOKENS_RE.fullmatch(disp) is None:
                        raise RemoteProtocolError("Invalid display name")
                    display = disp
            gt = s.find(">", lt)
            if gt < 0:
                raise RemoteProtocolError("Unterminated <URI>")
            uri = SipUri.parse(s[lt + 1 : gt])
            rest = s[gt + 1 :].lstrip()
        else:
            uri_text, semi, rest = s.partition(";")
            if "?" in uri_text or "," in uri_text:
                raise RemoteProtocolError("URI with '?' or ',' must be enclosed in <>")
            uri = SipUri.parse(uri_text.rstrip())
            rest = semi + rest
        if not rest:
            return cls(display, uri)
        if not rest.startswith(";"):
            raise RemoteProtocolError("Junk after URI")
        return cls(display, uri, parse_params(split_quoted(rest[1:], ";"), "address"))

    def __str__(self) -> str:
        disp = quote_string(self.display) + " " if self.display else ""
        return f"{disp}<{self.uri}>{format_params(self.params)}"


_VIA_RE = re.compile(
    rf"\s*({TOKEN_RE.pattern})\s*/\s*({TOKEN_RE.pattern})\s*/\s*({TOKEN_RE.pattern})\s+"
    r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9\-.]+))(?:\s*:\s*(\d{1,5}))?\s*"
)


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def rport(self) -> int | bool | None:
        """None when absent, True when present without a value (a request asking for it), else the port."""
        if "rport" not in self.params:
            return None
        v = self.params["rport"]
        if v is None:
            return True
        return int(v) if is_digits(v) and len(v) <= 5 else None

    @classmethod
    def parse(cls, value: str, strict: bool = True) -> Via:
        """``strict=False`` accepts other protocol versions: enough to route an error response back."""
        sent, *pieces = split_quoted(value, ";")
        m = _VIA_RE.fullmatch(sent)
        if m is None:
            raise RemoteProtocolError("Malformed Via header")
        if strict and (m.group(1).upper() != "SIP" or m.group(2) != "2.0"):
            raise RemoteProtocolError("Unsupported protocol in Via")
        port = _parse_port(m.group(6)) if m.group(6) else None
        params = parse_params(pieces, "Via") if pieces else {}
        rport = params.get("rport")
        if rport is not None and (not is_digits(rport) or len(rport) > 5 or int(rport) > 65535):
            raise RemoteProtocolError("Malformed rport in Via")
        return cls(m.group(3).upper(), m.group(4) or m.group(5), port, params)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {_host_str(self.host)}{port}{format_params(self.params)}"
