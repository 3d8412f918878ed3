"""kill -9 benchmark: ``contact-server serve`` killed at a random moment of a call load, several times.

The figure issue 7 asks for: kill -9 at a random moment during a 200-call load, 5 times: 0 committed records
lost, restart clean.

Each round, on the same database (so earlier rounds' records must survive later kills too):

1. ``--calls`` SIPp callers arrive at ``--rate``/s into the demo IVR (open around the clock for the run): most
   are a demo customer (enrolled for voice through the admin API first; the callers are silent, so the voice
   step records NOT_ENOUGH_SPEECH attempts) who picks cards > other and is queued, one in ten is an unknown
   caller who hangs up early. ``--agents`` demo agents are logged in on the desktop and available, their phones SIPp UAS that
   answer: at the kill some are on a call, most callers wait in the queue.
2. At a random moment (uniform between 1.5 s and the end of the arrivals + 45 s) an independent reader (its own
   database connection, nothing shared with the server) snapshots every committed call record (IVR path
   included), ticket, interaction, verification attempt, agent state event and biometric audit row, and the server's process group gets SIGKILL right
   after. Anything the snapshot saw was committed before the kill.
3. The server is started again. Checks: every snapshotted row is still there; rows are unchanged except what
   closing a stale call may change (status, end time and reason, durations, disposition; a ticket's status,
   disposition, closing time, notes only appended); ``ivr_path`` identical; no call record left ``active`` (each
   one closed with an end reason); the agents' state history ends in ``offline`` for everybody and their live
   states (wallboard, admin token) show nobody on call or ringing; the log says how many records it closed and
   shows no traceback; SQLite passes ``integrity_check``.
4. After the last round a fresh call is served end to end.

The database is a temporary SQLite file, or a fresh schema on PostgreSQL when ``CONTACT_SERVER_TEST_PG_URL`` is
set (dropped at the end).

    .venv/bin/python bench/kill_restart.py                          # the figure: 5 rounds of 200 calls
    .venv/bin/python bench/kill_restart.py --rounds 2 --calls 30    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from crm_bridge.db import make_engine, normalize_url  # noqa: E402

SCENARIOS = REPO / "tests" / "e2e" / "scenarios"
READY = re.compile(r"contact-server ready: call sip:800100@([\d.]+):(\d+).*agent desktop http://[\d.]+:(\d+)/")
CLOSED = re.compile(r"closed (\d+) call records left active")
CALLER, MENU, SUBMENU = "+393471000002", 6000, 2500   # as tests/e2e/test_crash_restart.py

# what closing a stale call at start-up may change; everything else of a committed row must stay as it was
MUTABLE = {
    "call_records": {"status", "ended_at", "end_reason", "talk_seconds", "wait_seconds", "disposition"},
    "tickets": {"status", "disposition", "closed_at", "updated_at", "notes"},
    "interactions": set(),
    "voiceauth_verification_attempts": set(),
    "agent_state_events": set(),
    "voiceauth_audit_log": set(),
}
KEYS = {"call_records": "call_id", "tickets": "id", "interactions": "id", "voiceauth_verification_attempts": "id",
        "agent_state_events": "id", "voiceauth_audit_log": "id"}
ENROLL = [REPO / "audio_fixtures" / "voices" / "ls-2414" / f"2414-128291-{n}.wav" for n in ("0001", "0006", "0007")]
AGENTS = [("2001", "a.ferrari", "demo-agent-1"), ("2002", "l.moretti", "demo-agent-2")]   # demo desktop logins


def _norm(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.replace(tzinfo=None).isoformat()
    if isinstance(v, (bytes, memoryview)):
        return bytes(v).hex()
    if isinstance(v, str) and v[:1] in "[{":
        with contextlib.suppress(ValueError):
            return json.loads(v)
    if hasattr(v, "value"):
        return v.value
    return v


class Reader:
    """The independent reader: its own engine on the server's database."""

    def __init__(self, url: str):
        self.engine = make_engine(url, immediate=False)
        self.sqlite = make_url(normalize_url(url)).get_backend_name() == "sqlite"

    def rows(self, table: str) -> dict[Any, dict[str, Any]]:
        with self.engine.connect() as conn:
            try:
                result = conn.execute(text(f"select * from {table}"))
            except Exception:
                return {}
            out = {}
            for r in result.mappings():
                row = {k: _norm(v) for k, v in r.items()}
                out[row[KEYS[table]]] = row
            return out

    def snapshot(self) -> dict[str, dict[Any, dict[str, Any]]]:
        return {t: self.rows(t) for t in KEYS}

    def scalar(self, sql: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql)).scalar()

    def close(self) -> None:
        self.engine.dispose()


