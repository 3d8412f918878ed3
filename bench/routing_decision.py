"""Routing decision latency with many agents and a long line (issue 5 target: p99 < 1 ms at 10,000 agents and
5,000 waiting calls).

Two phases, each timing one engine call that makes one routing decision:
  arrival:  a call arrives while thousands of eligible agents are idle -> choose an agent (pool head).
  release:  every agent is busy and thousands of calls wait; an agent hangs up (no wrap-up) -> choose the best
            waiting call for that agent among all queues it qualifies for; a new call arrives to keep the line.
Prints p50/p99/max in microseconds and writes bench/results/routing_decision.json.

    .venv/bin/python bench/routing_decision.py --agents 1000 --waiting 500     # quick
    .venv/bin/python bench/routing_decision.py                                 # 10,000 / 5,000
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing import AgentProfile, Phone, RoutingConfig, RoutingEngine  # noqa: E402
from routing.events import Offer  # noqa: E402


def build_config(n_skills: int, n_queues: int, rng: random.Random) -> RoutingConfig:
    skills = {f"s{i}": f"skill {i}" for i in range(n_skills)}
    queues = {}
    for q in range(n_queues):
        req = {f"s{i}": rng.randint(2, 6) for i in rng.sample(range(n_skills), rng.choice((1, 1, 2)))}
        queues[f"q{q}"] = {"skills": req, "priority": rng.choice((0, 10, 20, 100)), "wrap_up_seconds": 0,
                           "ring_timeout_seconds": 20,
                           "steps": [{"after": 600, "relax_levels": 2}],
                           "strategy": rng.choice(("longest_idle", "longest_idle", "most_skilled", "round_robin",
                                                   "least_occupied"))}
    return RoutingConfig.model_validate({"skills": skills, "queues": queues,
                                         "defaults": {"segment_boost": {"critical": 100}}})


def percentiles(samples_ns: list[int]) -> dict:
    s = sorted(samples_ns)
    pick = lambda p: s[min(len(s) - 1, int(p * len(s)))] / 1000.0  # noqa: E731
    return {"n": len(s), "p50_us": pick(0.50), "p90_us": pick(0.90), "p99_us": pick(0.99),
            "max_us": s[-1] / 1000.0, "mean_us": sum(s) / len(s) / 1000.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--waiting", type=int, default=5_000)
    ap.add_argument("--queues", type=int, default=40)
    ap.add_argument("--skills", type=int, default=20)
    ap.add_argument("--decisions", type=int, default=3_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "routing_decision.json"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cfg = build_config(args.skills, args.queues, rng)
    eng = RoutingEngine(cfg)
    queue_names = list(cfg.queues)
    for i in range(args.agents):
        sk = {f"s{j}": rng.randint(1, 10) for j in rng.sample(range(args.skills), rng.randint(3, 6))}
        eng.add_agent(AgentProfile(f"a{i}", f"agent {i}", Phone(extension=str(10000 + i)), sk))
    now = 0.0
    t0 = time.perf_counter()
    for i in range(args.agents):
        eng.agent_login(f"a{i}", now=now)
    seq = 0
    ended = 0
    connected: dict[str, str] = {}        # call -> agent

    def arrive(timed: list[int] | None) -> None:
        nonlocal seq, now
        seq += 1
        now += 0.001
        q = rng.choice(queue_names)
        seg = "critical" if rng.random() < 0.05 else None
        start = time.perf_counter_ns()
        acts = eng.enqueue(f"c{seq}", q, now=now, customer_segment=seg)
        if timed is not None:
            timed.append(time.perf_counter_ns() - start)
        for a in acts:
            if isinstance(a, Offer):
                eng.offer_answered(a.call_id, a.agent_id, now=now)
                connected[a.call_id] = a.agent_id

    for q in queue_names:                 # warm-up: every queue's pool exists
        arrive(None)
    arrival_ns: list[int] = []
    for _ in range(min(args.decisions, args.agents // 2)):
        arrive(arrival_ns)
    setup_s = time.perf_counter() - t0

    # fill: every agent busy, then ``waiting`` calls in line
    t1 = time.perf_counter()
    guard = 0
    while seq - ended - len(connected) < args.waiting:
        arrive(None)
        guard += 1
        if guard > 20 * (args.agents + args.waiting):
            break
    waiting_now = seq - ended - len(connected)
    fill_s = time.perf_counter() - t1

    release_ns: list[int] = []
    gc.collect()
    ids = list(connected)
    rng.shuffle(ids)
    for call_id in ids[: args.decisions]:
        now += 0.001
        connected.pop(call_id)
        start = time.perf_counter_ns()
        acts = eng.call_ended(call_id, now=now, by="agent")
        release_ns.append(time.perf_counter_ns() - start)
        ended += 1
        for a in acts:
            if isinstance(a, Offer):
                eng.offer_answered(a.call_id, a.agent_id, now=now)
                connected[a.call_id] = a.agent_id
        arrive(None)

    result = {
        "benchmark": "routing_decision",
        "agents": args.agents, "waiting_calls": waiting_now, "queues": args.queues, "skills": args.skills,
        "connected_calls": len(connected),
        "arrival_with_idle_agents": percentiles(arrival_ns),
        "release_with_long_line": percentiles(release_ns),
        "all_decisions": percentiles(arrival_ns + release_ns),
        "setup_seconds": round(setup_s, 3), "fill_seconds": round(fill_s, 3),
        "python": platform.python_version(), "machine": platform.machine(), "target_p99_us": 1000.0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("arrival_with_idle_agents", "release_with_long_line", "all_decisions"):
        r = result[name]
        print(f"{name:26s} n={r['n']:5d}  p50={r['p50_us']:8.1f} us  p99={r['p99_us']:8.1f} us  "
              f"max={r['max_us']:8.1f} us")
    print(f"agents={args.agents} waiting={waiting_now} connected={len(connected)} queues={args.queues} "
          f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
