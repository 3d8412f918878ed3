"""Soak: the telephony core under half of its measured capacity for a long time, watching for leaks.

Load (two SIPp processes for the whole run): ``--rate`` new calls/s (answer, a 2 s prompt, caller's BYE; the
default 100/s is half of bench/sip_load.py's measured rate) and ``--media`` concurrent calls with audio both ways
(SIPp streams a voice file, the server loops a prompt; each held ``--media-hold`` s, replaced as it ends).

The server (the same SipServer + CallManager + MediaEngine as ``serve``, on uvloop) runs in a child process so
that its memory is measured alone. Every ``--interval`` s the child reports its RSS, open file descriptors,
asyncio tasks, calls and media sessions. At the end: the RSS slope (MB per hour, least squares over the samples
after the first ``--warmup`` s), failed calls from SIPp, and what is left open once the load has drained compared
with before it started (calls, media sessions, RTP sockets, tasks, fds).

    .venv/bin/python bench/soak.py                 # 30 minutes (the figure for issue 7)
    .venv/bin/python bench/soak.py --minutes 2     # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from sip_load import GREETING, SCENARIOS, free_port, machine, parse_sipp_counts  # noqa: E402


def _second_half_slope(samples: list[dict]) -> float | None:
    if len(samples) < 6:
        return None
    t = np.array([x["t"] for x in samples], float)
    half = t >= t[0] + (t[-1] - t[0]) / 2
    if half.sum() < 3:
        return None
    return round(float(np.polyfit(t[half] / 3600, np.array([x["rss_mb"] for x in samples])[half], 1)[0]), 2)


# ------------------------------------------------------------------ child: the server

def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _snapshot(manager, media) -> dict:
    return {"t": time.monotonic(), "rss_mb": round(_rss_mb(), 2), "fds": len(os.listdir("/proc/self/fd")),
            "tasks": len(asyncio.all_tasks()), "calls": len(manager.calls), "legs": len(manager.legs),
            "media_sessions": len(media.sessions), "sip_transactions": _sip_state(manager)}


def _sip_state(manager) -> int:
    ua = manager.sip.ua
    return sum(len(getattr(ua, name, ())) for name in ("_server_txs", "_client_txs", "_calls_by_callid"))


async def serve_child(interval: float) -> None:
    """Run the server; print 'port N', then one JSON sample per interval; 'stop' on stdin ends it."""
    from sip_load import PromptApp, start_server

    from ivr.media.audio import load_wav_8k
    from ivr.media.dtmf import DtmfMode

    pcm = load_wav_8k(GREETING)[: 2 * 8000]
    sip, manager, media = await start_server(PromptApp(pcm, loop=True), DtmfMode.AUTO)
    print(f"port {sip.bound_port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def sampler():
        while True:
            print("sample " + json.dumps(_snapshot(manager, media)), flush=True)
            await asyncio.sleep(interval)

    task = asyncio.ensure_future(sampler())
    while (line := await reader.readline()) and line.strip() != b"stop":
        if line.strip() == b"sample":
            print("sample " + json.dumps(_snapshot(manager, media)), flush=True)
    task.cancel()
    await manager.shutdown(grace=1)
    await sip.stop()
    await media.close()


# ------------------------------------------------------------------ parent: load and figures

def slope_mb_per_hour(samples: list[dict], warmup_s: float) -> float | None:
    if not samples:
        return None
    t0 = samples[0]["t"]
    pts = [(s["t"] - t0, s["rss_mb"]) for s in samples if s["t"] - t0 >= warmup_s]
    if len(pts) < 3:
        return None
    t, y = np.array(pts).T
    return float(np.polyfit(t / 3600.0, y, 1)[0])


async def _lines(proc, on_line) -> None:
    while line := await proc.stdout.readline():
        on_line(line.decode(errors="replace").rstrip("\n"))


async def run(args) -> dict:
    seconds = args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    voice = work / "voice.ulaw"
    subprocess.run(["sox", str(GREETING), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(voice)],
                   check=True)
    scenario = work / "uac_voice.xml"
    scenario.write_text((SCENARIOS / "uac_voice.xml").read_text().replace("VOICE_FILE", str(voice)))

    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", "--interval", str(args.interval), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=None)
    port_line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode()
    port = int(re.match(r"port (\d+)", port_line).group(1))
    samples: list[dict] = []
    latest: dict = {}

    def on_line(line: str) -> None:
        if line.startswith("sample "):
            s = json.loads(line[7:])
            latest.update(s)
            if loaded["on"]:
                samples.append(s)
                t = s["t"] - samples[0]["t"]
                print(f"t={t:7.0f}s rss {s['rss_mb']:8.1f} MB fds {s['fds']:5d} tasks {s['tasks']:5d} "
                      f"calls {s['calls']:5d} media {s['media_sessions']:5d} sip {s['sip_transactions']:6d}",
                      flush=True)

    loaded = {"on": False}
    reader = asyncio.ensure_future(_lines(child, on_line))

    async def ask_sample() -> dict:
        latest.clear()
        child.stdin.write(b"sample\n")
        await child.stdin.drain()
        while not latest:
            await asyncio.sleep(0.05)
        return dict(latest)

    await asyncio.sleep(1)
    baseline = await ask_sample()
    print(f"baseline: {baseline}", flush=True)

    common = ["-i", "127.0.0.1", "-nostdin", "-set", "caller", "+393331234567", "-set", "dialed", "800100",
              "-set", "rtpport", "9", "-max_socket", "10000"]
    rate_calls = int(args.rate * seconds)
    rate_args = ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / "uac_basic.xml"), "-p", str(free_port()),
                 "-mp", str(free_port() & ~1), "-r", str(args.rate), "-m", str(rate_calls), "-l",
                 str(args.rate * 10), "-timeout", str(int(seconds + 120)), "-set", "hold", "2000",
                 "-recv_timeout", "10000", *common]
    # each of the --media slots places calls back to back for the whole run, so SIPp ends on its own
    media_calls = args.media * max(1, int(seconds // args.media_hold))
    media_args = ["sipp", f"127.0.0.1:{port}", "-sf", str(scenario), "-p", str(free_port()),
                  "-mp", str(free_port() & ~1), "-r", str(max(1, args.media // 10)), "-m", str(media_calls),
                  "-l", str(args.media), "-timeout", str(int(seconds + 120)), "-set", "hold",
                  str(int(args.media_hold * 1000)), "-recv_timeout", "20000", *common]
    started = time.monotonic()
    loaded["on"] = True
    procs = []
    for name, a in (("rate", rate_args), ("media", media_args)):
        p = await asyncio.create_subprocess_exec(*a, cwd=work, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.STDOUT)
        procs.append((name, p))

    async def finish(name, p):
        try:
            out, _ = await asyncio.wait_for(p.communicate(), seconds + 180)
        except asyncio.TimeoutError:
            p.kill()
            out, _ = await p.communicate()
        return name, p.returncode, out.decode(errors="replace")

    rate_task = asyncio.ensure_future(finish(*procs[0]))
    media_task = asyncio.ensure_future(finish(*procs[1]))
    results_sipp = {}
    for task in (rate_task, media_task):
        name, rc, out = await task
        ok, failed = parse_sipp_counts(out)
        results_sipp[name] = {"successful": ok, "failed": failed, "sipp_rc": rc}
    elapsed = time.monotonic() - started
    loaded["on"] = False

    # drain: the server must be back to its baseline once every call has ended
    drained = await ask_sample()
    for _ in range(60):
        if drained["calls"] == 0 and drained["media_sessions"] == 0:
            break
        await asyncio.sleep(1)
        drained = await ask_sample()
    await asyncio.sleep(33)  # transactions linger for Timer J/K (32 s at most) after the last call
    drained = await ask_sample()
    child.stdin.write(b"stop\n")
    await child.stdin.drain()
    await asyncio.wait_for(child.wait(), 30)
    await reader

    slope = slope_mb_per_hour(samples, args.warmup)
    result = {
        "machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "minutes": args.minutes, "elapsed_s": round(elapsed, 1), "rate_per_s": args.rate,
        "media_concurrent": args.media, "media_hold_s": args.media_hold, "interval_s": args.interval,
        "warmup_s": args.warmup, "sipp": results_sipp,
        "failures": results_sipp["rate"]["failed"] + results_sipp["media"]["failed"],
        "rss_slope_mb_per_hour": None if slope is None else round(slope, 2),
        # the heap and caches fill during the first minutes; a leak shows as a slope in the second half too
        "rss_slope_second_half_mb_per_hour": _second_half_slope(samples),
        "rss_first_mb": samples[0]["rss_mb"] if samples else None,
        "rss_last_mb": samples[-1]["rss_mb"] if samples else None,
        "rss_max_mb": max((s["rss_mb"] for s in samples), default=None),
        "baseline": {k: v for k, v in baseline.items() if k != "t"},
        "after_drain": {k: v for k, v in drained.items() if k != "t"},
        "leaked": {k: drained[k] - baseline[k] for k in ("fds", "tasks", "calls", "legs", "media_sessions",
                                                        "sip_transactions")},
        "samples": [{k: v for k, v in s.items()} | {"t": round(s["t"] - samples[0]["t"], 1)} for s in samples],
    }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=int, default=100, help="new short calls per second")
    ap.add_argument("--media", type=int, default=100, help="concurrent calls with audio both ways")
    ap.add_argument("--media-hold", type=float, default=60, help="seconds each media call lasts")
    ap.add_argument("--interval", type=float, default=10, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60, help="seconds left out of the memory slope")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "soak.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if args.child:
        asyncio.run(serve_child(args.interval))
        return 0
    result = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"soak {args.minutes} min at {args.rate} calls/s + {args.media} media calls: "
          f"rate calls {result['sipp']['rate']}, media calls {result['sipp']['media']}; "
          f"RSS {result['rss_first_mb']} -> {result['rss_last_mb']} MB (max {result['rss_max_mb']}), "
          f"slope {result['rss_slope_mb_per_hour']} MB/h; left after drain vs baseline {result['leaked']}")
    print(f"wrote {args.out}")
    return 0 if result["failures"] == 0 and not any(result["leaked"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
