"""Embedding latency p50/p99 for 3 s and 8 s of telephone speech, one torch thread.

Measures the full per-utterance path the server runs: 8 kHz G.711 audio -> soxr to 16 kHz ->
embedding. Writes bench/results/embedding_latency.json.

    .venv/bin/python bench/embedding_latency.py [--runs 50] [--model ecapa --model-dir D]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from voiceauth.channel import resample, simulate_g711  # noqa: E402
from voiceauth.encoders import create_encoder  # noqa: E402
from voiceauth.evaluation import load_wav  # noqa: E402

VOICE = REPO / "audio_fixtures" / "voices" / "ls-2414" / "2414-128291-0001.wav"  # 8.4 s of read speech


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--model", default="resemblyzer")
    ap.add_argument("--model-dir", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    kw = {"model_dir": args.model_dir} if args.model == "ecapa" else {}
    enc = create_encoder(args.model, **kw)
    audio, rate = load_wav(VOICE)
    line = simulate_g711(audio, rate, "ulaw")
    results = {}
    for seconds in (3, 8):
        clip = line[: seconds * 8000]
        for _ in range(3):  # warm-up
            enc.embed(resample(clip, 8000, enc.sample_rate))
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            enc.embed(resample(clip, 8000, enc.sample_rate))
            times.append((time.perf_counter() - t0) * 1000)
        t = np.array(times)
        results[f"{seconds}s"] = {"p50_ms": round(float(np.percentile(t, 50)), 2),
                                  "p99_ms": round(float(np.percentile(t, 99)), 2),
                                  "mean_ms": round(float(t.mean()), 2), "runs": args.runs}
        print(f"{enc.name} {seconds} s: p50 {results[f'{seconds}s']['p50_ms']:.1f} ms, "
              f"p99 {results[f'{seconds}s']['p99_ms']:.1f} ms ({args.runs} runs, 1 thread)")
    out = REPO / "bench" / "results" / "embedding_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": enc.name, "torch_threads": torch.get_num_threads(),
                               "path": "8 kHz G.711 -> soxr 16 kHz -> embed", "machine": platform.machine(),
                               "python": platform.python_version(), "note": "shared 2-core dev machine",
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