class ServerProcess:
    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.port = self.web_port = 0
        self._reader: asyncio.Task | None = None

    async def start(self, seed_demo: bool) -> float:
        started = time.monotonic()
        exe = Path(sys.executable).with_name("contact-server")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from ivr.cli import main; main()"]
        args = ["serve", "--config", "config/server.yaml"] + (["--seed-demo"] if seed_demo else [])
        self.lines = []
        self.proc = await asyncio.create_subprocess_exec(*cmd, *args, cwd=self.root, env=self.env,
                                                         stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
            if not line:
                raise RuntimeError("server exited before it was ready:\n" + "".join(self.lines[-40:]))
            self.lines.append(line.decode(errors="replace"))
            m = READY.search(self.lines[-1])
            if m:
                self.port, self.web_port = int(m.group(2)), int(m.group(3))
                break
        self._reader = asyncio.ensure_future(self._drain())
        return time.monotonic() - started

    async def _drain(self) -> None:
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)

    async def wait(self) -> int:
        rc = await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return rc

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait(), 30)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.wait()

    @property
    def log(self) -> str:
        return "".join(self.lines)


def open_around_the_clock(root: Path) -> None:
    """The server runs on the real clock: open the demo's office hours all week, or outside them every caller
    hears the closed message and is hung up on instead of queueing for the agents."""
    path = root / "config" / "ivr" / "00-lines.yaml"
    week = r"    hours:\n(      .*\n)+?    holidays:\n(      - .*\n)+"
    text, n = re.subn(week, '    hours:\n      mon-sun: "00:00-24:00"\n', path.read_text(), count=1)
    if n != 1:
        raise RuntimeError(f"office_hours not found in {path}: update open_around_the_clock")
    path.write_text(text)


def point_agent_phones(root: Path, ports: dict[str, int]) -> None:
    """The demo roster with the agents' phones at SIPp UAS instances on loopback."""
    import yaml

    path = root / "config" / "queues.yaml"
    cfg = yaml.safe_load(path.read_text())
    for agent in cfg["agents"]:
        if agent["id"] in ports:
            agent["phone"] = {"uri": f"sip:{agent['id']}@127.0.0.1:{ports[agent['id']]}"}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))


async def agents_available(web_port: int, n: int) -> int:
    """Log agents in on the desktop and make them available, as they would after a restart; returns how many."""
    import aiohttp

    base = f"http://127.0.0.1:{web_port}"
    ready = 0
    for _, login, password in AGENTS[:n]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            r = await http.post(f"{base}/login", data={"login": login, "password": password},
                                headers={"Origin": base}, allow_redirects=False)
            if r.status != 302:
                continue
            r = await http.post(f"{base}/desktop/state", json={"action": "available"}, headers={"Origin": base})
            ready += r.status == 200
    return ready


async def enroll_caller(web_port: int, token: str, reader: "Reader") -> str | None:
    """The demo caller's voiceprint through the admin API, so the IVR's voice step verifies (and records an
    attempt: the SIPp callers are silent, NOT_ENOUGH_SPEECH) instead of answering NOT_ENROLLED at once."""
    import aiohttp

    with reader.engine.connect() as conn:
        cid = conn.execute(text("select customer_id from phone_numbers where e164 = :p"), {"p": CALLER}).scalar()
    if cid is None:
        return "demo caller not found"
    form = aiohttp.FormData()
    for path in ENROLL:
        form.add_field("audio", path.read_bytes(), filename=path.name, content_type="audio/wav")
    for k, v in (("consent", "true"), ("consent_channel", "bench"), ("actor", "kill_restart")):
        form.add_field(k, v)
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"http://127.0.0.1:{web_port}/api/v1/customers/{cid}/voice-enrollment", data=form,
                            headers={"Authorization": f"Bearer {token}"})
        return None if r.status == 201 else f"enrollment refused: {r.status} {await r.text()}"


