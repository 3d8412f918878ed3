"""Real-socket test harness: the server's SIP and media stack in the test's event loop, SIPp as a subprocess.

Nothing here imitates the server: it starts the real ``SipServer`` + ``CallManager`` + ``MediaEngine`` on
ephemeral loopback ports, and talks to them with real peers (SIPp, pyVoIP, raw sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivr.calls import CallApplication, CallLimits, CallManager
from ivr.media.g711 import alaw_decode, ulaw_decode
from ivr.media.rtp import RtpPacket
from ivr.media.engine import MediaEngine
from ivr.sip.transport import SipServer
from ivr.sip.useragent import SipUserAgent, UaConfig

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP = shutil.which("sipp")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    sip: SipServer
    manager: CallManager
    media: MediaEngine
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running_server(app: CallApplication, *, limits: CallLimits | None = None, trusted=("127.0.0.1/32",),
                         rtp_range: tuple[int, int] | None = None, guard=None):
    ua = SipUserAgent(UaConfig(host="127.0.0.1", port=0))
    lo, hi = rtp_range or _rtp_range()
    media = MediaEngine("127.0.0.1", lo, hi)
    holder: dict = {}

    async def on_event(ev):
        holder["m"].handle_event(ev)

    sip = SipServer(ua, "127.0.0.1", 0, on_event=on_event, guard=guard)
    manager = CallManager(sip, media, app, local_ip="127.0.0.1", trusted_peers=list(trusted), limits=limits)
    holder["m"] = manager
    await sip.start()
    try:
        yield RunningServer(sip, manager, media, sip.bound_port)
    finally:
        await manager.shutdown(grace=0.5)
        await sip.stop()
        await media.close()


_next_range = [30000]


def _rtp_range() -> tuple[int, int]:
    lo = _next_range[0]
    _next_range[0] = 30000 + (lo - 30000 + 2000) % 20000
    return lo, lo + 1998


@dataclass
class SippResult:
    rc: int
    stdout: str
    stderr: str
    errors: str


async def run_sipp(server: str, scenario: str, *, variables: dict[str, str] | None = None, calls: int = 1,
                   rate: float | None = None, timeout: float = 30, extra: list[str] | None = None,
                   tmp: Path | None = None, transport: str = "u1") -> SippResult:
    """Run one SIPp scenario against the server and wait for it; returns its exit code and error log."""
    assert SIPP, "sipp is not installed: run scripts/setup.sh --test"
    err_file = (tmp or Path("/tmp")) / f"sipp-{scenario}-{free_udp_port()}.err"
    args = [SIPP, server, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(free_udp_port()),
            "-mp", str(free_udp_port() & ~1), "-m", str(calls), "-timeout", str(int(timeout)), "-timeout_error",
            "-nostdin", "-trace_err", "-error_file", str(err_file), "-t", transport]
    if rate:
        args += ["-r", str(rate)]
    for k, v in (variables or {}).items():
        args += ["-set", k, str(v)]
    args += extra or []
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout + 15)
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    errors = err_file.read_text(errors="replace") if err_file.exists() else ""
    return SippResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), errors)


class _Sink(asyncio.DatagramProtocol):
    def __init__(self, owner: "RtpSink"):
        self.owner = owner

    def datagram_received(self, data, addr):
        self.owner.packets.append((data, addr))


@dataclass
class RtpSink:
    """A caller's RTP port: keeps every packet the server sends, decodes them in order of arrival."""

    packets: list = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    port: int = 0

    async def open(self) -> "RtpSink":
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Sink(self), local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport:
            self.transport.close()

    def parsed(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d) for d, _ in self.packets]

    def audio(self) -> np.ndarray:
        pkts = [p for p in self.parsed() if p.payload_type in (0, 8)]
        if not pkts:
            return np.zeros(0, dtype=np.int16)
        dec = {0: ulaw_decode, 8: alaw_decode}
        return np.concatenate([dec[p.payload_type](p.payload) for p in pkts]).astype(np.int16)


def best_correlation(received: np.ndarray, reference: np.ndarray) -> float:
    """Peak normalised cross-correlation of the reference inside the received signal (any offset)."""
    from scipy.signal import fftconvolve

    r = received.astype(np.float64)
    x = reference.astype(np.float64)
    if len(r) < len(x):
        r = np.concatenate([r, np.zeros(len(x) - len(r))])
    corr = fftconvolve(r, x[::-1], mode="valid")
    # energy of each window of r of length len(x)
    c2 = np.concatenate([[0.0], np.cumsum(r * r)])
    win = c2[len(x):] - c2[:-len(x)]
    denom = np.sqrt(np.maximum(win, 1e-9) * float(np.dot(x, x)))
    return float(np.max(corr / denom))
