"""``kill -9`` of ``contact-server serve`` while 20 callers are in the demo IVR, at three moments (one server
life each, on the same database, so the three kills cost four starts instead of six): nothing the server had
committed is lost (each record read just before the kill is still there, its IVR path only longer), the database
is intact; each restart closes the records left active with end reason ``server_restart``; a new call is served
after the last one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import SCENARIOS, SIPP, RtpSink, free_udp_port, run_sipp
from tests.e2e.server_fixture import sipp_media_port
from tests.e2e.test_shutdown import ServeProcess

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(180)]

CALLS, HANG_UPS = 20, 2
# a demo customer (identified by caller ID): "2" in the main menu (cards), "2" in the sub-menu (other); the
# timings are those of tests/e2e/test_demo_ivr.py. The IVR then hands the call over and the server hangs up.
CALLER, MENU, SUBMENU = "+393471000002", 6000, 2500
RECORDS = "select call_id, status, ivr_path, ivr_exit, end_reason from call_records order by call_id"


def _active(rows) -> list:
    return [r for r in rows if r[1] == "active"]


# when to kill, as what the database must show first (no clock involved)
MOMENTS = {
    # callers still arriving: some records exist, not all
    "arriving": lambda rows: 5 <= len(rows) < CALLS,
    # every caller answered and in the IVR, none finished
    "all_in_ivr": lambda rows: len(rows) == CALLS and not any(r[1] == "ended" for r in rows),
    # the callers who hang up early have ended, most calls are in progress
    "some_ended": lambda rows: any(r[1] == "ended" for r in rows) and len(_active(rows)) >= CALLS // 2,
}


async def _spawn_sipp(address: str, tmp: Path, scenario: str, calls: int, cid: str, variables: dict):
    assert SIPP, "sipp is not installed: run scripts/setup.sh --test"
    args = [SIPP, address, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(free_udp_port()),
            "-mp", str(sipp_media_port()), "-m", str(calls), "-r", "10", "-timeout", "60", "-nostdin",
            "-cid_str", cid, "-t", "u1"]
    for k, v in variables.items():
        args += ["-set", k, str(v)]
    return await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL, cwd=tmp)


async def _start_callers(address: str, tmp: Path, rtp_port: int, tag: str) -> list[asyncio.subprocess.Process]:
    """SIPp callers as processes this test can kill (the server they talk to dies mid-call): 18 demo customers
    who choose in the menus and wait for the server to end the call, and 2 unknown callers who hang up during the
    account prompt (so some calls end whatever the IVR does after the menus: closed message or queue)."""
    ivr = await _spawn_sipp(address, tmp, "uac_ivr_dtmf.xml", CALLS - HANG_UPS, tag + "-ivr%u@%s",
                            {"caller": CALLER, "dialed": "800100", "rtpport": rtp_port, "d1": "2", "p1": MENU,
                             "d2": "2", "p2": SUBMENU, "d3": "-", "p3": 0})
    hang_up = await _spawn_sipp(address, tmp, "uac_basic.xml", HANG_UPS, tag + "-hup%u@%s",
                                {"caller": "+393330000199", "dialed": "800100", "rtpport": rtp_port,
                                 "hold": 3000})
    return [ivr, hang_up]


async def _kill(procs: list[asyncio.subprocess.Process]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        await p.wait()


def _path(value) -> list:
    return json.loads(value or "[]")


async def _kill_and_restart(server: ServeProcess, tmp: Path, rtp_port: int, moment: str) -> None:
    sipp = await _start_callers(server.address, tmp, rtp_port, moment)
    try:
        ours = lambda rows: [r for r in rows if r[0].startswith(moment + "-")]  # noqa: E731
        before = await server.wait_rows(RECORDS, lambda rows: MOMENTS[moment](ours(rows)), timeout=60)
        server.kill9()
        assert await server.wait_exit(10) == -signal.SIGKILL
    finally:
        await _kill(sipp)

    assert server.rows("pragma integrity_check") == [("ok",)]
    after = {r[0]: r for r in server.rows(RECORDS)}
    for call_id, status, path, ivr_exit, reason in before:
        assert call_id in after, f"{moment}: committed record {call_id} lost"
        kept, seen = _path(after[call_id][2]), _path(path)
        assert kept[:len(seen)] == seen, f"{moment}: {call_id}: IVR path {seen} became {kept}"
        if status == "ended":
            assert after[call_id][1:] == (status, path, ivr_exit, reason), f"{moment}: {call_id} changed"
    left_active = sorted(c for c, r in after.items() if r[1] == "active")
    assert left_active, f"{moment}: the kill came too late to test the restart: no call was in progress"
    assert all(c.startswith(moment + "-") for c in left_active), "an earlier restart left records active"

    await server.start(seed_demo=False)
    restarted = {r[0]: r for r in server.rows(RECORDS)}
    assert set(restarted) == set(after)
    for call_id in left_active:
        _, status, path, _exit, reason = restarted[call_id]
        assert (status, reason) == ("ended", "server_restart"), restarted[call_id]
        assert path == after[call_id][2], "closing a stale record must keep its IVR path"
    for call_id in set(after) - set(left_active):
        assert restarted[call_id] == after[call_id]
    assert "closed %d call records left active" % len(left_active) in server.log


async def test_kill9_at_three_moments_loses_no_committed_record_and_restart_closes_active_calls(tmp_path):
    server = ServeProcess(tmp_path)
    sink = await RtpSink().open()
    try:
        await server.start()
        for moment in MOMENTS:
            await _kill_and_restart(server, tmp_path, sink.port, moment)
        assert server.rows("select count(*) from customers") == [(15,)]
        res = await run_sipp(server.address, "uac_basic.xml", tmp=tmp_path, timeout=30,
                             variables={"caller": "+393330000199", "dialed": "800100", "hold": 2500,
                                        "rtpport": sink.port},
                             extra=["-mp", str(sipp_media_port()), "-cid_str", "after-%u@%s"])
        assert res.rc == 0, res.stdout[-2000:] + res.errors[-2000:]
        await server.wait_rows("select status, ivr_exit from call_records where call_id = 'after-1@127.0.0.1'",
                               lambda rows: rows == [("ended", "hung_up")], timeout=20)
        assert server.rows("select count(*) from call_records where status = 'active'") == [(0,)]
        assert "Traceback" not in server.log, server.log[-3000:]
    finally:
        sink.close()
        await server.stop()


async def test_ivr_steps_are_committed_while_the_call_is_in_the_ivr(tmp_path):
    server = ServeProcess(tmp_path)
    sink = await RtpSink().open()
    sipp = None
    try:
        await server.start()
        sipp = await _start_callers(server.address, tmp_path, sink.port, "steps")
        # the voice step logs its decision after welcome, identification, greeting and two menus
        await server.wait_line(r"voice verification \[call steps-ivr1@", timeout=60)
        rows = server.rows(RECORDS)
        first = [r for r in rows if r[0] == "steps-ivr1@127.0.0.1"]
        assert first and first[0][1] == "active", first
        nodes = [e.get("node") for e in _path(first[0][2]) if e.get("event") == "node"]
        assert nodes[:3] == ["welcome", "identify", "greet"], nodes
    finally:
        sink.close()
        if sipp is not None:
            await _kill(sipp)
        await server.stop()
