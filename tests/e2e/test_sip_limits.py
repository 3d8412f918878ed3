"""Limits of the running telephony core over real UDP on loopback, each source its own address (127.0.0.x):
concurrent calls and calls per second per source answer 503 with Retry-After without touching other sources,
scanner user agents get silence and their address is blocked, and repeated failed REGISTER digests from one
address block it for a while while phones elsewhere still register."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket

import pytest

from ivr.calls import Call, CallLimits
from ivr.sip.digest import DigestAuthenticator, digest_response, ha1
from ivr.sip.guard import SourceGuard
from ivr.sip.registrar import Registrar
from tests.e2e.harness import running_server

pytestmark = pytest.mark.timeout(60)

_n = itertools.count(1)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"


class HoldApp:
    def __init__(self):
        self.calls: list[Call] = []

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        await call.answer()
        await call.leg.wait_ended()


class Peer:
    """A UDP socket on one loopback address that sends requests and collects what comes back."""

    def __init__(self, ip: str, server_port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.setblocking(False)
        self.ip, self.port = ip, self.sock.getsockname()[1]
        self.server = ("127.0.0.1", server_port)

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, *, call_id: str | None = None, extra: str = "", body: bytes = b"",
                uri: str = "sip:800100@127.0.0.1", cseq: int = 1, user: str = "+393331112233",
                to: str | None = None) -> str:
        n = next(_n)
        call_id = call_id or f"lim-{n}@{self.ip}"
        head = (f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bKlim{n};rport\r\n"
                f"From: <sip:{user}@{self.ip}>;tag=t{n}\r\nTo: <{to or uri}>\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:peer@{self.ip}:{self.port}>\r\nMax-Forwards: 70\r\n{extra}"
                + ("Content-Type: application/sdp\r\n" if body else "") + f"Content-Length: {len(body)}\r\n\r\n")
        self.sock.sendto(head.encode() + body, self.server)
        return call_id

    def invite(self) -> str:
        return self.request("INVITE", body=SDP)

    async def finals(self, wait: float = 1.0) -> dict[str, tuple[int, str, str | None]]:
        """Final answers by Call-ID: (status, reason, Retry-After)."""
        loop = asyncio.get_running_loop()
        out: dict[str, tuple[int, str, str | None]] = {}
        end = loop.time() + wait
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), left)
            except asyncio.TimeoutError:
                break
            m = re.match(rb"SIP/2\.0 (\d{3}) ([^\r\n]*)", data)
            if not m or int(m.group(1)) < 200:
                continue
            cid = re.search(rb"\r\nCall-ID: *([^\r\n]+)", data).group(1).decode()
            ra = re.search(rb"\r\nRetry-After: *(\d+)", data)
            out[cid] = (int(m.group(1)), m.group(2).decode(), ra.group(1).decode() if ra else None)
        return out

    async def raw(self, wait: float) -> list[bytes]:
        loop = asyncio.get_running_loop()
        got = []
        end = loop.time() + wait
        while (left := end - loop.time()) > 0:
            try:
                got.append(await asyncio.wait_for(loop.sock_recv(self.sock, 65535), left))
            except asyncio.TimeoutError:
                break
        return got


async def test_concurrent_call_limit_answers_503_with_retry_after():
    app = HoldApp()
    async with running_server(app, limits=CallLimits(max_concurrent_calls=3), trusted=()) as srv:
        a, b = Peer("127.0.0.2", srv.port), Peer("127.0.0.3", srv.port)
        try:
            first = [a.invite() for _ in range(3)]
            got = await a.finals()
            assert [got[c][0] for c in first] == [200, 200, 200]
            over = b.invite()
            assert (await b.finals())[over] == (503, "Service Unavailable", "5")
            assert srv.manager.stats["rejected_busy"] == 1 and len(app.calls) == 3
        finally:
            a.close()
            b.close()


async def test_calls_per_second_from_one_source_get_503_and_other_sources_are_not_affected():
    app = HoldApp()
    limits = CallLimits(max_concurrent_calls=100, max_calls_per_second_per_source=3)
    async with running_server(app, limits=limits, trusted=()) as srv:
        busy, quiet = Peer("127.0.0.2", srv.port), Peer("127.0.0.3", srv.port)
        try:
            burst = [busy.invite() for _ in range(10)]
            own = quiet.invite()
            got = await busy.finals()
            statuses = [got[c] for c in burst]
            assert sum(s[0] == 200 for s in statuses) == 3
            assert [s for s in statuses if s[0] != 200] == [(503, "Too Many Calls", "2")] * 7
            assert (await quiet.finals())[own][0] == 200
        finally:
            busy.close()
            quiet.close()


async def test_scanner_user_agents_get_nothing_and_their_address_is_blocked():
    guard = SourceGuard(block_seconds=60)
    async with running_server(HoldApp(), guard=guard, trusted=()) as srv:
        scanner, user = Peer("127.0.0.2", srv.port), Peer("127.0.0.3", srv.port)
        try:
            for ua in ("friendly-scanner", "sipvicious 0.3.0", "sipcli/v1.8", "VaxSIPUserAgent/3.1"):
                scanner.request("OPTIONS", extra=f"User-Agent: {ua}\r\n")
            scanner.request("OPTIONS")                              # a clean probe from the blocked address
            scanner.invite()
            assert await scanner.raw(1.0) == []
            cid = user.request("OPTIONS")
            assert (await user.finals())[cid][0] == 200
            assert guard.stats.scanners >= 1 and guard.blocked("127.0.0.2", srv.sip.loop.time())
        finally:
            scanner.close()
            user.close()


class Users:
    def ha1(self, username, realm, algorithm):
        return ha1(username, realm, "right-pw", algorithm) if username == "201" else None


async def test_failed_register_digests_block_the_address_and_other_phones_still_register():
    registrar = Registrar(DigestAuthenticator("contact-server", b"limits-test-secret-0123456789ab"), Users())
    guard = SourceGuard(max_auth_failures=5, block_seconds=60, auth_failures=registrar.failures)
    async with running_server(HoldApp(), guard=guard, trusted=()) as srv:
        srv.sip.ua.set_registrar(registrar)
        guesser, phone = Peer("127.0.0.2", srv.port), Peer("127.0.0.3", srv.port)
        uri = "sip:127.0.0.1"

        async def register(peer: Peer, password: str, wait: float = 0.5) -> list[int]:
            aor = dict(user="201", to="sip:201@127.0.0.1")
            cid = peer.request("REGISTER", uri=uri, extra="Expires: 60\r\n", **aor)
            answers = await peer.raw(wait)
            if not answers:
                return []
            challenge = re.search(rb"WWW-Authenticate: *([^\r\n]+)", answers[0]).group(1).decode()
            auth = digest_response(challenge, "REGISTER", uri, "201", password)
            peer.request("REGISTER", uri=uri, call_id=cid, cseq=2, extra=f"Expires: 60\r\nAuthorization: {auth}\r\n",
                         **aor)
            return [int(m.group(1)) for d in await peer.raw(wait) if (m := re.match(rb"SIP/2\.0 (\d{3})", d))]

        try:
            results = [await register(guesser, f"guess-{i}") for i in range(8)]
            assert results[0] == [403]               # wrong password: refused
            assert [] in results, f"the guesser was never blocked: {results}"
            blocked_from = results.index([])
            assert blocked_from <= 6 and all(r == [] for r in results[blocked_from:])
            assert guard.blocked("127.0.0.2", srv.sip.loop.time())
            assert await register(phone, "right-pw") == [200]   # another address, right password
        finally:
            guesser.close()
            phone.close()


async def test_the_sip_udp_socket_has_a_receive_buffer_that_absorbs_flood_bursts():
    """The kernel default (~200 KB) overflows under a junk burst and drops callers' datagrams with it."""
    from pathlib import Path

    async with running_server(HoldApp(), trusted=()) as srv:
        sock = srv.sip._udp.get_extra_info("socket")
        size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
    assert size >= min(srv.sip.receive_buffer, cap)   # Linux reports twice what was set, capped by rmem_max
    assert size > int(Path("/proc/sys/net/core/rmem_default").read_text()) or cap <= 212992


async def test_untrusted_sources_get_a_lower_call_rate_than_trunks():
    app = HoldApp()
    limits = CallLimits(max_concurrent_calls=100, max_calls_per_second_per_source=100,
                        max_calls_per_second_per_untrusted_source=2)
    async with running_server(app, limits=limits, trusted=("127.0.0.3/32",)) as srv:
        stranger, trunk = Peer("127.0.0.2", srv.port), Peer("127.0.0.3", srv.port)
        try:
            theirs = [stranger.invite() for _ in range(6)]
            ours = [trunk.invite() for _ in range(6)]
            got_s, got_t = await stranger.finals(), await trunk.finals()
            assert sorted(got_s[c][0] for c in theirs) == [200, 200, 503, 503, 503, 503]
            assert [got_t[c][0] for c in ours] == [200] * 6
        finally:
            stranger.close()
            trunk.close()