def last_agent_states(snapshot: dict) -> dict[str, str]:
    last: dict[str, tuple[int, str]] = {}
    for key, row in snapshot["agent_state_events"].items():
        if row["agent_id"] not in last or key > last[row["agent_id"]][0]:
            last[row["agent_id"]] = (key, row["state"])
    return {a: st for a, (_, st) in last.items()}


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def spawn_sipp(port: int, work: Path, scenario: str, calls: int, rate: float, cid: str,
                     variables: dict[str, Any]) -> asyncio.subprocess.Process:
    args = ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
            "-p", str(free_udp_port()), "-mp", str(free_udp_port() & ~3), "-m", str(calls), "-r", str(rate),
            "-l", str(calls), "-timeout", "120", "-nostdin", "-cid_str", cid, "-t", "u1", "-max_socket", "2000"]
    for k, v in variables.items():
        args += ["-set", k, str(v)]
    return await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL, cwd=work)


def _may_progress(old: Any) -> bool:
    """A column that still had its initial value when read may be filled in by the call's next committed step
    (the reader's snapshot and the kill are a few milliseconds apart)."""
    return old is None or old in ([], 0, "none")


def compare(before: dict, after: dict) -> list[str]:
    """Problems: committed rows missing or changed beyond what the call's later steps and closing a stale call
    may do. ``ivr_path`` may only grow at its end; notes may only be appended to."""
    problems = []
    for table, rows in before.items():
        now = after[table]
        for key, row in rows.items():
            if key not in now:
                problems.append(f"{table} {key}: committed row lost")
                continue
            new = now[key]
            ended = table == "call_records" and row["status"] == "ended"
            for col, old in row.items():
                value = new.get(col)
                if value == old:
                    continue
                if col == "ivr_path" and not ended and isinstance(value, list) and value[:len(old)] == old:
                    continue
                if col == "notes" and str(value or "").startswith(str(old or "")):
                    continue
                if col in MUTABLE[table] and not ended:
                    continue
                if _may_progress(old) and (not ended or col in ("wrapup_seconds", "disposition")):
                    continue
                problems.append(f"{table} {key}: {col} changed {old!r} -> {value!r}")
    return problems


