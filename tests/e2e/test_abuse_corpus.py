"""Hostile SIP over real UDP to a running server: the abuse corpus in ``tests/sip/abuse/`` and every RFC 4475
torture message. Each message gets exactly the status its file name (or RFC 4475) says, or nothing where the
message must be dropped; an OPTIONS probe from the same socket after each proves the server still answers (and,
because the server handles one socket's datagrams in order, that a dropped message produced nothing), and a
normal SIPp call completes at the end."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
from pathlib import Path

import pytest

from ivr.calls import Call
from dataclasses import dataclass
from tests.conftest import SHARED
from tests.e2e.harness import RtpSink, run_sipp, running_server
from tests.sip.test_torture import INVALID as TORTURE_INVALID, VALID as TORTURE_VALID

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(180)]

ABUSE = Path(__file__).resolve().parents[1] / "sip" / "abuse"
TORTURE = SHARED / "sip_torture" / "rfc4475"
_ids = itertools.count(1)


class HoldApp:
    """Answers and holds until the caller hangs up: enough for the SIPp call at the end."""

    def __init__(self):
        self.calls: list[Call] = []

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        await call.answer()
        await call.leg.wait_ended()


@dataclass
class Answer:
    """What came back, read leniently: a 400 echoes the bad headers it is answering, so a strict parse would fail."""

    status: int
    call_id: str | None
    raw: bytes

    @classmethod
    def parse(cls, data: bytes) -> "Answer":
        m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
        assert m, f"not a SIP response: {data[:200]!r}"
        cid = re.search(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]*)", data, re.I)
        return cls(int(m.group(1)), cid.group(1).decode(errors="replace").strip() if cid else None, data)


def corpus() -> list[tuple[str, str]]:
    files = sorted(ABUSE.glob("*.sip"))
    assert len(files) >= 40, "the abuse corpus is missing: run tests/sip/abuse/make_corpus.py"
    return [(p.stem.split("--", 1)[1], p.stem.split("--", 1)[0]) for p in files]


def fill(data: bytes, server_port: int, local_port: int, n: int) -> bytes:
    values = {b"{{HOST}}": b"127.0.0.1", b"{{PORT}}": str(server_port).encode(),
              b"{{LPORT}}": str(local_port).encode(), b"{{CALLID}}": f"abuse-{n}@127.0.0.1".encode(),
              b"{{BRANCH}}": f"z9hG4bKabuse{n}".encode(), b"{{TAG}}": f"t{n}".encode()}
    for k, v in values.items():
        data = data.replace(k, v)
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.replace(b"{{CL}}", str(len(body)).encode()) + sep + body


class Prober:
    """One UDP socket: send a message, then an OPTIONS probe; everything that came back before the probe's answer
    (and, for INVITEs, the final answer however late) belongs to the message."""

    def __init__(self, server_port: int):
        self.server = ("127.0.0.1", server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    async def _recv(self, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 70000), timeout)

    def probe_bytes(self, n: int) -> bytes:
        return (f"OPTIONS sip:{self.server[0]}:{self.server[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKprobe{n};rport\r\n"
                f"From: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:{self.server[0]}>\r\n"
                f"Call-ID: probe-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                f"Content-Length: 0\r\n\r\n").encode()

    async def exchange(self, data: bytes, *, wait_final: bool) -> list[Answer]:
        """Responses to ``data``; raises when the server stops answering the probe."""
        n = next(_ids)
        self.sock.sendto(data, self.server)
        got: list[Answer] = []
        if wait_final:
            while not any(r.status >= 200 for r in got):
                got.append(Answer.parse(await self._recv(10)))
        self.sock.sendto(self.probe_bytes(n), self.server)
        while True:
            msg = Answer.parse(await self._recv(10))
            if msg.call_id == f"probe-{n}@127.0.0.1":
                assert msg.status == 200, msg.raw
                return got
            got.append(msg)


def finals(responses: list[Answer]) -> list[int]:
    return sorted({r.status for r in responses if r.status >= 200})


async def _call_completes(srv, app: HoldApp, tmp_path: Path) -> None:
    sink = await RtpSink().open()
    try:
        res = await run_sipp(srv.address, "uac_basic.xml", tmp=tmp_path,
                             variables={"caller": "+393331234567", "dialed": "800100", "hold": 1000,
                                        "rtpport": sink.port})
    finally:
        sink.close()
    assert res.rc == 0, res.stdout[-2000:] + res.errors
    assert len(app.calls) == 1


async def test_abuse_corpus_gets_the_expected_answers(tmp_path):
    app = HoldApp()
    outcome: dict[str, tuple[str, list[int]]] = {}
    async with running_server(app) as srv:
        for name, expected in corpus():
            raw = next(ABUSE.glob(f"*--{name}.sip")).read_bytes()
            prober = Prober(srv.port)
            try:
                data = fill(raw, srv.port, prober.port, next(_ids))
                is_invite = data.startswith(b"INVITE ") and expected != "drop"
                got = await prober.exchange(data, wait_final=is_invite)
            finally:
                prober.close()
            outcome[name] = (expected, finals(got))
            assert all(r.status != 500 for r in got), name
        wrong = {k: v for k, v in outcome.items() if v[1] != ([] if v[0] == "drop" else [int(v[0])])}
        assert not wrong, f"unexpected answers (expected, got): {wrong}"
        assert srv.sip.ua.stats.internal_errors == 0
        assert not app.calls, "no abusive INVITE may reach the application"
        await _call_completes(srv, app, tmp_path)


# RFC 4475 messages that carry their own target: the Request-URI and top Via are re-pointed at the server/us.
_REQ_LINE = re.compile(rb"^([!-~]+)[ \t]+(\S.*?)[ \t]+(SIP/\S+)\r?\n", re.S)


def retarget(data: bytes, server_port: int, local_port: int) -> bytes:
    """Top Via sent-by -> our socket (so answers come back); a sip/sips Request-URI host -> the server."""
    data = re.sub(rb"(\n(?:Via|v)[ \t]*:\s*)SIP\s*/\s*2\.0\s*/\s*[A-Za-z]+\s+[^;\s,]+",
                  rb"\g<1>SIP/2.0/UDP 127.0.0.1:" + str(local_port).encode(), data, count=1, flags=re.I)
    m = _REQ_LINE.match(data)
    if m and re.match(rb"sips?:", m.group(2)):
        uri = re.sub(rb"@[^;?>\s]+", b"@127.0.0.1:" + str(server_port).encode(), m.group(2), count=1)
        data = data[:m.start(2)] + uri + data[m.end(2):]
    return data


# RFC 4475 3.4.1 asks for RFC 2543 tolerance, but inv2543 has no Contact: a 3261 UAS has no remote target for the
# dialog (RFC 3261 8.1.1.8 makes Contact mandatory in INVITE), so the server answers 400 "Missing Contact header".
VALID_REFUSED = {"inv2543": [400]}


def torture_names() -> list[str]:
    names = sorted(p.stem for p in TORTURE.glob("*.dat"))
    assert len(names) == 50, f"RFC 4475 torture messages missing under {TORTURE}"
    return names


async def test_rfc4475_messages_over_udp(tmp_path):
    app = HoldApp()
    outcome: dict[str, list[int]] = {}
    async with running_server(app) as srv:
        for name in torture_names():
            prober = Prober(srv.port)
            try:
                data = retarget((TORTURE / f"{name}.dat").read_bytes(), srv.port, prober.port)
                try:
                    got = await prober.exchange(data, wait_final=False)
                    # a valid INVITE is a call: its final answer may come after the probe's
                    if name in TORTURE_VALID and re.match(rb"INVITE ", data):
                        while not finals(got):
                            got.append(Answer.parse(await prober._recv(10)))
                except (TimeoutError, asyncio.TimeoutError):
                    outcome[name] = ["no answer to the OPTIONS probe"]
                    continue
            finally:
                prober.close()
            outcome[name] = finals(got)
        for call in app.calls:
            call.hangup()
        bad = {}
        for name, statuses in outcome.items():
            if name in VALID_REFUSED:
                if statuses != VALID_REFUSED[name]:
                    bad[name] = statuses
            elif name in TORTURE_VALID:
                is_request = not (TORTURE / f"{name}.dat").read_bytes().startswith(b"SIP/")
                if is_request and not statuses:
                    bad[name] = ["a valid request got no answer"]
                if any(s == 400 for s in statuses) or any(s >= 500 for s in statuses):
                    bad[name] = statuses
            else:
                want = TORTURE_INVALID[name]
                if statuses not in ([], [want]) if want else statuses != []:
                    bad[name] = statuses
        assert not bad, f"RFC 4475 messages handled wrongly: {bad}\nall: {outcome}"
        assert srv.sip.ua.stats.internal_errors == 0
        await _call_completes_after_torture(srv, app, tmp_path)


async def _call_completes_after_torture(srv, app: HoldApp, tmp_path: Path) -> None:
    before = len(app.calls)
    sink = await RtpSink().open()
    try:
        res = await run_sipp(srv.address, "uac_basic.xml", tmp=tmp_path,
                             variables={"caller": "+393331234567", "dialed": "800100", "hold": 1000,
                                        "rtpport": sink.port})
    finally:
        sink.close()
    assert res.rc == 0, res.stdout[-2000:] + res.errors
    assert len(app.calls) == before + 1
