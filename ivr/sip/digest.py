"""HTTP Digest authentication for SIP (RFC 3261 22, RFC 2617, RFC 7616, RFC 8760).

Server nonces are self-validating: a timestamp and random bytes signed with an HMAC of a server secret,
so any worker holding the secret can check them without shared state. The only state is a bounded LRU of
the highest nonce-count seen per nonce, which rejects replays; nonces that fell out of it are treated as
stale, so the client fetches a fresh one instead of a replay slipping through after eviction.
Passwords are never needed on the server: user stores keep HA1 = H(username:realm:password) only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .headers import RemoteProtocolError, read_quoted, split_quoted
from .message import SipRequest, SipUri

__all__ = [
    "AuthResult",
    "DigestAuthenticator",
    "DigestError",
    "ha1",
    "digest_response",
    "parse_auth_header",
    "SUPPORTED_ALGORITHMS",
]

_HASHES: dict[str, Callable[..., Any]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
SUPPORTED_ALGORITHMS = tuple(_HASHES)


class DigestError(ValueError):
    """A challenge or credential this module cannot work with (unknown algorithm, missing field)."""


def _base_algorithm(algorithm: str) -> tuple[str, bool]:
    alg = algorithm.upper()
    sess = alg.endswith("-SESS")
    base = alg[:-5] if sess else alg
    if base not in _HASHES:
        raise DigestError(f"Unsupported digest algorithm {algorithm!r}; use one of {', '.join(_HASHES)}")
    return base, sess


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password): what a user store keeps instead of the password."""
    base, _ = _base_algorithm(algorithm)
    return _h(base, f"{username}:{realm}:{password}")


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """``Digest a=b, c="d"`` -> ("Digest", {"a": "b", "c": "d"}); names lowercased, quotes removed."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if not scheme:
        raise DigestError("Empty authentication header")
    params: dict[str, str] = {}
    for piece in split_quoted(rest, ","):
        piece = piece.strip()
        if not piece:
            continue
        name, eq, val = piece.partition("=")
        if not eq:
            raise DigestError(f"Malformed authentication parameter {piece[:40]!r}")
        val = val.strip()
        if val.startswith('"'):
            try:
                val, end = read_quoted(val, 0)
            except RemoteProtocolError as exc:
                raise DigestError("Unterminated quoted string in authentication header") from exc
        params[name.strip().lower()] = val
    return scheme, params


@dataclass(slots=True, frozen=True)
class AuthResult:
    ok: bool
    username: str | None
    stale: bool = False
    reason: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DigestAuthenticator:
    """Server side: issue challenges, verify Authorization / Proxy-Authorization values."""

    _NONCE_LEN = 8 + 8 + 16  # timestamp, random, truncated HMAC-SHA256

    def __init__(
        self,
        realm: str,
        secret: bytes,
        nonce_ttl: float = 300,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        max_tracked_nonces: int = 65536,
    ):
        if len(secret) < 16:
            raise ValueError("Digest nonce secret must be at least 16 random bytes")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = tuple(_base_algorithm(a)[0] for a in algorithms)
        if not self.algorithms:
            raise ValueError("At least one digest algorithm is required")
        self._secret = secret
        self._opaque = _b64(hmac.new(secret, b"opaque:" + realm.encode(), hashlib.sha256).digest()[:12])
        self._max_tracked = max_tracked_nonces
        self._nc: OrderedDict[str, int] = OrderedDict()
        self._evicted_upto = -1  # nonces issued at or before this time and no longer tracked are stale

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload + self.realm.encode(), hashlib.sha256).digest()[:16]

    def make_nonce(self, now: float) -> str:
        payload = struct.pack(">Q", int(now * 1000)) + secrets.token_bytes(8)
        return _b64(payload + self._sign(payload))

    def _nonce_time(self, nonce: str) -> float | None:
        try:
            raw = _unb64(nonce)
        except (ValueError, TypeError):
            return None
        if len(raw) != self._NONCE_LEN:
            return None
        payload, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._sign(payload)):
            return None
        return struct.unpack(">Q", payload[:8])[0] / 1000

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm, strongest first."""
        nonce = self.make_nonce(now)
        tail = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", nonce="{nonce}", opaque="{self._opaque}", algorithm={alg}, '
            f'qop="auth"{tail}'
            for alg in self.algorithms
        ]

    def verify(
        self,
        request: SipRequest,
        header_value: str,
        ha1_lookup: Callable[[str, str, str], str | None],
        now: float,
    ) -> AuthResult:
        try:
            scheme, p = parse_auth_header(header_value)
        except DigestError as exc:
            return AuthResult(False, None, reason=str(exc))
        if scheme.lower() != "digest":
            return AuthResult(False, None, reason=f"Unsupported authentication scheme {scheme[:20]!r}")
        username = p.get("username")
        if not username:
            return AuthResult(False, None, reason="Missing username")
        missing = [k for k in ("realm", "nonce", "uri", "response") if k not in p]
        if missing:
            return AuthResult(False, username, reason=f"Missing {', '.join(missing)}")
        if p["realm"] != self.realm:
            return AuthResult(False, username, reason="Wrong realm")
        try:
            algorithm, sess = _base_algorithm(p.get("algorithm", "MD5"))
        except DigestError:
            return AuthResult(False, username, reason="Unsupported algorithm")
        if sess or algorithm not in self.algorithms:
            return AuthResult(False, username, reason="Algorithm not offered")
        if p.get("qop", "").lower() != "auth":
            return AuthResult(False, username, reason="qop=auth required")
        nc_text, cnonce = p.get("nc", ""), p.get("cnonce", "")
        if len(nc_text) != 8 or not cnonce:
            return AuthResult(False, username, reason="Missing nc or cnonce")
        try:
            nc = int(nc_text, 16)
        except ValueError:
            return AuthResult(False, username, reason="Malformed nc")
        nonce = p["nonce"]
        issued = self._nonce_time(nonce)
        if issued is None:
            return AuthResult(False, username, reason="Invalid nonce")
        if not self._uri_matches(p["uri"], request):
            return AuthResult(False, username, reason="Digest URI does not match the Request-URI")
        stored = ha1_lookup(username, self.realm, algorithm)
        if stored is None:
            return AuthResult(False, username, reason="Unknown user")
        ha2 = _h(algorithm, f"{request.method}:{p['uri']}")
        expected = _h(algorithm, f"{stored.lower()}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        if not hmac.compare_digest(expected, p["response"].lower()):
            return AuthResult(False, username, reason="Wrong credentials")
        if now - issued > self.nonce_ttl or issued > now + 5:
            return AuthResult(False, username, stale=True, reason="Nonce expired")
        last = self._nc.get(nonce)
        if last is None:
            if issued <= self._evicted_upto:
                return AuthResult(False, username, stale=True, reason="Nonce no longer tracked")
            last = 0
        if nc <= last:
            return AuthResult(False, username, reason="Nonce count replayed")
        self._track(nonce, nc, issued)
        return AuthResult(True, username)

    def _track(self, nonce: str, nc: int, issued: float) -> None:
        self._nc[nonce] = nc
        self._nc.move_to_end(nonce)
        while len(self._nc) > self._max_tracked:
            old, _ = self._nc.popitem(last=False)
            t = self._nonce_time(old)
            if t is not None and t > self._evicted_upto:
                self._evicted_upto = t

    @staticmethod
    def _uri_matches(digest_uri: str, request: SipRequest) -> bool:
        if digest_uri == str(request.uri):
            return True
        try:
            return SipUri.parse(digest_uri) == request.uri
        except RemoteProtocolError:
            return False


def digest_response(
    challenge: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """Client side: the Authorization / Proxy-Authorization value answering one challenge value."""
    scheme, p = parse_auth_header(challenge)
    if scheme.lower() != "digest":
        raise DigestError(f"Cannot answer a {scheme!r} challenge: only Digest is supported")
    if "nonce" not in p or "realm" not in p:
        raise DigestError("Digest challenge without realm or nonce")
    algorithm_text = p.get("algorithm", "MD5")
    algorithm, sess = _base_algorithm(algorithm_text)
    realm, nonce = p["realm"], p["nonce"]
    offered = [q.strip().lower() for q in p.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in offered else ("auth-int" if "auth-int" in offered else None)
    if offered and qop is None:
        raise DigestError(f"Unsupported qop {p['qop']!r}")
    if qop or sess:
        cnonce = cnonce or secrets.token_hex(16)
    a1 = _h(algorithm, f"{username}:{realm}:{password}")
    if sess:
        a1 = _h(algorithm, f"{a1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + _HASHES[algorithm](body).hexdigest()
    ha2 = _h(algorithm, a2)
    nc_text = f"{nc:08x}"
    if qop:
        response = _h(algorithm, f"{a1}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")
    else:
        response = _h(algorithm, f"{a1}:{nonce}:{ha2}")
    parts = [
        f'username="{_q(username)}"', f'realm="{_q(realm)}"', f'nonce="{_q(nonce)}"', f'uri="{_q(uri)}"',
        f'response="{response}"', f"algorithm={algorithm_text}",
    ]
    if qop:
        parts += [f'cnonce="{_q(cnonce or "")}"', f"qop={qop}", f"nc={nc_text}"]
    if "opaque" in p:
        parts.append(f'opaque="{_q(p["opaque"])}"')
    return "Digest " + ", ".join(parts)


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
