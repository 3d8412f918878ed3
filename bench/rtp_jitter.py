"""RTP send-jitter benchmark: N session pairs on loopback, each end playing audio to the other.

    .venv/bin/python bench/rtp_jitter.py --pairs 200 --seconds 20 [--uvloop]

Prints and writes bench/results/rtp_jitter.json: packet lateness against the planned deadlines (p50/p99/max),
inter-packet gaps per session (p50/p99/max), skipped frames, packets sent/received/lost, CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.media.dtmf import DtmfMode  # noqa: E402
from ivr.media.sdp import answer_offer, make_offer, parse_answer  # noqa: E402
from ivr.media.engine import MediaEngine  # noqa: E402


async def run(pairs: int, seconds: float, port_min: int, dtmf_mode: DtmfMode = DtmfMode.RFC4733,
              tick_ms: int | None = None) -> dict:
    kw = {"tick_ms": tick_ms} if tick_ms else {}
    engine = MediaEngine("127.0.0.1", port_min, port_min + 4 * pairs + 100, dtmf_mode=dtmf_mode, **kw)
    sessions = []
    for _ in range(pairs):
        a = await engine.open_session()
        b = await engine.open_session()
        offer = make_offer("127.0.0.1", a.local_port)
        answer, neg_b = answer_offer(offer, "127.0.0.1", b.local_port)
        a.start(parse_answer(offer, answer))
        b.start(neg_b)
        sessions += [a, b]
    t = np.arange(int(8000 * seconds)) / 8000
    prompt = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    await asyncio.sleep(0.5)
    engine.reset_send_stats()
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(s.play(prompt) for s in sessions))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    await asyncio.sleep(0.2)
    stats = engine.send_stats()
    result = {
        "pairs": pairs,
        "dtmf_mode": dtmf_mode.value,
        "tick_ms": engine.tick_ms,
        "sessions": len(sessions),
        "seconds": seconds,
        "loop": type(asyncio.get_running_loop()).__module__,
        "python": platform.python_version(),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.as_dict().items()},
        "packets_sent": sum(s.stats.packets_sent for s in sessions),
        "packets_received": sum(s.stats.packets_received for s in sessions),
        "packets_lost": sum(s.stats.lost for s in sessions),
        "packets_expected_per_session": int(seconds * 50),
    }
    await engine.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--port-min", type=int, default=30000)
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--dtmf-mode", choices=[m.value for m in DtmfMode], default="rfc4733",
                   help="auto/inband also run the in-band detector on every received packet")
    p.add_argument("--tick-ms", type=int, default=None, help="pacer tick (default: the engine's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "rtp_jitter.json"))
    args = p.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    result = asyncio.run(run(args.pairs, args.seconds, args.port_min, DtmfMode(args.dtmf_mode), args.tick_ms))
    for k, v in result.items():
        print(f"{k:32} {v}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
