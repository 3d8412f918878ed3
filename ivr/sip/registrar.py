"""Sans-IO SIP registrar (RFC 3261 section 10.3) with digest authentication and NAT-aware bindings.

Phones behind NAT register private Contact addresses; what the server can actually reach is the address
the REGISTER came from, so each binding keeps both and ``Binding.target`` picks the reachable one.
Consecutive authentication failures are counted per source IP so a shell can block brute-force callers.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from .digest import DigestAuthenticator
from .headers import RemoteProtocolError, is_digits
from .message import NameAddr, SipRequest, SipResponse, SipUri, make_response, new_tag

__all__ = ["UserStore", "Binding", "Registrar"]

log = logging.getLogger(__name__)

_CONNECTION_TRANSPORTS = frozenset({"TCP", "TLS", "WS", "WSS", "SCTP"})


class UserStore(Protocol):
    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """HA1 = H(username:realm:password) for ``algorithm`` ("MD5", "SHA-256"), None if unknown."""


@dataclass(slots=True)
class Binding:
    user: str
    contact: SipUri
    source: tuple[str, int]
    transport: str
    expires_at: float
    call_id: str
    cseq: int
    q: float | None = None
    instance: str | None = None

    @property
    def behind_nat(self) -> bool:
        """True when the Contact cannot be used as is: private/loopback IP that is not the source IP."""
        try:
            ip = ipaddress.ip_address(self.contact.host)
        except ValueError:
            return False
        if self.contact.host == self.source[0]:
            return self.contact.port not in (None, self.source[1]) and self.transport == "UDP"
        return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified

    @property
    def target(self) -> tuple[str, int]:
        """Where to send requests for this binding: the source on streams and behind NAT, else the Contact."""
        if self.transport in _CONNECTION_TRANSPORTS or self.behind_nat:
            return self.source
        default = 5061 if self.contact.scheme == "sips" else 5060
        return self.contact.host, self.contact.port or default

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


class Registrar:
    """Handle REGISTER requests; ``handle`` returns the response to send, ``lookup`` gives the bindings."""

    def __init__(
        self,
        authenticator: DigestAuthenticator,
        user_store: UserStore,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_tracked_sources: int = 65536,
    ):
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("Registrar expiries must satisfy 0 < min_expires <= default_expires <= max_expires")
        self.auth = authenticator
        self.users = user_store
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._max_sources = max_tracked_sources

    # -- queries -------------------------------------------------------------------------------------
    def lookup(self, user: str, now: float) -> list[Binding]:
        """Live bindings of ``user``, highest q first."""
        self._purge_user(user, now)
        found = list(self._bindings.get(user, {}).values())
        found.sort(key=lambda b: -(b.q if b.q is not None else 1.0))
        return found

    def purge(self, now: float) -> int:
        """Drop expired bindings; returns how many went."""
        return sum(self._purge_user(user, now) for user in list(self._bindings))

    def failures(self, source_ip: str) -> int:
        """Consecutive failed authentications from this IP (reset by a success)."""
        return self._failures.get(source_ip, 0)

    # -- REGISTER ------------------------------------------------------------------------------------
    def handle(self, request: SipRequest, source: tuple[str, int], transport: str, now: float) -> SipResponse:
        tag = new_tag()
        if request.method != "REGISTER":
            return make_response(request, 405, to_tag=tag, headers=[("Allow", "REGISTER")])
        credentials = request.headers.get("Authorization")
        if credentials is None:
            return self._challenge(request, tag, now)
        result = self.auth.verify(request, credentials, self.users.ha1, now)
        if result.stale:
            return self._challenge(request, tag, now, stale=True)
        if not result.ok:
            if result.reason in ("Wrong credentials", "Unknown user"):
                self._count_failure(source[0])
                log.info("REGISTER auth failed for %r from %s: %s", result.username, source[0], result.reason)
                return make_response(request, 403, "Forbidden", to_tag=tag)
            return self._challenge(request, tag, now)
        self._failures.pop(source[0], None)

        try:
            to = request.to
        except RemoteProtocolError:
            return make_response(request, 400, "Malformed To header", to_tag=tag)
        user = to.uri.user
        if not user or to.uri.scheme not in ("sip", "sips"):
            return make_response(request, 404, "Not Found", to_tag=tag)
        if user != result.username:
            return make_response(request, 403, "Not allowed to register this address", to_tag=tag)
        try:
            return self._update(request, user, source, transport.upper(), now, tag)
        except RemoteProtocolError as exc:
            return make_response(request, exc.status or 400, exc.reason, to_tag=tag)

    def _challenge(self, request: SipRequest, tag: str, now: float, stale: bool = False) -> SipResponse:
        headers = [("WWW-Authenticate", v) for v in self.auth.challenge(now, stale=stale)]
        return make_response(request, 401, to_tag=tag, headers=headers)

    def _update(
        self, request: SipRequest, user: str, source: tuple[str, int], transport: str, now: float, tag: str
    ) -> SipResponse:
        contacts = request.headers.get_all("Contact")
        header_expires = request.headers.get("Expires")
        call_id = request.call_id
        cseq, _ = request.cseq
        self._purge_user(user, now)
        current = self._bindings.setdefault(user, {})

        if "*" in contacts:
            if len(contacts) != 1 or header_expires is None or header_expires.strip() != "0":
                raise RemoteProtocolError("Contact * needs Expires: 0 and no other Contact")
            for b in current.values():
                if b.call_id == call_id and cseq <= b.cseq:
                    raise RemoteProtocolError("Out of order REGISTER", 500)
            current.clear()
            return self._ok(request, user, now, tag)

        changes: list[tuple[str, Binding | None]] = []
        for value in contacts:
            addr = NameAddr.parse(value)
            raw = addr.params.get("expires", header_expires)
            if raw is None:
                expires = self.default_expires
            elif is_digits(raw.strip()) and len(raw.strip()) <= 10:
                expires = int(raw.strip())
            else:
                raise RemoteProtocolError("Malformed expires value")
            if 0 < expires < self.min_expires:
                return make_response(
                    request, 423, to_tag=tag, headers=[("Min-Expires", str(self.min_expires))]
                )
            expires = min(expires, self.max_expires)
            key = self._binding_key(addr)
            old = current.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                raise RemoteProtocolError("Out of order REGISTER", 500)
            if expires == 0:
                changes.append((key, None))
                continue
            q = addr.params.get("q")
            try:
                qv = float(q) if q is not None else None
            except ValueError:
                raise RemoteProtocolError("Malformed q value") from None
            instance = addr.params.get("+sip.instance")
            changes.append((key, Binding(user, addr.uri, source, transport, now + expires, call_id, cseq, qv,
                                         instance.strip('"') if instance else None)))
        for key, binding in changes:
            if binding is None:
                current.pop(key, None)
            else:
                current[key] = binding
        return self._ok(request, user, now, tag)

    @staticmethod
    def _binding_key(addr: NameAddr) -> str:
        instance = addr.params.get("+sip.instance")
        if instance:
            return "instance:" + instance.strip('"')
        uri = addr.uri
        return f"{uri.scheme}:{uri.user}@{uri.host.lower()}:{uri.port}"

    def _ok(self, request: SipRequest, user: str, now: float, tag: str) -> SipResponse:
        bindings = self._bindings.get(user, {})
        if not bindings:
            self._bindings.pop(user, None)
        contacts = [("Contact", f"<{b.contact}>;expires={b.expires_in(now)}") for b in bindings.values()]
        return make_response(request, 200, to_tag=tag, headers=contacts)

    def _purge_user(self, user: str, now: float) -> int:
        bindings = self._bindings.get(user)
        if not bindings:
            self._bindings.pop(user, None)
            return 0
        dead = [k for k, b in bindings.items() if b.expires_at <= now]
        for k in dead:
            del bindings[k]
        return len(dead)

    def _count_failure(self, ip: str) -> None:
        self._failures[ip] = self._failures.get(ip, 0) + 1
        self._failures.move_to_end(ip)
        while len(self._failures) > self._max_sources:
            self._failures.popitem(last=False)
