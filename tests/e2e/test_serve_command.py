"""The README's run command, as a user types it: ``contact-server serve --config config/server.yaml --seed-demo``
in its own process (on a temporary copy of config/, with a free port), one SIPp call, and the caller hears the
bundled greeting of the demo's retail line. Then SIGTERM stops the server cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sqlite3
import sys
from pathlib import Path

import pytest

from ivr.media.audio import load_wav_8k
from tests.conftest import FIXTURES
from tests.e2e.harness import RtpSink, best_correlation
from tests.e2e.server_fixture import copy_config, run_sipp_call, server_environ

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(120)]

READY = re.compile(r"contact-server ready: call sip:800100@([\d.]+):(\d+).*agent desktop http://[\d.]+:(\d+)/")


def bundled_prompt(text: str, language: str) -> Path:
    index = json.loads((FIXTURES / "prompts" / "index.json").read_text())
    names = [n for n, e in index.items() if e["text"] == text and e["language"] == language]
    assert len(names) == 1, f"no bundled prompt for {text!r} ({language})"
    return FIXTURES / "prompts" / names[0]


def contact_server_command() -> list[str]:
    exe = Path(sys.executable).with_name("contact-server")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from ivr.cli import main; main()"]


def send_worker_expected() -> bool:
    from ivr.app import send_worker_needs_realtime, use_send_worker

    if not use_send_worker("auto"):
        return False
    if not send_worker_needs_realtime("auto"):
        return True
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


async def _read_until_ready(proc: asyncio.subprocess.Process, seen: list[str]) -> tuple[str, int, int]:
    while True:
        line = await proc.stdout.readline()
        if not line:
            raise AssertionError("the server exited before it was ready:\n" + "".join(seen[-40:]))
        seen.append(line.decode(errors="replace"))
        m = READY.search(seen[-1])
        if m:
            return m.group(1), int(m.group(2)), int(m.group(3))


async def _drain(proc: asyncio.subprocess.Process, seen: list[str]) -> None:
    while line := await proc.stdout.readline():
        seen.append(line.decode(errors="replace"))


async def test_serve_command_answers_and_greets(tmp_path):
    from voiceauth.crypto import generate_key

    config = copy_config(tmp_path)
    env = dict(os.environ) | server_environ(tmp_path) | {"VOICEAUTH_KEY": generate_key(), "PYTHONUNBUFFERED": "1"}
    env.pop("CONTACT_SERVER__IVR__WATCH", None)  # as shipped: the file watcher runs too
    proc = await asyncio.create_subprocess_exec(
        *contact_server_command(), "serve", "--config", str(config.relative_to(tmp_path)), "--seed-demo",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    seen: list[str] = []
    sink = await RtpSink().open()
    try:
        host, port, web_port = await asyncio.wait_for(_read_until_ready(proc, seen), 90)
        drain = asyncio.ensure_future(_drain(proc, seen))
        # an unknown number: welcome (1.5 s), then the account prompt; the caller hangs up after 4 s
        res = await run_sipp_call(f"{host}:{port}", "uac_basic.xml", tag="serve-greeting", timeout=30,
                                  tmp=tmp_path, variables={"caller": "+393330000199", "dialed": "800100",
                                                           "hold": 4000, "rtpport": sink.port})
        assert res.rc == 0, res.stdout[-1500:] + res.errors[-1500:]
        await asyncio.sleep(0.3)
        # the same process serves the web side: /metrics counts the call that just ended
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{web_port}/metrics") as resp:
                assert resp.status == 200
                exposition = await resp.text()
        assert 'contact_calls_total{outcome="ivr_abandoned"} 1.0' in exposition, exposition[:2000]
        assert "contact_active_calls 0.0" in exposition
        # RTP went out through the send worker process where rtp.send_worker: auto wants it on this machine
        assert f"contact_rtp_send_worker_up {1.0 if send_worker_expected() else 0.0}" in exposition
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
        await asyncio.wait_for(drain, 5)
    finally:
        sink.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = "".join(seen)
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]

    greeting = load_wav_8k(bundled_prompt("Benvenuto in Banca Aurora.", "it"))
    heard = sink.audio()
    assert len(heard) >= len(greeting)
    # the bundled WAV went out through mu-law: the caller's audio contains it almost exactly
    assert best_correlation(heard, greeting) > 0.98
    # it is what the caller heard first: the greeting starts within the first 100 ms of audio
    assert best_correlation(heard[:len(greeting) + 800], greeting) > 0.98
    # the database the command created holds the seeded demo customers and the call, ended, with its IVR exit
    with contextlib.closing(sqlite3.connect(tmp_path / "var" / "test.db")) as db:
        assert db.execute("select count(*) from customers").fetchone()[0] == 15
        rows = db.execute("select call_id, ani, dnis, status, ivr_exit, identified_by from call_records").fetchall()
    assert rows == [("serve-greeting-1@127.0.0.1", "+393330000199", "800100", "ended", "hung_up", "none")]
