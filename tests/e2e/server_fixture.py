"""The whole contact server (``ivr.app.build_server``) on a temporary copy of ``config/``, for SIPp tests.

What is real: the demo IVR files, the SQLite database (migrated and seeded with the demo customers), the CRM,
the call recorder, the voice service with the bundled model, prompts, media and SIP. What differs from a
production start: SIP on an ephemeral port, an RTP range of its own, a temporary database, a generated
voiceprint key, and a clock that starts at a chosen instant (so opening hours are deterministic) and then
advances with real time (so IVR timestamps and durations stay meaningful).

    async with contact_server(tmp_path, clock=ShiftedClock(IN_HOURS)) as srv:
        await run_sipp(srv.address, ...)
        rec = srv.call_record(ani="+393471000001")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator
from zoneinfo import ZoneInfo

import pytest_asyncio
from sqlalchemy import select

from tests.conftest import REPO

ROME = ZoneInfo("Europe/Rome")
# Wednesday 12 March 2025, 10:30 in Rome: a working day inside the demo's office hours (mon-fri 08-20).
IN_HOURS = datetime(2025, 3, 12, 10, 30, tzinfo=ROME).timestamp()
# Sunday 16 March 2025, 22:30 in Rome: closed.
OUT_OF_HOURS = datetime(2025, 3, 16, 22, 30, tzinfo=ROME).timestamp()

_rtp_next = [40000]


def _rtp_range() -> tuple[int, int]:
    """A block of 1000 RTP ports per server, distinct from the harness's (30000-49999 is shared with
    ``harness.running_server``, so this one walks 40000-49999 in the other direction of use)."""
    lo = _rtp_next[0]
    _rtp_next[0] = 40000 + (lo - 40000 + 1000) % 9000
    return lo, lo + 998


class ShiftedClock:
    """Wall clock that reads ``start`` at creation and then advances in real time; ``set`` jumps it."""

    def __init__(self, start: float):
        self.set(start)

    def set(self, start: float) -> None:
        self._offset = start - time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() + self._offset


@dataclass
class ContactServer:
    """A running full server and the helpers the tests need to read what it recorded."""

    server: Any
    root: Path
    clock: ShiftedClock

    @property
    def port(self) -> int:
        return self.server.sip.bound_port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def voice(self):
        return self.server.extras["voice"]

    def query(self, fn):
        """Run ``fn(session)`` on the server's database (synchronously; results must be plain data)."""
        return self.server.db.read_sync(fn)

    def call_records(self, **where) -> list[dict[str, Any]]:
        """Call records (as dicts) whose columns equal ``where``, oldest first."""
        from crm_bridge import models as m
        from crm_bridge.recorder import record_snapshot

        def fn(s):
            q = select(m.CallRecord).order_by(m.CallRecord.id)
            for k, v in where.items():
                q = q.where(getattr(m.CallRecord, k) == v)
            return [record_snapshot(r) for r in s.scalars(q)]
        return self.query(fn)

    def call_record(self, **where) -> dict[str, Any]:
        rows = self.call_records(**where)
        assert len(rows) == 1, f"expected one call record with {where}, found {len(rows)}: {rows}"
        return rows[0]

    def verification_attempts(self, call_id: str) -> list[dict[str, Any]]:
        from voiceauth.schema import VerificationAttemptRow as Row

        def fn(s):
            rows = s.scalars(select(Row).where(Row.call_id == call_id).order_by(Row.id))
            return [{"customer_id": r.customer_id, "decision": r.decision, "score": r.score,
                     "threshold": r.threshold, "model": r.model, "flags": [f for f in (r.flags or "").split(",") if f]} for r in rows]
        return self.query(fn)

    def customer_id(self, e164: str) -> str:
        from crm_bridge import models as m

        def fn(s):
            return s.scalars(select(m.PhoneNumber.customer_id).where(m.PhoneNumber.e164 == e164)).one()
        return str(self.query(fn))

    async def wait_ivr_finished(self, timeout: float = 60.0, **where) -> dict[str, Any]:
        """The call record once its IVR part is over (``ivr_exit`` written), the call possibly still up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            rows = await loop.run_in_executor(None, lambda: self.call_records(**where))
            if len(rows) == 1 and rows[0]["ivr_exit"] is not None:
                return rows[0]
            if loop.time() > deadline:
                raise AssertionError(f"no finished IVR with {where} after {timeout} s: {rows}")
            await asyncio.sleep(0.1)

    def hang_up(self, call_id: str) -> bool:
        """End a live call (a queued caller would otherwise wait for an agent); False when already over."""
        for c in list(self.server.manager.calls.values()):
            if c.id == call_id and not c.leg.ended:
                c.hangup()
                return True
        return False

    async def wait_call_ended(self, timeout: float = 20.0, **where) -> dict[str, Any]:
        """The call record once the server has finished with it (status ended and IVR exit written)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            rows = await loop.run_in_executor(None, lambda: self.call_records(**where))
            if len(rows) == 1 and rows[0]["status"] == "ended" and rows[0]["ivr_exit"] is not None:
                return rows[0]
            if loop.time() > deadline:
                raise AssertionError(f"no ended call record with {where} after {timeout} s: {rows}")
            await asyncio.sleep(0.1)