def agent_states(web_port: int, token: str) -> list[dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{web_port}/supervisor/wallboard.json",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        snap = json.loads(resp.read())
    return list(snap.get("agents", []))


BUSY = ("on_call", "reserved", "ringing")


async def one_round(n: int, server: ServerProcess, reader: Reader, work: Path, args, rng: random.Random,
                    rtp_port: int) -> dict:
    hang_ups = max(1, args.calls // 10)
    tag = f"r{n}"
    procs = [
        await spawn_sipp(server.port, work, "uac_ivr_dtmf.xml", args.calls - hang_ups, args.rate, tag + "-ivr%u@%s",
                         {"caller": CALLER, "dialed": "800100", "rtpport": rtp_port, "d1": "2", "p1": MENU,
                          "d2": "2", "p2": SUBMENU, "d3": "-", "p3": 0}),
        await spawn_sipp(server.port, work, "uac_basic.xml", hang_ups, max(1.0, args.rate / 10), tag + "-hup%u@%s",
                         {"caller": "+393330000199", "dialed": "800100", "rtpport": rtp_port, "hold": 3000}),
    ]
    load_started = time.monotonic()
    kill_at = rng.uniform(1.5, args.calls / args.rate + 45.0)   # late enough to catch callers with agents
    await asyncio.sleep(kill_at)
    before = await asyncio.get_running_loop().run_in_executor(None, reader.snapshot)
    server.kill9()
    killed_after = time.monotonic() - load_started
    rc = await server.wait()
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        await p.wait()
    agents_at_kill = last_agent_states(before)
    ours = {k: r for k, r in before["call_records"].items() if k.startswith(tag + "-")}
    active_at_kill = sorted(k for k, r in before["call_records"].items() if r["status"] == "active")
    integrity = reader.scalar("pragma integrity_check") if reader.sqlite else "n/a"
    restart_s = await server.start(seed_demo=False)
    after = await asyncio.get_running_loop().run_in_executor(None, reader.snapshot)
    problems = compare(before, after)
    still_active = sorted(k for k, r in after["call_records"].items() if r["status"] == "active"
                          and k in before["call_records"])
    unclosed = [k for k in active_at_kill if after["call_records"].get(k, {}).get("end_reason") is None]
    problems += [f"call_records {k}: still active after restart" for k in still_active]
    problems += [f"call_records {k}: closed without an end reason" for k in unclosed]
    m = CLOSED.search(server.log)
    closed = int(m.group(1)) if m else 0
    if closed < len(active_at_kill):
        problems.append(f"restart closed {closed} records, {len(active_at_kill)} were active at the snapshot")
    if "Traceback" in server.log:
        problems.append("traceback in the restarted server's log")
    if integrity not in ("ok", "n/a"):
        problems.append(f"integrity_check: {integrity}")
    history_after = last_agent_states(after)
    problems += [f"agent {a}: last recorded state {st} after restart" for a, st in history_after.items()
                 if st != "offline"]
    agents = agent_states(server.web_port, args.admin_token)
    if not agents:
        problems.append("the wallboard listed no agents: their states could not be checked")
    problems += [f"agent {a.get('id')} left {a.get('state')}" for a in agents if str(a.get("state")) in BUSY]
    return {"round": n, "kill_after_s": round(killed_after, 2), "server_exit": rc,
            "records_at_kill": {t: len(r) for t, r in before.items()}, "this_round_records": len(ours),
            "this_round_ended_at_kill": sum(r["status"] == "ended" for r in ours.values()),
            "active_at_kill": len(active_at_kill), "closed_on_restart": closed,
            "restart_ready_s": round(restart_s, 2), "integrity_check": integrity,
            "agents_in_history_at_kill": agents_at_kill,
            "agents_on_call_at_kill": sum(st in BUSY for st in agents_at_kill.values()),
            "agent_states_after_restart": sorted({str(a.get("state")) for a in agents}),
            "agents_made_available_after_restart": await agents_available(server.web_port, args.agents),
            "problems": problems}


async def final_call(server: ServerProcess, reader: Reader, work: Path, rtp_port: int) -> bool:
    proc = await spawn_sipp(server.port, work, "uac_basic.xml", 1, 1, "after-%u@%s",
                            {"caller": "+393330000199", "dialed": "800100", "hold": 2500, "rtpport": rtp_port})
    rc = await asyncio.wait_for(proc.wait(), 60)
    for _ in range(40):
        row = reader.rows("call_records").get("after-1@127.0.0.1")
        if row and row["status"] == "ended":
            return rc == 0
        await asyncio.sleep(0.5)
    return False


async def run(args) -> dict:
    from voiceauth.crypto import generate_key

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kill_restart_"))
    shutil.copytree(REPO / "config", root / "config")
    (root / "audio_fixtures").symlink_to(REPO / "audio_fixtures", target_is_directory=True)
    pg_base = os.environ.get("CONTACT_SERVER_TEST_PG_URL")
    schema = None
    if pg_base:
        schema = f"killrestart_{uuid.uuid4().hex[:10]}"
        admin = make_engine(pg_base)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        url = make_url(normalize_url(pg_base)).update_query_dict(
            {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    else:
        (root / "var").mkdir()
        url = f"sqlite:///{root / 'var' / 'bench.db'}"
    args.admin_token = secrets.token_urlsafe(24)
    env = dict(os.environ) | {
        "CONTACT_SERVER__SIP__PORT": "0", "CONTACT_SERVER__WEB__PORT": "0", "CONTACT_SERVER__SIP__TRANSPORTS": "[udp]",
        "CONTACT_SERVER__RTP__PORT_MIN": "32000", "CONTACT_SERVER__RTP__PORT_MAX": "35998",
        "CONTACT_SERVER_DATABASE_URL": url, "CONTACT_SERVER__IVR__WATCH": "false",
        "CONTACT_SERVER__LOGGING__LEVEL": "INFO", "CONTACT_SERVER_ADMIN_TOKEN": args.admin_token,
        "VOICEAUTH_KEY": generate_key(), "PYTHONUNBUFFERED": "1",
    }
    work = root / "sipp"
    work.mkdir()
    phone_ports = {aid: free_udp_port() for aid, _, _ in AGENTS[:args.agents]}
    point_agent_phones(root, phone_ports)
    open_around_the_clock(root)
    phones = [await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SCENARIOS / "uas_agent_answer.xml"), "-i", "127.0.0.1", "-p", str(port),
        "-mp", str(free_udp_port() & ~3), "-m", "100000", "-nostdin", "-set", "ring", "300",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=work)
        for port in phone_ports.values()]
    server = ServerProcess(root, env)
    rounds = []
    reader = None
    rtp_sink = free_udp_port()  # nobody listens: the callers' audio goes nowhere, as in the e2e tests
    try:
        await server.start(seed_demo=True)
        await agents_available(server.web_port, args.agents)
        reader = Reader(url)
        enrollment_problem = await enroll_caller(server.web_port, args.admin_token, reader)
        if enrollment_problem:
            print("voice verification not exercised:", enrollment_problem, flush=True)
        for n in range(1, args.rounds + 1):
            r = await one_round(n, server, reader, work, args, rng, rtp_sink)
            rounds.append(r)
            print(f"round {n}: killed after {r['kill_after_s']} s with {r['this_round_records']} records of this "
                  f"round ({r['active_at_kill']} active in all); restart closed {r['closed_on_restart']}, ready in "
                  f"{r['restart_ready_s']} s; problems: {len(r['problems'])}", flush=True)
            for p in r["problems"][:20]:
                print("   ", p)
        served = await final_call(server, reader, work, rtp_sink)
        left_active = reader.scalar("select count(*) from call_records where status = 'active'")
    finally:
        await server.stop()
        for p in phones:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()
        if reader is not None:
            reader.close()
        if schema is not None:
            admin = make_engine(pg_base)
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    lost = sum(1 for r in rounds for p in r["problems"] if "lost" in p)
    return {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "database": "postgresql" if pg_base else "sqlite",
            "conditions": {"rounds": args.rounds, "calls_per_round": args.calls, "rate": args.rate,
                           "agents": args.agents,
                           "seed": args.seed, "cores": os.cpu_count()},
            "rounds": rounds, "committed_records_lost": lost,
            "problems": sum(len(r["problems"]) for r in rounds),
            "caller_enrolled_for_voice": enrollment_problem is None,
            "call_after_last_restart_served": served, "left_active_at_end": left_active}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200, help="callers per round")
    ap.add_argument("--rate", type=float, default=20, help="new calls per second")
    ap.add_argument("--agents", type=int, default=2, choices=[0, 1, 2],
                    help="demo agents logged in and available, their phones SIPp UAS that answer")
    ap.add_argument("--seed", type=int, default=None, help="for the kill moments (random when omitted)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (config, SQLite, logs)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "kill_restart.json"))
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if not shutil.which("sipp"):
        print("sipp is not installed: bash scripts/setup.sh --test", file=sys.stderr)
        return 2
    result = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{args.rounds} kills ({result['database']}): {result['committed_records_lost']} committed records lost, "
          f"{result['problems']} problems; call after the last restart served: "
          f"{result['call_after_last_restart_served']}; records left active: {result['left_active_at_end']}")
    print(f"written to {args.out}")
    return 0 if result["problems"] == 0 and result["call_after_last_restart_served"] else 1


if __name__ == "__main__":
    sys.exit(main())
