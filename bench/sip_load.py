"""SIP load benchmark: SIPp callers against the server's telephony core on loopback.

Two measurements, as the telephony issue asks:

1. New-call rate: SIPp places calls at increasing rates (answer, a 2 s prompt heard by the caller, BYE). For each
   rate it records failed calls and the call set-up time (INVITE -> 200 OK, from SIPp's -trace_rtt). The figure
   is the highest rate with < 0.1% failures.
2. Concurrent calls with audio both ways: SIPp streams the caller's voice (rtp_stream) while the server plays a
   prompt in a loop; calls are held for a while at each level. For each level it records failures and the
   server's RTP send timing (lateness of each packet against its planned time: p50/p99, and the largest gap
   between two packets of one call).

The server runs in this process on uvloop (the same SipServer + CallManager + MediaEngine as ``serve``), SIPp in
a subprocess: on a 2-core machine they compete for the CPU, as they did for the Asterisk reference figures.

    .venv/bin/python bench/sip_load.py                     # full run, several minutes
    .venv/bin/python bench/sip_load.py --quick             # a short smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ivr.calls import Call, CallLimits, CallManager  # noqa: E402
from ivr.media.audio import load_wav_8k  # noqa: E402
from ivr.media.dtmf import DtmfMode  # noqa: E402
from ivr.media.engine import MediaEngine  # noqa: E402
from ivr.sip.transport import SipServer  # noqa: E402
from ivr.sip.useragent import SipUserAgent, UaConfig  # noqa: E402

SCENARIOS = REPO / "tests" / "e2e" / "scenarios"
GREETING = REPO / "audio_fixtures" / "tests" / "greeting_en.wav"


class PromptApp:
    """Answer and play the prompt; in ``loop`` mode keep playing until the caller hangs up."""

    def __init__(self, pcm: np.ndarray, loop: bool):
        self.pcm = pcm
        self.loop = loop

    async def run(self, call: Call) -> None:
        await call.answer()
        while True:
            await call.play(self.pcm)
            if not self.loop:
                await call.leg.wait_ended()
                return


async def start_server(app, dtmf_mode: DtmfMode,
                       send_worker: bool | None = None,
                       send_priority: str = "realtime") -> tuple[SipServer, CallManager, MediaEngine]:
    """As ``serve`` wires it; ``send_worker`` None: as ``rtp.send_worker: auto`` decides on this machine."""
    from ivr.app import send_worker_needs_realtime, use_send_worker

    needs_realtime = False
    if send_worker is None:
        send_worker = use_send_worker("auto")
        needs_realtime = send_worker_needs_realtime("auto")
    ua = SipUserAgent(UaConfig(host="127.0.0.1", port=0))
    media = MediaEngine("127.0.0.1", 20000, 29998, dtmf_mode=dtmf_mode, send_offload=send_worker,
                        send_priority=send_priority, send_needs_realtime=needs_realtime)
    await media.start()
    ref: dict = {}

    async def on_event(ev):
        ref["m"].handle_event(ev)

    sip = SipServer(ua, "127.0.0.1", 0, on_event=on_event)
    manager = CallManager(sip, media, app, local_ip="127.0.0.1",
                          limits=CallLimits(max_concurrent_calls=5000, max_calls_per_second_per_source=100000))
    ref["m"] = manager
    await sip.start()
    return sip, manager, media


def parse_sipp_counts(stdout: str) -> tuple[int, int]:
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", stdout)
    bad = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", stdout)
    return (int(ok[-1]) if ok else 0), (int(bad[-1]) if bad else 0)


def read_rtts(workdir: Path) -> np.ndarray:
    values = []
    for f in glob.glob(str(workdir / "*_rtt.csv")):
        for line in Path(f).read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    values.append(float(parts[1]))
                except ValueError:
                    pass
    return np.array(values)


async def run_sipp(args: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    return proc.returncode, out.decode(errors="replace")


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def rate_step(port: int, rate: int, seconds: float, hold_ms: int) -> dict:
    calls = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args = ["sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIOS / "uac_basic.xml"), "-i", "127.0.0.1",
                "-p", str(free_port()), "-mp", str(free_port() & ~1), "-r", str(rate), "-m", str(calls),
                "-l", str(rate * 10), "-timeout", str(int(seconds + 60)), "-nostdin", "-trace_rtt", "-rtt_freq", "1",
                "-set", "caller", "+393331234567", "-set", "dialed", "800100", "-set", "hold", str(hold_ms),
                "-set", "rtpport", "9", "-recv_timeout", "10000", "-max_socket", "10000"]
        started = time.monotonic()
        rc, out = await run_sipp(args, work, seconds + 90)
        elapsed = time.monotonic() - started
        ok, failed = parse_sipp_counts(out)
        rtts = read_rtts(work)
    total = ok + failed
    return {"rate": rate, "calls": calls, "successful": ok, "failed": failed,
            "failure_pct": 100.0 * failed / total if total else 100.0, "elapsed_s": round(elapsed, 1),
            "setup_p50_ms": float(np.percentile(rtts, 50)) if len(rtts) else None,
            "setup_p99_ms": float(np.percentile(rtts, 99)) if len(rtts) else None, "sipp_rc": rc}


async def concurrency_step(port: int, media: MediaEngine, n: int, hold_s: float, voice: Path) -> dict:
    ramp = max(20, min(100, n // 4))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scenario = work / "uac_voice.xml"
        scenario.write_text((SCENARIOS / "uac_voice.xml").read_text().replace("VOICE_FILE", str(voice)))
        args = ["sipp", f"127.0.0.1:{port}", "-sf", str(scenario), "-i", "127.0.0.1",
                "-p", str(free_port()), "-mp", str(free_port() & ~1), "-r", str(ramp), "-m", str(n), "-l", str(n),
                "-timeout", str(int(hold_s + n / ramp + 60)), "-nostdin", "-set", "caller", "+393331234567",
                "-set", "dialed", "800100", "-set", "hold", str(int(hold_s * 1000)), "-set", "rtpport", "9",
                "-recv_timeout", "20000", "-max_socket", "10000"]
        task = asyncio.ensure_future(run_sipp(args, work, hold_s + n / ramp + 120))
        # measure only once every call is up and streaming
        ramp_time = n / ramp
        await asyncio.sleep(ramp_time + 1.0)
        media.reset_send_stats()
        measured_from = time.monotonic()
        peak = len(media.sessions)
        await asyncio.sleep(max(1.0, hold_s - ramp_time - 2.0))
        stats = media.send_stats()
        peak = max(peak, len(media.sessions))
        window = time.monotonic() - measured_from
        rc, out = await task
    ok, failed = parse_sipp_counts(out)
    lost = sum(s.stats.lost for s in media.sessions)
    return {"concurrent": n, "peak_sessions": peak, "successful": ok, "failed": failed,
            "measured_window_s": round(window, 1), "packets_measured": stats.packets,
            "send_late_p50_ms": round(stats.late_p50_ms, 3), "send_late_p99_ms": round(stats.late_p99_ms, 3),
            "send_late_max_ms": round(stats.late_max_ms, 3), "gap_p99_ms": round(stats.gap_p99_ms, 3),
            "largest_gap_ms": round(stats.gap_max_ms, 3), "send_jitter_p50_ms": round(stats.jitter_p50_ms, 3),
            "send_jitter_p99_ms": round(stats.jitter_p99_ms, 3), "send_jitter_max_ms": round(stats.jitter_max_ms, 3), "skipped_frames": stats.skipped_frames, "sipp_rc": rc,
            "rx_lost_open_sessions": lost}


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "sipp": subprocess.run(["sipp", "-v"], capture_output=True,
                                                                    text=True).stdout.strip().splitlines()[0:1]}


async def main_async(args) -> dict:
    pcm = load_wav_8k(GREETING)
    prompt_2s = pcm[: 2 * 8000]
    results: dict = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "dtmf_mode": args.dtmf_mode, "rate_steps": [], "concurrency_steps": []}
    mode = DtmfMode(args.dtmf_mode)

    sip, manager, media = await start_server(PromptApp(prompt_2s, loop=False), mode, args.send_worker,
                                             args.send_worker_priority)
    results["send_worker"] = media.offload_on
    results["send_worker_priority"] = media.offload.priority_got if media.offload else None
    try:
        for rate in args.rates:
            step = await rate_step(sip.bound_port, rate, args.step_seconds, hold_ms=2000)
            print(f"rate {rate:>4}/s: {step['successful']} ok, {step['failed']} failed "
                  f"({step['failure_pct']:.3f}%), setup p50 {step['setup_p50_ms']} ms p99 {step['setup_p99_ms']} ms",
                  flush=True)
            results["rate_steps"].append(step)
            await asyncio.sleep(3)
            if step["failure_pct"] > 5:
                break
    finally:
        await manager.shutdown(grace=1)
        await sip.stop()
        await media.close()
    good = [s for s in results["rate_steps"] if s["failure_pct"] < 0.1]
    results["max_rate_under_0_1pct"] = max((s["rate"] for s in good), default=0)

    voice = Path(tempfile.mkdtemp()) / "voice.ulaw"
    subprocess.run(["sox", str(GREETING), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(voice)],
                   check=True)
    sip, manager, media = await start_server(PromptApp(pcm, loop=True), mode, args.send_worker, args.send_worker_priority)
    try:
        for n in args.concurrent:
            step = await concurrency_step(sip.bound_port, media, n, args.hold, voice)
            print(f"{n:>4} concurrent: {step['successful']} ok, {step['failed']} failed, send late p99 "
                  f"{step['send_late_p99_ms']} ms, jitter p99 {step['send_jitter_p99_ms']} ms, largest gap "
                  f"{step['largest_gap_ms']} ms", flush=True)
            results["concurrency_steps"].append(step)
            await asyncio.sleep(3)
            if step["failed"] > 0:
                break
    finally:
        await manager.shutdown(grace=1)
        await sip.stop()
        await media.close()
    good_c = [s for s in results["concurrency_steps"] if s["failed"] == 0]
    results["max_concurrent_media_calls_0_failures"] = max((s["concurrent"] for s in good_c), default=0)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100, 200, 300, 400, 500, 600])
    ap.add_argument("--step-seconds", type=float, default=15)
    ap.add_argument("--concurrent", type=lambda s: [int(x) for x in s.split(",")], default=[100, 250, 400, 500, 600])
    ap.add_argument("--hold", type=float, default=30, help="seconds each concurrent call is held")
    ap.add_argument("--dtmf-mode", default="auto", choices=["auto", "rfc4733", "inband", "info"])
    ap.add_argument("--send-worker", action=argparse.BooleanOptionalAction, default=None,
                    help="RTP sent by the send worker process (default: as rtp.send_worker: auto decides here)")
    ap.add_argument("--send-worker-priority", default="realtime", choices=["realtime", "nice", "normal"])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "sip_load.json"))
    args = ap.parse_args()
    if args.quick:
        args.rates, args.step_seconds, args.concurrent, args.hold = [20, 50], 5, [20, 50], 10
    if not shutil.which("sipp"):
        print("sipp is not installed: bash scripts/setup.sh --test", file=sys.stderr)
        return 2
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    from ivr.app import GIL_SWITCH_INTERVAL_S, tune_gc

    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # as ``serve`` runs
    tune_gc()
    results = asyncio.run(main_async(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k.startswith("max")}, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