def copy_config(root: Path) -> Path:
    """``config/`` copied under ``root`` (so ``base_dir`` is ``root``), with ``audio_fixtures`` linked beside it
    because the demo flows name prompts relative to the repository. Returns the copied server.yaml."""
    shutil.copytree(REPO / "config", root / "config")
    (root / "audio_fixtures").symlink_to(REPO / "audio_fixtures", target_is_directory=True)
    return root / "config" / "server.yaml"


def server_environ(root: Path, rtp: tuple[int, int] | None = None) -> dict[str, str]:
    """The ``CONTACT_SERVER__*`` overrides of a test server: port 0, own RTP range, temporary database."""
    lo, hi = rtp or _rtp_range()
    return {
        "CONTACT_SERVER__SIP__PORT": "0",
        "CONTACT_SERVER__WEB__PORT": "0",
        "CONTACT_SERVER__SIP__TRANSPORTS": "[udp]",
        "CONTACT_SERVER__RTP__PORT_MIN": str(lo),
        "CONTACT_SERVER__RTP__PORT_MAX": str(hi),
        "CONTACT_SERVER_DATABASE_URL": f"sqlite:///{root / 'var' / 'test.db'}",
        "CONTACT_SERVER__IVR__WATCH": "false",
        "CONTACT_SERVER__LOGGING__LEVEL": "INFO",
    }


@contextlib.contextmanager
def _env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.asynccontextmanager
async def contact_server(root: Path, *, clock: ShiftedClock | None = None, seed_demo: bool = True,
                         overrides: dict[str, str] | None = None,
                         extra_files: dict[str, str] | None = None) -> AsyncIterator[ContactServer]:
    """Build the full server on a copy of ``config/`` under ``root``; shut it down like ``serve`` does.
    ``extra_files``: paths relative to the copied ``config/`` and their text (e.g. one more IVR file)."""
    from ivr.app import build_server
    from ivr.config import load_server_config
    from voiceauth.crypto import generate_key

    clock = clock or ShiftedClock(IN_HOURS)
    path = copy_config(root)
    for rel, text in (extra_files or {}).items():
        (root / "config" / rel).write_text(text)
    env = server_environ(root) | (overrides or {})
    cfg = load_server_config(path, environ=env)
    with _env({"VOICEAUTH_KEY": generate_key()}):
        server = await build_server(cfg, seed_demo=seed_demo, clock=clock)
    try:
        yield ContactServer(server, root, clock)
    finally:
        await server.close(grace=2.0)


@pytest_asyncio.fixture
async def demo_server(tmp_path) -> AsyncIterator[ContactServer]:
    """The demo server on a working day inside office hours."""
    async with contact_server(tmp_path, clock=ShiftedClock(IN_HOURS)) as srv:
        yield srv


@pytest_asyncio.fixture
async def demo_server_closed(tmp_path) -> AsyncIterator[ContactServer]:
    """The demo server on a Sunday night (closed)."""
    async with contact_server(tmp_path, clock=ShiftedClock(OUT_OF_HOURS)) as srv:
        yield srv


def sipp_media_port() -> int:
    """An even port with the next three free (SIPp binds audio RTP/RTCP and video RTP/RTCP from ``-mp``), below
    the ephemeral range so that concurrent SIPp runs and sockets do not race for it."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(21000, 29990, 4)
        socks = []
        try:
            for p in range(base, base + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of 4 UDP ports in 21000-29999 for SIPp media")


def sipp_call_id(tag: str) -> str:
    """The SIP Call-ID (and so the server's ``call_id``) of the call ``run_sipp_call(..., tag=tag)`` places."""
    return f"{tag}-1@127.0.0.1"


async def run_sipp_call(address: str, scenario: str, *, variables: dict[str, Any], timeout: float, tmp: Path,
                        tag: str, attempts: int = 3):
    """``run_sipp`` for one call with its own media ports and the Call-ID ``sipp_call_id(tag)``, so the test
    finds its call record. Started again when SIPp could not bind its ports (another process took them between
    the check and SIPp's bind: no INVITE was sent, so nothing else changes)."""
    from tests.e2e.harness import run_sipp

    assert tag and not set(tag) & set("%@ "), tag
    for attempt in range(attempts):
        res = await run_sipp(address, scenario, variables=variables, timeout=timeout, tmp=tmp,
                             extra=["-mp", str(sipp_media_port()), "-cid_str", tag + "-%u@%s"])
        if res.rc == 0 or "Unable to bind" not in res.stdout + res.errors or attempt == attempts - 1:
            return res
