"""Flood benchmark: junk SIP from one address at a high rate while legitimate SIPp calls with audio run from another.

The figure issue 7 asks for: 10,000 junk messages/s from one address for 30 s while 50 legitimate calls run,
0 legitimate failures.

- The server is the same SipServer + SourceGuard + CallManager + MediaEngine as ``serve``, with the limits of
  server.yaml's defaults (``ivr.config.LimitsConfig``), on uvloop, in this process (its CPU time is this
  process's CPU time: SIPp and the junk sender are child processes). It listens on 127.0.0.1.
- The junk sender (this script with ``--sender``, a child process) sends from 127.0.0.1 at ``--rate`` for
  ``--seconds``: a mix of the abuse corpus (tests/sip/abuse: truncated, binary, huge headers, bad
  Content-Length, 1000 Via ...), OPTIONS and INVITE floods (each with its own Call-ID). It counts what it really
  sent and what came back (a 503 is the call limit answering).
- SIPp places ``--calls`` calls from 127.0.0.2 (``uac_voice.xml``: audio both ways, the server loops a prompt),
  started with the flood and held until after it ends. Failed calls are SIPp's count.
- Measured during the flood: the guard's decisions (admitted, rate limited, dropped while blocked, blocks), the
  SIP core's counters, the calls refused with 503, kernel UDP receive-buffer drops (/proc/net/snmp, host-wide),
  server CPU (% of one core) and the RTP send lateness of the legitimate calls.

    .venv/bin/python bench/flood.py                       # the figure: 30 s at 10,000/s, 50 calls
    .venv/bin/python bench/flood.py --seconds 5           # a short smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from sip_load import GREETING, SCENARIOS, PromptApp, free_port, machine, parse_sipp_counts, run_sipp  # noqa: E402

ABUSE = REPO / "tests" / "sip" / "abuse"
STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


# ------------------------------------------------------------------ the junk sender (child process)

def _fill(data: bytes, host: str, port: int, lport: int, n: int) -> bytes:
    values = {b"{{HOST}}": host.encode(), b"{{PORT}}": str(port).encode(), b"{{LPORT}}": str(lport).encode(),
              b"{{CALLID}}": f"flood-{n}@junk".encode(), b"{{BRANCH}}": f"z9hG4bKflood{n}".encode(),
              b"{{TAG}}": f"f{n}".encode()}
    for k, v in values.items():
        data = data.replace(k, v)
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.replace(b"{{CL}}", str(len(body)).encode()) + sep + body


def _options(host: str, port: int, src: str, lport: int, n: int) -> bytes:
    return (f"OPTIONS sip:800100@{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{lport};branch=z9hG4bKo{n}\r\n"
            f"From: <sip:junk@{src}>;tag=o{n}\r\nTo: <sip:800100@{host}>\r\nCall-ID: opt-{n}@junk\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def _invite(host: str, port: int, src: str, lport: int, n: int) -> bytes:
    sdp = (f"v=0\r\no=junk {n} 1 IN IP4 {src}\r\ns=-\r\nc=IN IP4 {src}\r\nt=0 0\r\n"
           f"m=audio 9 RTP/AVP 0 8\r\n").encode()
    return (f"INVITE sip:800100@{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{lport};branch=z9hG4bKi{n}\r\n"
            f"From: <sip:+393330000{n % 1000:03d}@{src}>;tag=i{n}\r\nTo: <sip:800100@{host}>\r\n"
            f"Call-ID: inv-{n}@junk\r\nCSeq: 1 INVITE\r\nContact: <sip:junk@{src}:{lport}>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n").encode() + sdp


def junk_mix(host: str, port: int, src: str, lport: int, count: int, seed: int = 7) -> list[bytes]:
    """``count`` datagrams: 40% OPTIONS, 30% INVITE (distinct Call-IDs), 30% the abuse corpus, shuffled."""
    rng = random.Random(seed)
    corpus = [p.read_bytes() for p in sorted(ABUSE.glob("*.sip"))]
    out: list[bytes] = []
    for n in range(count):
        r = rng.random()
        if r < 0.4:
            out.append(_options(host, port, src, lport, n))
        elif r < 0.7:
            out.append(_invite(host, port, src, lport, n))
        else:
            out.append(_fill(rng.choice(corpus), host, port, lport, n)[:65000])
    rng.shuffle(out)
    return out


def sender_main(target: str, source: str, rate: float, seconds: float) -> dict:
    host, port = target.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.setblocking(False)
    dest = (host, int(port))
    msgs = junk_mix(host, int(port), source, sock.getsockname()[1], 5000)
    sent = would_block = too_big = 0
    answers: dict[str, int] = {}
    i = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = min(int((now - start) * rate) - sent - would_block - too_big, 2000)
        for _ in range(due):
            try:
                sock.sendto(msgs[i % len(msgs)], dest)
                sent += 1
            except BlockingIOError:
                would_block += 1
            except OSError:
                too_big += 1
            i += 1
        while True:  # count what came back, without letting the socket fill up
            try:
                data = sock.recv(70000)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            m = STATUS.match(data)
            key = m.group(1).decode() if m else "other"
            answers[key] = answers.get(key, 0) + 1
        if due <= 0:
            time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    sock.close()
    return {"sent": sent, "elapsed_s": round(elapsed, 3), "sent_per_s": round(sent / elapsed, 1),
            "target_rate": rate, "local_send_buffer_full": would_block, "send_errors": too_big,
            "answers_received": answers}


# ------------------------------------------------------------------ the server and the run

def udp_rcvbuf_errors() -> int:
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return -1


def socket_drops(port: int) -> int:
    """Datagrams the kernel dropped on the server's SIP socket (its receive buffer was full): /proc/net/udp."""
    try:
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port:
                return int(parts[-1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


async def start_server():
    from ivr.calls import CallLimits, CallManager
    from ivr.config import LimitsConfig
    from ivr.media.audio import load_wav_8k
    from ivr.media.dtmf import DtmfMode
    from ivr.media.engine import MediaEngine
    from ivr.sip.guard import SourceGuard
    from ivr.sip.transport import SipServer
    from ivr.sip.useragent import SipUserAgent, UaConfig

    lim = LimitsConfig()
    app = PromptApp(load_wav_8k(GREETING), loop=True)
    ua = SipUserAgent(UaConfig(host="127.0.0.1", port=0, max_message_size=lim.max_message_size))
    media = MediaEngine("127.0.0.1", 30000, 31998, dtmf_mode=DtmfMode.AUTO)
    guard = SourceGuard(rate=lim.messages_per_second_per_source, burst=lim.message_burst_per_source,
                        block_seconds=lim.block_seconds, max_auth_failures=lim.max_auth_failures)
    ref: dict = {}

    async def on_event(ev):
        ref["m"].handle_event(ev)

    sip = SipServer(ua, "127.0.0.1", 0, on_event=on_event, guard=guard)
    manager = CallManager(sip, media, app, local_ip="127.0.0.1",
                          limits=CallLimits(lim.max_concurrent_calls, lim.max_calls_per_second_per_source,
                                            lim.max_calls_per_second_per_untrusted_source))
    ref["m"] = manager
    await sip.start()
    return sip, manager, media, guard, lim


async def run(args) -> dict:
    from dataclasses import asdict

    sip, manager, media, guard, lim = await start_server()
    port = sip.bound_port
    voice = Path(tempfile.mkdtemp()) / "voice.ulaw"
    subprocess.run(["sox", str(GREETING), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(voice)],
                   check=True)
    ramp_s = args.calls / args.call_rate
    hold_ms = int((args.seconds + 2) * 1000)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            scenario = work / "uac_voice.xml"
            scenario.write_text((SCENARIOS / "uac_voice.xml").read_text().replace("VOICE_FILE", str(voice)))
            sipp_args = ["sipp", f"127.0.0.1:{port}", "-sf", str(scenario), "-i", args.legit_source,
                         "-mi", args.legit_source, "-p", str(free_port()), "-mp", str(free_port() & ~1),
                         "-r", str(args.call_rate), "-m", str(args.calls), "-l", str(args.calls),
                         "-timeout", str(int(args.seconds + ramp_s + 60)), "-nostdin", "-set", "caller",
                         "+393331234567", "-set", "dialed", "800100", "-set", "hold", str(hold_ms),
                         "-set", "rtpport", "9", "-recv_timeout", "20000", "-max_socket", "1000"]
            g0, ua0, m0 = asdict(guard.stats), asdict(sip.ua.stats), dict(manager.stats)
            rcvbuf0 = udp_rcvbuf_errors()
            sock_drops0 = socket_drops(port)
            media.reset_send_stats()
            cpu0, wall0 = time.process_time(), time.monotonic()
            sender = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--sender", "--target", f"127.0.0.1:{port}", "--source",
                args.junk_source, "--rate", str(args.rate), "--seconds", str(args.seconds),
                stdout=asyncio.subprocess.PIPE)
            legit = asyncio.ensure_future(run_sipp(sipp_args, work, args.seconds + ramp_s + 120))
            peak_calls = 0
            while sender.returncode is None:
                peak_calls = max(peak_calls, len(manager.calls))
                try:
                    await asyncio.wait_for(sender.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
            cpu = time.process_time() - cpu0
            wall = time.monotonic() - wall0
            rtp = media.send_stats()
            g1, ua1, m1 = asdict(guard.stats), asdict(sip.ua.stats), dict(manager.stats)
            rcvbuf = udp_rcvbuf_errors() - rcvbuf0 if rcvbuf0 >= 0 else None
            sock_drops = socket_drops(port) - sock_drops0 if sock_drops0 >= 0 else None
            junk = json.loads((await sender.stdout.read()).decode())
            calls_during_flood = len(manager.calls)
            rc, out = await legit
            ok, failed = parse_sipp_counts(out)
    finally:
        await manager.shutdown(grace=1)
        await sip.stop()
        await media.close()
    guard_d = {k: g1[k] - g0[k] for k in g0}
    return {
        "machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "conditions": {"seconds": args.seconds, "target_rate": args.rate, "junk_source": args.junk_source,
                       "legit_source": args.legit_source, "legit_calls": args.calls,
                       "legit_call_rate": args.call_rate, "limits": lim.model_dump()},
        "junk": junk,
        "legit": {"successful": ok, "failed": failed, "sipp_rc": rc, "peak_concurrent_calls": peak_calls,
                  "calls_up_when_flood_ended": calls_during_flood,
                  "rtp_packets_measured": rtp.packets, "rtp_send_late_p50_ms": round(rtp.late_p50_ms, 3),
                  "rtp_send_late_p99_ms": round(rtp.late_p99_ms, 3),
                  "rtp_send_late_max_ms": round(rtp.late_max_ms, 3), "rtp_gap_p99_ms": round(rtp.gap_p99_ms, 3),
                  "rtp_largest_gap_ms": round(rtp.gap_max_ms, 3), "rtp_skipped_frames": rtp.skipped_frames},
        "guard": guard_d | {"reached_server_per_s": round(sum(guard_d[k] for k in
                                                              ("admitted", "rate_limited", "blocked_drops",
                                                               "scanners")) / wall, 1)},
        "sip_core": {k: ua1[k] - ua0[k] for k in ua0},
        "calls_refused": {k: m1.get(k, 0) - m0.get(k, 0) for k in m1 if k.startswith("rejected")},
        "kernel_udp_rcvbuf_errors_host_wide": rcvbuf,
        "server_sip_socket_kernel_drops": sock_drops,
        "server_cpu_pct_of_one_core": round(100 * cpu / wall, 1),
        "flood_window_s": round(wall, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30, help="flood duration")
    ap.add_argument("--rate", type=float, default=10000, help="junk messages per second")
    ap.add_argument("--calls", type=int, default=50, help="legitimate calls with audio")
    ap.add_argument("--call-rate", type=float, default=10, help="legitimate new calls per second (ramp)")
    ap.add_argument("--junk-source", default="127.0.0.1")
    ap.add_argument("--legit-source", default="127.0.0.2")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "flood.json"))
    ap.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sender:
        print(json.dumps(sender_main(args.target, args.source, args.rate, args.seconds)), flush=True)
        return 0
    if not shutil.which("sipp") or not shutil.which("sox"):
        print("sipp and sox are needed: bash scripts/setup.sh --test", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    j, legit, g = result["junk"], result["legit"], result["guard"]
    print(f"junk: {j['sent']} sent in {j['elapsed_s']} s = {j['sent_per_s']}/s (target {j['target_rate']}/s), "
          f"answers to the flooder {j['answers_received']}")
    print(f"guard: {g['admitted']} admitted, {g['rate_limited']} rate limited, {g['blocked_drops']} dropped while "
          f"blocked, {g['blocks']} blocks; reached the server {g['reached_server_per_s']}/s; dropped by the kernel "
          f"on the SIP socket {result['server_sip_socket_kernel_drops']} (host-wide UDP "
          f"{result['kernel_udp_rcvbuf_errors_host_wide']}); calls refused {result['calls_refused']}")
    print(f"legitimate calls: {legit['successful']} ok, {legit['failed']} failed (peak {legit['peak_concurrent_calls']}"
          f" up); RTP send late p50 {legit['rtp_send_late_p50_ms']} ms p99 {legit['rtp_send_late_p99_ms']} ms "
          f"max {legit['rtp_send_late_max_ms']} ms; server CPU {result['server_cpu_pct_of_one_core']}% of a core")
    print(f"written to {args.out}")
    return 0 if legit["failed"] == 0 and legit["successful"] == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
