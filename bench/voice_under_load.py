"""Voice verification while the server carries calls with audio both ways: worker processes vs threads.

The voice issue asks that 20 simultaneous verifications during 200 calls with audio leave RTP timing as it was
without them, because the model runs off the event loop. This script holds N SIPp calls (rtp_stream both ways,
as bench/sip_load.py) and, in ONE run, measures the server's RTP send lateness (p50/p99/max) and largest gap
between consecutive packets of a stream over equal windows:

  1. quiet                     no verifications
  2. process                   bursts of K verifications, model in worker processes (server default)
  3. quiet_again               no verifications (drift check: the machine's load may change during the run)
  4. thread                    bursts of K verifications, model in a worker thread of the server process

Each burst is K concurrent ``VoiceAuthService.verify`` calls (3 s of G.711 speech each, SQLite store), started
again as soon as the previous burst is decided. Decision latency (end of speech -> decision) is reported too.
On a shared or small machine the figures are noisy: compare the phases of one run, not runs with each other.
The server process uses the GIL switch interval that ``contact-server serve`` sets (ivr.app.GIL_SWITCH_INTERVAL_S,
0.5 ms); ``--switch-interval 0.005`` shows Python's default, where the store/decision threads delay the loop.

The issue's case (defaults; takes ~3 minutes, needs a quiet machine with >= 4 cores to be meaningful):

    .venv/bin/python bench/voice_under_load.py --calls 200 --verifications 20 --window 20

A short smoke run: ``--calls 50 --verifications 20 --window 8 --modes process,thread``. On a small machine,
``--voice-cpus 1`` reserves CPU 1 for the voice worker (and SIPp) and leaves the others to the server, as
``voice.cpus`` does in server.yaml.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from sip_load import GREETING, PromptApp, free_port, machine, run_sipp, start_server, SCENARIOS  # noqa: E402

from ivr.app import GIL_SWITCH_INTERVAL_S  # noqa: E402
from ivr.media.audio import load_wav_8k  # noqa: E402
from ivr.media.dtmf import DtmfMode  # noqa: E402

VOICES = REPO / "audio_fixtures" / "voices"


async def build_voice_service(tmp: Path, mode: str, store=None, cpus: tuple[int, ...] | None = None,
                              decisions: str = "process"):
    from voiceauth.crypto import KeyRing, generate_key
    from voiceauth.pool import create_pool
    from voiceauth.service import VoiceAuthService
    from voiceauth.store import SqlVoiceprintStore
    from voiceauth.verification import VerifierPolicy

    extra = {"cpus": cpus} if cpus and mode == "process" else {}
    pool = create_pool("resemblyzer", mode=mode, workers=1, max_queue=64, **extra)
    await pool.start()
    url = f"sqlite:///{tmp / 'voice.db'}"
    if store is None:
        store = SqlVoiceprintStore(url, KeyRing.from_base64(generate_key()))
    policy = VerifierPolicy.from_calibration("resemblyzer", "ulaw", 3, max_failures_per_day=10**6)
    decider = None
    if mode == "process" and decisions == "process":      # as contact-server serve does
        from voiceauth.decider import ProcessDecider

        decider = ProcessDecider(url, store.keyring, pool.model_name, policy, cpus=cpus)
        await decider.start()
    return VoiceAuthService(pool, store, policy, db_cpus=cpus if mode == "process" else None, decider=decider)


class GcPauses:
    """Cyclic GC collections of the server process (they hold the GIL, whichever thread triggers them)."""

    def __init__(self) -> None:
        import gc

        self.pauses: list[tuple[int, float]] = []
        self._t0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._t0) * 1000))

    def take(self) -> dict:
        got, self.pauses = self.pauses, []
        by_gen = {g: [ms for gg, ms in got if gg == g] for g in (0, 1, 2)}
        return {f"gen{g}": {"n": len(v), "max_ms": round(max(v), 2) if v else 0.0} for g, v in by_gen.items()}


GC = GcPauses()


def _stats(s) -> dict:
    return {"send_late_p50_ms": round(s.late_p50_ms, 3), "send_late_p99_ms": round(s.late_p99_ms, 3),
            "send_late_max_ms": round(s.late_max_ms, 3), "largest_gap_ms": round(s.gap_max_ms, 3),
            "gap_p99_ms": round(s.gap_p99_ms, 3), "packets": s.packets}


async def quiet_window(media, seconds: float) -> dict:
    media.reset_send_stats()
    GC.take()
    await asyncio.sleep(seconds)
    return {**_stats(media.send_stats()), "gc": GC.take()}


async def verification_window(media, service, probes: list[np.ndarray], k: int, seconds: float,
                              embed_only: bool = False) -> dict:
    media.reset_send_stats()
    latencies: list[float] = []
    decisions: dict[str, int] = {}

    async def one(i: int) -> None:
        t0 = time.monotonic()
        if embed_only:
            from voiceauth.analysis import EmbedWhen

            await service.pool.analyse(probes[i % len(probes)], 8000, service.verify_quality, EmbedWhen.ENOUGH_SPEECH)
            value = "embedded"
        else:
            res = await service.verify("c1", probes[i % len(probes)], 8000, call_id=f"bench-{i}-{t0}",
                                       now=time.time())
            value = res.decision.value
        latencies.append(time.monotonic() - t0)
        decisions[value] = decisions.get(value, 0) + 1

    bursts = 0
    GC.take()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.gather(*(one(i) for i in range(k)))
        bursts += 1
    stats = {**_stats(media.send_stats()), "gc": GC.take()}
    lat = np.array(latencies) * 1000
    stats.update({"bursts": bursts, "verifications": len(latencies), "decisions": decisions,
                  "decision_latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
                  "decision_latency_p99_ms": round(float(np.percentile(lat, 99)), 1)})
    return stats


async def main_async(args) -> dict:
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"process", "thread"}:
        raise SystemExit("--modes takes process and/or thread")
    tmp = Path(tempfile.mkdtemp())
    services = {}
    cpus = tuple(int(c) for c in args.voice_cpus.split(",")) if args.voice_cpus else None
    for mode in modes:
        services[mode] = await build_voice_service(tmp, mode, next(iter(services.values())).store if services else None,
                                                   cpus, args.decisions)
    if cpus:
        from ivr.app import _leave_cpus_to_voice

        _leave_cpus_to_voice(cpus)      # as contact-server serve does with voice.cpus
    first = next(iter(services.values()))
    takes = [VOICES / "ls-2414" / f"2414-128291-{n}.wav" for n in ("0001", "0006", "0007")]
    enroll = [(load_wav_8k(f), 8000) for f in takes]
    first.store.record_consent("c1", channel="bench", actor="bench", now=time.time())
    await first.enroll_recordings("c1", enroll, actor="bench", now=time.time())
    probes = [load_wav_8k(VOICES / "ls-2414" / f"2414-128291-{n}.wav")[: 3 * 8000] for n in ("0000", "0003")]

    voice = tmp / "voice.ulaw"
    import subprocess

    subprocess.run(["sox", str(GREETING), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(voice)],
                   check=True)
    scenario = tmp / "uac_voice.xml"
    scenario.write_text((SCENARIOS / "uac_voice.xml").read_text().replace("VOICE_FILE", str(voice)))
    if args.gc != "default":
        from ivr.app import GC_THRESHOLDS, tune_gc

        tune_gc(GC_THRESHOLDS if args.gc == "serve" else (700, 10, 10))
    sip, manager, media = await start_server(PromptApp(load_wav_8k(GREETING), loop=True), DtmfMode(args.dtmf_mode))
    phases = 2 + len(modes)
    hold = phases * args.window + 30 * len(modes) + args.calls / 50 + 10
    # with --voice-cpus the load generator (standing for the network) runs beside the voice workers
    pin = ["taskset", "-c", args.voice_cpus] if cpus else []
    sipp_args = pin + ["sipp", f"127.0.0.1:{sip.bound_port}", "-sf", str(scenario), "-i", "127.0.0.1",
                 "-p", str(free_port()), "-mp", str(free_port() & ~1), "-r", "50", "-m", str(args.calls),
                 "-l", str(args.calls), "-timeout", str(int(hold + 60)), "-nostdin", "-set", "caller", "+39333",
                 "-set", "dialed", "800100", "-set", "hold", str(int(hold * 1000)), "-set", "rtpport", "9",
                 "-recv_timeout", "20000", "-max_socket", "10000"]
    results: dict = {"machine": machine(), "command": " ".join(["bench/voice_under_load.py"] + sys.argv[1:]),
                     "calls": args.calls, "verifications_per_burst": args.verifications, "window_s": args.window,
                     "dtmf_mode": args.dtmf_mode, "probe_seconds": 3.0, "workers": 1,
                     "switch_interval_s": sys.getswitchinterval(), "voice_cpus": list(cpus) if cpus else None,
                     "server_cpus": sorted(os.sched_getaffinity(0)), "gc": args.gc,
                     "embed_only": args.embed_only, "decisions": args.decisions,
                     "send_worker": media.offload_on}
    phase: dict[str, dict] = {}
    try:
        sipp = asyncio.ensure_future(run_sipp(sipp_args, tmp, hold + 120))
        await asyncio.sleep(args.calls / 50 + 3)
        results["sessions_up"] = len(media.sessions)
        phase["quiet"] = await quiet_window(media, args.window)
        for i, mode in enumerate(modes):
            phase[mode] = await verification_window(media, services[mode], probes, args.verifications, args.window,
                                                    args.embed_only)
            phase[mode]["sessions"] = len(media.sessions)
            if i == 0:
                await asyncio.sleep(2)  # let the last burst's store writes settle
                phase["quiet_again"] = await quiet_window(media, args.window)
        rc, out = await sipp
    finally:
        await manager.shutdown(grace=1)
        await sip.stop()
        await media.close()
        for svc in services.values():
            await svc.close()
    from sip_load import parse_sipp_counts

    ok, failed = parse_sipp_counts(out)
    results.update({"sipp_successful": ok, "sipp_failed": failed, "phases": phase})
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--verifications", type=int, default=20)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--switch-interval", type=float, default=GIL_SWITCH_INTERVAL_S,
                    help="sys.setswitchinterval of the server process in seconds (default: what contact-server "
                         "serve sets; Python's own default is 0.005)")
    ap.add_argument("--modes", default="process,thread", help="pool modes to measure, in this order")
    ap.add_argument("--dtmf-mode", default="rfc4733", choices=["auto", "rfc4733", "inband", "info"])
    ap.add_argument("--voice-cpus", default="", help="e.g. 1: the voice workers and SIPp on these CPUs, the server "
                                                     "on the others (server.yaml voice.cpus)")
    ap.add_argument("--gc", default="serve", choices=["serve", "freeze", "default"],
                    help="serve: GC tuned as contact-server serve does (freeze + thresholds); freeze: freeze only; "
                         "default: Python's")
    ap.add_argument("--decisions", default="process", choices=["process", "thread"],
                    help="where verification decisions run with the process pool (server.yaml voice.decisions)")
    ap.add_argument("--embed-only", action="store_true",
                    help="embeddings without the store and the decision (shows what the decision work costs)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "voice_under_load.json"))
    args = ap.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    results = asyncio.run(main_async(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
