"""SIGTERM to ``contact-server serve`` while calls are in progress: new INVITEs get 503 with Retry-After, the calls
in progress go on until their callers hang up (inside the 10 s grace), their records end normally, exit code 0.

``ServeProcess`` (the real command in its own process on a temporary copy of config/) is shared with
``test_crash_restart.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.harness import RtpSink, run_sipp
from tests.e2e.server_fixture import copy_config, sipp_media_port, server_environ
from tests.e2e.test_serve_command import READY, contact_server_command

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(120)]

STOPPING = "stopping: new calls get 503"


class ServeProcess:
    """``contact-server serve`` on ``root`` (config copied on first start; the SQLite database survives restarts)."""

    def __init__(self, root: Path):
        self.root = root
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self._reader: asyncio.Task | None = None
        self._changed = asyncio.Event()
        self._env: dict[str, str] | None = None

    @property
    def db_path(self) -> Path:
        return self.root / "var" / "test.db"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, *, seed_demo: bool = True) -> None:
        from voiceauth.crypto import generate_key

        if self._env is None:
            copy_config(self.root)
            self._env = dict(os.environ) | server_environ(self.root) | {"VOICEAUTH_KEY": generate_key(),
                                                                        "PYTHONUNBUFFERED": "1"}
        self.lines.append("---- start ----\n")
        args = ["serve", "--config", "config/server.yaml"] + (["--seed-demo"] if seed_demo else [])
        self.proc = await asyncio.create_subprocess_exec(
            *contact_server_command(), *args, cwd=self.root, env=self._env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._reader = asyncio.ensure_future(self._read(self.proc))
        line = await self.wait_line(READY.pattern, timeout=90)
        self.port = int(READY.search(line).group(2))

    async def _read(self, proc) -> None:
        while line := await proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))
            self._changed.set()
        self._changed.set()

    async def wait_line(self, pattern: str, timeout: float) -> str:
        """The first output line of the current process matching ``pattern``."""
        start = max(i for i, l in enumerate(self.lines) if l == "---- start ----\n")
        rx = re.compile(pattern)

        async def look() -> str:
            while True:
                for line in self.lines[start:]:
                    if rx.search(line):
                        return line
                if self._reader.done():
                    raise AssertionError(f"server output ended without {pattern!r}:\n" + self.log[-3000:])
                self._changed.clear()
                await self._changed.wait()
        return await asyncio.wait_for(look(), timeout)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def wait_exit(self, timeout: float) -> int:
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, 5)
        return rc

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)

    def rows(self, sql: str, *args) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)) as db:
            return db.execute(sql, args).fetchall()

    async def wait_rows(self, sql: str, predicate, timeout: float = 30) -> list[tuple]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            rows = self.rows(sql)
            if predicate(rows):
                return rows
            if loop.time() > deadline:
                raise AssertionError(f"database never satisfied the condition: {sql} -> {str(rows)[:3000]}\n"
                                     + self.log[-2000:])
            await asyncio.sleep(0.1)


def invite(server_port: int, local_port: int, call_id: str) -> bytes:
    body = (b"v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    head = (f"INVITE sip:800100@127.0.0.1:{server_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{call_id.split('@')[0]};rport\r\n"
            f"From: <sip:+393330000777@127.0.0.1>;tag=late\r\nTo: <sip:800100@127.0.0.1:{server_port}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:late@127.0.0.1:{local_port}>\r\n"
            f"Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def final_response(server_port: int, call_id: str) -> str:
    """Send one INVITE from a raw socket; the text of the first final response (the ACK is not needed for a test
    that ends the server right after)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(invite(server_port, s.getsockname()[1], call_id), ("127.0.0.1", server_port))
        while True:
            data = (await asyncio.wait_for(loop.sock_recv(s, 65535), 10)).decode(errors="replace")
            m = re.match(r"SIP/2\.0 (\d{3})", data)
            if m and int(m.group(1)) >= 200:
                return data


async def start_calls(address: str, tmp: Path, tag: str, calls: int, hold_ms: int, rtp_port: int):
    """``calls`` SIPp callers of the retail line, each hanging up after ``hold_ms``; Call-IDs ``tag-N@127.0.0.1``."""
    return asyncio.ensure_future(run_sipp(
        address, "uac_basic.xml", calls=calls, rate=20, timeout=60, tmp=tmp,
        variables={"caller": "+393330000199", "dialed": "800100", "hold": hold_ms, "rtpport": rtp_port},
        extra=["-mp", str(sipp_media_port()), "-cid_str", tag + "-%u@%s"]))


async def test_sigterm_refuses_new_calls_and_lets_calls_in_progress_finish(tmp_path):
    server = ServeProcess(tmp_path)
    sink = await RtpSink().open()
    try:
        await server.start()
        calls = await start_calls(server.address, tmp_path, "drain", 3, 6000, sink.port)
        await server.wait_rows("select call_id from call_records where status = 'active'",
                               lambda rows: len(rows) == 3)
        server.proc.send_signal(signal.SIGTERM)
        await server.wait_line(STOPPING, timeout=10)
        refused = await final_response(server.port, "late-1@127.0.0.1")
        assert refused.startswith("SIP/2.0 503 "), refused
        assert re.search(r"\r\nRetry-After: *\d+", refused), refused
        assert server.proc.returncode is None, "the server must wait for the calls in progress"
        res = await calls
        assert res.rc == 0, res.stdout[-2000:] + res.errors[-2000:]
        rc = await server.wait_exit(30)
    finally:
        sink.close()
        await server.stop()
    assert rc == 0, server.log[-3000:]
    assert "Traceback" not in server.log, server.log[-3000:]
    rows = server.rows("select call_id, status, end_reason, ivr_exit from call_records order by call_id")
    # the callers hung up themselves (BYE answered 200 by the draining server); the refused INVITE left no record
    assert [r[0] for r in rows] == ["drain-1@127.0.0.1", "drain-2@127.0.0.1", "drain-3@127.0.0.1"], rows
    assert [r[1:] for r in rows] == [("ended", "bye_remote", "hung_up")] * 3, rows
