"""Who is calling: signed session cookies for desktops and supervisors, bearer tokens for the admin API,
origin checks against cross-site requests, and a per-address limit on login failures.

The cookie is ``base64url(json).base64url(hmac_sha256)``, HttpOnly and SameSite=Strict; no server-side session
table is needed, but logging out revokes the session id in memory until it expires. Everything here is sans-IO
(``now`` passed in) except the aiohttp helpers at the bottom.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import deque
from dataclasses import asdict, dataclass
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "cs_session"
Role = Literal["agent", "supervisor", "admin"]


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    role: Role
    agent_id: str | None
    """The routing engine's id of the agent (None for an admin-token session)."""
    db_agent_id: str | None
    name: str
    expires: float

    @property
    def supervisor(self) -> bool:
        return self.role in ("supervisor", "admin")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret needs at least 16 bytes")
        self._key = hashlib.sha256(b"contact-server session v1" + secret).digest()
        self._revoked: dict[str, float] = {}

    def issue(self, *, role: Role, agent_id: str | None, db_agent_id: str | None, name: str, now: float,
              ttl: float) -> tuple[Session, str]:
        session = Session(secrets.token_urlsafe(12), role, agent_id, db_agent_id, name, now + ttl)
        body = _b64(json.dumps(asdict(session), separators=(",", ":")).encode())
        return session, body + "." + _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def verify(self, token: str | None, now: float) -> Session | None:
        """The session in ``token``, or None when it is missing, forged, expired or revoked."""
        if not token or token.count(".") != 1 or len(token) > 4096:
            return None
        body, sig = token.split(".")
        try:
            expected = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(sig)):
                return None
            session = Session(**json.loads(_unb64(body)))
        except (ValueError, TypeError):
            return None
        if session.expires <= now or session.sid in self._revoked:
            return None
        return session

    def revoke(self, session: Session, now: float) -> None:
        self._revoked[session.sid] = session.expires
        for sid, exp in list(self._revoked.items()):
            if exp <= now:
                del self._revoked[sid]


class LoginLimiter:
    """At most ``max_failures`` failed logins per address in ``window`` seconds; after that the address is told
    to wait (429) until the oldest failure leaves the window. A success does not erase failures: an attacker
    who knows one password cannot use it to keep guessing others."""

    def __init__(self, max_failures: int = 5, window: float = 300.0, max_addresses: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        q = self._trim(key, now)
        if len(q) < self.max_failures:
            return 0.0
        return max(0.0, q[0] + self.window - now)

    def failed(self, key: str, now: float) -> None:
        if key not in self._failures and len(self._failures) >= self.max_addresses:
            for k in list(self._failures)[: self.max_addresses // 10]:   # oldest inserted first
                del self._failures[k]
        self._failures.setdefault(key, deque()).append(now)


def tokens_equal(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; no configured token never matches."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def normalise_origin(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return None
    default = 443 if scheme == "https" else 80
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def request_origin(request: web.Request) -> str | None:
    """The Origin header, or the origin of the Referer when a browser left Origin out."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return normalise_origin(origin)
    referer = request.headers.get("Referer")
    return normalise_origin(referer) if referer else None


def origin_allowed(request: web.Request, allowed: frozenset[str]) -> bool:
    origin = request_origin(request)
    if origin is None:
        return False
    if allowed:
        return origin in allowed
    return origin == normalise_origin(f"{request.scheme}://{request.host}")
