"""Voice verification while the server carries calls with audio both ways.

The voice issue asks that 20 simultaneous verifications during 200 calls with audio leave RTP timing as it was
without them, because the model runs in a worker pool off the event loop. This script holds N SIPp calls
(rtp_stream both ways, as bench/sip_load.py) and measures the server's RTP send lateness over two equal windows:
one quiet, one during which bursts of K verifications run in the same process (the real VoiceAuthService, GE2E
encoder pool, SQLite store). It also reports each verification's latency from end of speech to decision.

    .venv/bin/python bench/voice_under_load.py [--calls 200] [--verifications 20] [--window 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from sip_load import GREETING, PromptApp, free_port, machine, run_sipp, start_server, SCENARIOS  # noqa: E402

from ivr.media.audio import load_wav_8k  # noqa: E402
from ivr.media.dtmf import DtmfMode  # noqa: E402

VOICES = REPO / "audio_fixtures" / "voices"


async def build_voice_service(tmp: Path):
    from voiceauth.crypto import KeyRing, generate_key
    from voiceauth.encoders import create_encoder
    from voiceauth.pool import EncoderPool
    from voiceauth.service import VoiceAuthService
    from voiceauth.store import SqlVoiceprintStore
    from voiceauth.verification import VerifierPolicy

    pool = EncoderPool(lambda: create_encoder("resemblyzer"), workers=1, max_queue=64)
    await pool.start()
    store = SqlVoiceprintStore(f"sqlite:///{tmp / 'voice.db'}", KeyRing.from_base64(generate_key()))
    policy = VerifierPolicy.from_calibration("resemblyzer", "ulaw", 3, max_failures_per_day=10**6)
    return VoiceAuthService(pool, store, policy)


async def main_async(args) -> dict:
    tmp = Path(tempfile.mkdtemp())
    service = await build_voice_service(tmp)
    takes = [VOICES / "ls-2414" / f"2414-128291-{n}.wav" for n in ("0001", "0006", "0007")]
    enroll = [(load_wav_8k(f), 8000) for f in takes]
    service.store.record_consent("c1", channel="bench", actor="bench", now=time.time())
    await service.enroll_recordings("c1", enroll, actor="bench", now=time.time())
    probe = load_wav_8k(VOICES / "ls-2414" / "2414-128291-0000.wav")[: 3 * 8000]

    voice = tmp / "voice.ulaw"
    import subprocess

    subprocess.run(["sox", str(GREETING), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(voice)],
                   check=True)
    scenario = tmp / "uac_voice.xml"
    scenario.write_text((SCENARIOS / "uac_voice.xml").read_text().replace("VOICE_FILE", str(voice)))
    sip, manager, media = await start_server(PromptApp(load_wav_8k(GREETING), loop=True), DtmfMode(args.dtmf_mode))
    hold = 2 * args.window + args.calls / 50 + 10
    sipp_args = ["sipp", f"127.0.0.1:{sip.bound_port}", "-sf", str(scenario), "-i", "127.0.0.1",
                 "-p", str(free_port()), "-mp", str(free_port() & ~1), "-r", "50", "-m", str(args.calls),
                 "-l", str(args.calls), "-timeout", str(int(hold + 60)), "-nostdin", "-set", "caller", "+39333",
                 "-set", "dialed", "800100", "-set", "hold", str(int(hold * 1000)), "-set", "rtpport", "9",
                 "-recv_timeout", "20000", "-max_socket", "10000"]
    results: dict = {"machine": machine(), "calls": args.calls, "verifications_per_burst": args.verifications,
                     "window_s": args.window, "dtmf_mode": args.dtmf_mode}
    try:
        sipp = asyncio.ensure_future(run_sipp(sipp_args, tmp, hold + 120))
        await asyncio.sleep(args.calls / 50 + 3)
        results["sessions_up"] = len(media.sessions)

        media.reset_send_stats()
        await asyncio.sleep(args.window)
        quiet = media.send_stats()

        media.reset_send_stats()
        latencies: list[float] = []
        decisions: dict[str, int] = {}
        deadline = time.monotonic() + args.window

        async def one(i: int) -> None:
            t0 = time.monotonic()
            res = await service.verify("c1", probe, 8000, call_id=f"bench-{i}-{t0}", now=time.time())
            latencies.append(time.monotonic() - t0)
            decisions[res.decision.value] = decisions.get(res.decision.value, 0) + 1

        bursts = 0
        while time.monotonic() < deadline:
            await asyncio.gather(*(one(i) for i in range(args.verifications)))
            bursts += 1
        loaded = media.send_stats()
        rc, out = await sipp
    finally:
        await manager.shutdown(grace=1)
        await sip.stop()
        await media.close()
        await service.pool.close()
    from sip_load import parse_sipp_counts

    ok, failed = parse_sipp_counts(out)
    lat = np.array(latencies) * 1000
    results.update({
        "sipp_successful": ok, "sipp_failed": failed,
        "without_verifications": {"send_late_p50_ms": round(quiet.late_p50_ms, 3),
                                  "send_late_p99_ms": round(quiet.late_p99_ms, 3),
                                  "largest_gap_ms": round(quiet.gap_max_ms, 3), "packets": quiet.packets},
        "with_verifications": {"send_late_p50_ms": round(loaded.late_p50_ms, 3),
                               "send_late_p99_ms": round(loaded.late_p99_ms, 3),
                               "largest_gap_ms": round(loaded.gap_max_ms, 3), "packets": loaded.packets,
                               "bursts": bursts, "verifications": len(latencies), "decisions": decisions,
                               "decision_latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
                               "decision_latency_p99_ms": round(float(np.percentile(lat, 99)), 1)},
    })
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--verifications", type=int, default=20)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--dtmf-mode", default="rfc4733", choices=["auto", "rfc4733", "inband", "info"])
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "voice_under_load.json"))
    args = ap.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    results = asyncio.run(main_async(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
