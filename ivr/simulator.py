"""``contact-server call``: a real SIP caller for admins trying a menu before it goes live (and for tests).

It is built on the server's own SIP and media stack used as a client: one outgoing INVITE with a caller number
(From and P-Asserted-Identity, so that a server which trusts this host takes the number from PAI), RFC 4733
digits at given moments, an optional WAV streamed as the caller's voice, and everything heard recorded. What it
reports comes from the audio itself: the prompts heard are the stretches of sound between silences, with their
times since the answer on the same clock as the digits sent.

Tests use :class:`SimulatedCall` to react to what they hear (wait for a prompt to end, then key a digit), or
:func:`simulate` for a timed script.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivr.calls import CallManager, Leg, OriginateFailed
from ivr.errors import IvrError
from ivr.media.audio import load_wav_8k, write_wav
from ivr.media.rtp import RtpPacket
from ivr.media.engine import MediaEngine
from ivr.sip.events import EndReason
from ivr.sip.transport import SipServer
from ivr.sip.useragent import SipUserAgent, UaConfig

log = logging.getLogger(__name__)

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
SILENCE_DBFS = -45.0
_SILENCE_RMS = 32768.0 * 10 ** (SILENCE_DBFS / 20)


class SimulatorError(IvrError):
    """The simulated call could not be set up as asked (bad address, no local address toward the server)."""


@dataclass
class HeardSegment:
    """One stretch of sound heard (a prompt, usually), in seconds since the answer."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return round(self.end - self.start, 2)


@dataclass
class SimulationResult:
    answered: bool
    status: int | None = None
    reason: str | None = None
    setup_seconds: float | None = None
    segments: list[HeardSegment] = field(default_factory=list)
    """Prompts heard: sound between silences of at least 0.6 s, in seconds since the answer."""
    digits_sent: list[tuple[float, str]] = field(default_factory=list)
    """(seconds since the answer, digits) for each send."""
    voice_sent: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) in seconds since the answer of each stretch of caller voice streamed."""
    hung_up_by: str | None = None
    """``server`` (its BYE), ``caller`` (ours), or ``network`` (the call failed under us)."""
    end_reason: str | None = None
    duration: float = 0.0
    """Seconds from the answer to the end of the call."""
    audio: np.ndarray | None = None
    """Everything heard, 8 kHz int16, placed on the timeline since the answer (gaps are silence)."""

    def heard(self, reference: np.ndarray, threshold: float = 0.9, min_share: float = 0.8) -> bool:
        """Whether ``reference`` (a prompt) was heard: most of its voiced half-second pieces are found in the
        audio. Piecewise, so that one late packet in the middle of a prompt does not hide it."""
        return heard_share(self.audio if self.audio is not None else np.zeros(0, np.int16),
                           reference, threshold) >= min_share

    def to_dict(self) -> dict:
        return {
            "answered": self.answered, "status": self.status, "reason": self.reason,
            "setup_seconds": self.setup_seconds,
            "prompts_heard": [{"start": s.start, "end": s.end, "duration": s.duration} for s in self.segments],
            "digits_sent": [[at, digits] for at, digits in self.digits_sent],
            "voice_sent": [[a, b] for a, b in self.voice_sent],
            "hung_up_by": self.hung_up_by, "end_reason": self.end_reason, "duration": self.duration,
        }


def heard_segments(pcm: np.ndarray, threshold_dbfs: float = SILENCE_DBFS, min_gap: float = 0.6,
                   min_length: float = 0.2) -> list[HeardSegment]:
    """Stretches of sound (20 ms frames above ``threshold_dbfs``) separated by at least ``min_gap`` s of silence;
    stretches shorter than ``min_length`` (clicks) are dropped."""
    n = len(pcm) // FRAME
    if n == 0:
        return []
    frames = pcm[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) / 32768.0
    loud = 20 * np.log10(np.maximum(rms, 1e-9)) > threshold_dbfs
    edges = np.diff(np.concatenate([[0], loud.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts) == 0:
        return []
    gap_frames = round(min_gap / 0.02)
    keep = np.concatenate([[True], (starts[1:] - ends[:-1]) >= gap_frames])  # a run opening a new segment
    seg_starts = starts[keep]
    seg_ends = np.concatenate([ends[np.flatnonzero(keep)[1:] - 1], [ends[-1]]])
    min_frames = round(min_length / 0.02)
    return [HeardSegment(round(s * 0.02, 2), round(e * 0.02, 2))
            for s, e in zip(seg_starts, seg_ends) if e - s >= min_frames]


def heard_share(audio: np.ndarray, reference: np.ndarray, threshold: float = 0.9, piece: int = 4000) -> float:
    """Share of the reference's voiced ``piece``-sample pieces found in ``audio`` (peak normalised
    cross-correlation above ``threshold`` at any offset)."""
    from scipy.signal import fftconvolve

    reference = np.asarray(reference, np.float64)
    pieces = [reference[i:i + piece] for i in range(0, max(len(reference) - piece, 0) + 1, piece)]
    voiced = [p for p in pieces if len(p) and np.sqrt(np.mean(p * p)) > 100]
    if not voiced:
        raise ValueError("the reference is silent: nothing to look for")
    r = np.asarray(audio, np.float64)
    if len(r) < piece:
        return 0.0
    c2 = np.concatenate([[0.0], np.cumsum(r * r)])
    found = 0
    for p in voiced:
        win = c2[len(p):] - c2[:-len(p)]
        corr = fftconvolve(r, p[::-1], mode="valid") / np.sqrt(np.maximum(win, 1e-9) * float(np.dot(p, p)))
        found += float(np.max(corr)) > threshold
    return found / len(voiced)


class _Timeline:
    """Received audio placed by RTP timestamp, anchored to the arrival time of each new stream (SSRC), so that
    lost packets leave gaps instead of shifting everything after them, and times match the digits' clock."""

    def __init__(self, t0: float | None):
        self.t0 = t0
        self.pieces: list[tuple[int, np.ndarray]] = []
        self._anchor: tuple[int, int, int] | None = None  # ssrc, rtp timestamp, sample position
        self.last_sound = t0 or 0.0
        self.sound_seen = False
        self.first_arrival: float | None = None
        self._early: list[tuple[RtpPacket, np.ndarray, float]] = []

    def set_t0(self, t0: float) -> None:
        """Packets heard before the answer was known are placed now."""
        self.t0 = t0
        self.last_sound = max(self.last_sound, t0)
        early, self._early = self._early, []
        for pkt, pcm, now in early:
            self.add(pkt, pcm, now)

    def add(self, pkt: RtpPacket, pcm: np.ndarray, now: float) -> None:
        if self.first_arrival is None:
            self.first_arrival = now
        if self.t0 is None:
            self._early.append((pkt, pcm, now))
            return
        arrival_pos = round((now - self.t0) * RATE)
        pos = None
        if self._anchor is not None and self._anchor[0] == pkt.ssrc:
            delta = (pkt.timestamp - self._anchor[1]) & 0xFFFFFFFF
            if delta >= 1 << 31:
                delta -= 1 << 32
            pos = self._anchor[2] + delta
            if abs(pos - arrival_pos) > RATE:  # a timestamp jump: trust the clock again
                pos = None
        if pos is None:
            pos = max(arrival_pos - len(pcm), 0)
            self._anchor = (pkt.ssrc, pkt.timestamp, pos)
        if pos >= 0:
            self.pieces.append((pos, pcm))
        if len(pcm) and np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > _SILENCE_RMS:
            self.last_sound = now
            self.sound_seen = True

    def audio(self) -> np.ndarray:
        if not self.pieces:
            return np.zeros(0, np.int16)
        out = np.zeros(max(p + len(a) for p, a in self.pieces), np.int16)
        for p, a in self.pieces:
            out[p:p + len(a)] = a
        return out


class _RejectIncoming:
    async def run(self, call) -> None:
        call.reject(403, "This is a test caller")


def split_server(server: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` for IPv6) -> (host, port); 5060 when no port is given."""
    server = server.strip()
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif server.count(":") == 1:
        host, _, port_text = server.partition(":")
    else:
        host, port_text = server, ""
    if not host:
        raise SimulatorError(f"server {server!r}: write host:port, e.g. 127.0.0.1:5060")
    try:
        port = int(port_text) if port_text else 5060
    except ValueError:
        raise SimulatorError(f"server {server!r}: the port must be a number, e.g. 127.0.0.1:5060") from None
    if not 0 < port < 65536:
        raise SimulatorError(f"server {server!r}: port {port} is out of range 1-65535")
    return host, port


def local_address_toward(host: str, port: int) -> str:
    """The address this machine uses to reach ``host`` (what the server must send RTP and responses to)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            ip = ipaddress.ip_address(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0])
        except (OSError, IndexError) as exc:
            raise SimulatorError(f"cannot resolve server host {host!r}: {exc}") from exc
    if ip.is_loopback:
        return "::1" if ip.version == 6 else "127.0.0.1"
    with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((str(ip), port))  # no packet is sent: this only picks the route
        except OSError as exc:
            raise SimulatorError(f"no route to the server {host}: {exc}") from exc
        return s.getsockname()[0]


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class SimulatedCall:
    """One call placed with the server's own stack as a client, driven step by step.

    ``async with SimulatedCall("127.0.0.1:5070", "+393331234567", "800100") as call:`` places the call; check
    ``call.answered``; then ``await call.wait_for_prompt_end()``, ``call.send_dtmf("1")``, ``await
    call.play(pcm)``, ``await call.wait_ended(10)``; leaving the block hangs up if the server has not, and
    ``call.result`` holds what happened. Call failures (busy, no answer) are reported, never raised."""

    def __init__(self, server: str, caller: str, dialed: str, *, local_ip: str | None = None,
                 ring_timeout: float = 30.0, rtp_ports: tuple[int, int] | None = None):
        self.host, self.port = split_server(server)
        if not caller or not dialed:
            raise SimulatorError("the caller number (--from) and the dialed number (--to) must not be empty")
        self.caller, self.dialed = caller, dialed
        self.local_ip = local_ip
        self.ring_timeout = ring_timeout
        self.rtp_ports = rtp_ports
        self.result = SimulationResult(answered=False)
        self.leg: Leg | None = None
        self._sip: SipServer | None = None
        self._media: MediaEngine | None = None
        self._manager: CallManager | None = None
        self._timeline: _Timeline | None = None
        self._answered_at = 0.0
        self._hung_up_by_us = False

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def __aenter__(self) -> "SimulatedCall":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def answered(self) -> bool:
        return self.result.answered

    @property
    def elapsed(self) -> float:
        """Seconds since the answer (0 before it)."""
        return time.monotonic() - self._answered_at if self._answered_at else 0.0

    async def start(self) -> bool:
        """Place the call and wait for the answer; True when answered (``result.status`` says why not)."""
        local_ip = self.local_ip or await asyncio.get_running_loop().run_in_executor(
            None, local_address_toward, self.host, self.port)
        self.local_ip = local_ip
        ua = SipUserAgent(UaConfig(host=local_ip, port=0, user_agent="contact-server-call"))
        lo, hi = self.rtp_ports or _random_rtp_range()
        self._media = MediaEngine(local_ip, lo, hi)
        ref: dict = {}

        async def on_event(ev):
            ref["m"].handle_event(ev)

        self._sip = SipServer(ua, local_ip, 0, on_event=on_event, tcp=False)
        self._manager = ref["m"] = CallManager(self._sip, self._media, _RejectIncoming(), local_ip=local_ip)
        await self._sip.start()
        started = time.monotonic()
        from_uri = f"sip:{self.caller}@{_uri_host(local_ip)}"
        timeline = _Timeline(None)

        def listen(session) -> None:
            session.add_audio_listener(
                lambda _s, pkt, pcm: timeline.add(pkt, pcm, time.monotonic()) if pcm is not None else None)

        try:
            self.leg = await self._manager.originate(
                f"sip:{self.dialed}@{_uri_host(self.host)}:{self.port}", from_uri,
                headers=[("P-Asserted-Identity", f"<{from_uri}>")], ring_timeout=self.ring_timeout,
                on_session=listen)
        except OriginateFailed as exc:
            self.result.status, self.result.reason = exc.status, exc.reason
            log.info("simulated call to %s failed: %s %s", self.dialed, exc.status, exc.reason)
            return False
        # answered when originate returned, or when the first packet came if that was earlier
        self._answered_at = min(time.monotonic(), timeline.first_arrival or float("inf"))
        self.result.answered, self.result.status, self.result.reason = True, 200, "OK"
        self.result.setup_seconds = round(self._answered_at - started, 3)
        timeline.set_t0(self._answered_at)
        self._timeline = timeline
        return True

    async def close(self) -> SimulationResult:
        """Hang up if the call is still up, stop the stack, and fill in ``result``."""
        try:
            if self.leg is not None:
                if not self.leg.ended:
                    self.hangup()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.leg.wait_ended(), 5)
                self._finish()
        finally:
            if self._manager is not None:
                await self._manager.shutdown(grace=0)
            if self._sip is not None:
                await self._sip.stop()
            if self._media is not None:
                await self._media.close()
            self._manager = self._sip = self._media = None
        return self.result

    def _finish(self) -> None:
        leg, r = self.leg, self.result
        if r.end_reason is not None or leg is None:
            return
        reason = leg.end_reason
        r.end_reason = reason.value if reason else None
        if reason is EndReason.BYE_REMOTE:
            r.hung_up_by = "server"
        elif reason is EndReason.BYE_LOCAL or self._hung_up_by_us:
            r.hung_up_by = "caller"
        else:
            r.hung_up_by = "network"
        ended = time.monotonic()
        if leg.ended_at is not None and leg.answered_at is not None:
            ended = self._answered_at + max(leg.ended_at - leg.answered_at, 0.0)
        r.duration = round(ended - self._answered_at, 2)
        r.audio = self._timeline.audio() if self._timeline else np.zeros(0, np.int16)
        r.segments = heard_segments(r.audio)

    # -- what the caller does --------------------------------------------------------------------------------
    def _require_up(self) -> Leg:
        if self.leg is None:
            raise SimulatorError("the call was not answered: nothing to send")
        return self.leg

    def send_dtmf(self, digits: str) -> None:
        """Key digits now (RFC 4733 when the server offered telephone-event, tones otherwise)."""
        leg = self._require_up()
        if leg.ended:
            return
        leg.session.send_dtmf(digits)
        self.result.digits_sent.append((round(self.elapsed, 2), digits))

    async def play(self, pcm: np.ndarray) -> None:
        """Stream 8 kHz int16 audio as the caller's voice; returns when it has been sent or the call ended."""
        leg = self._require_up()
        if leg.ended:
            return
        start = round(self.elapsed, 2)
        await leg.session.play(pcm)
        self.result.voice_sent.append((start, round(self.elapsed, 2)))

    def hangup(self) -> None:
        leg = self._require_up()
        if not leg.ended:
            self._hung_up_by_us = True
            leg.hangup()

    # -- what the caller hears -------------------------------------------------------------------------------
    def heard_audio(self) -> np.ndarray:
        """Everything heard so far, on the timeline since the answer."""
        return self._timeline.audio() if self._timeline else np.zeros(0, np.int16)

    async def wait_for_prompt_end(self, silence: float = 0.8, timeout: float = 15.0) -> bool:
        """Wait until something has been heard since this call and then ``silence`` seconds of quiet (or no
        packets); False on timeout or when the call ends first."""
        leg = self._require_up()
        tl = self._timeline
        since = time.monotonic()
        deadline = since + timeout
        while not leg.ended:
            now = time.monotonic()
            if tl.sound_seen and tl.last_sound > since and now - tl.last_sound >= silence:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(0.02)
        return False

    async def wait_ended(self, timeout: float) -> bool:
        """Wait for the call to end (the server hanging up); False when it is still up after ``timeout``."""
        leg = self._require_up()
        try:
            await asyncio.wait_for(leg.wait_ended(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


def _random_rtp_range() -> tuple[int, int]:
    lo = random.randrange(40000, 58000, 2)
    return lo, lo + 200


async def simulate(server: str, caller: str, dialed: str, *, dtmf: Sequence[tuple[float, str]] = (),
                   voice: np.ndarray | None = None, voice_at: float = 0.0, duration: float = 20.0,
                   local_ip: str | None = None, ring_timeout: float = 30.0) -> SimulationResult:
    """Place one call, send ``dtmf`` ((seconds after answer, digits) pairs) and ``voice`` at ``voice_at``, hang
    up after ``duration`` seconds unless the server does first; never raises for call failures."""
    call = SimulatedCall(server, caller, dialed, local_ip=local_ip, ring_timeout=ring_timeout)
    tasks: list[asyncio.Future] = []
    try:
        if not await call.start():
            return call.result

        async def send_digits(at: float, digits: str) -> None:
            await asyncio.sleep(max(0.0, at - call.elapsed))
            call.send_dtmf(digits)

        async def speak() -> None:
            await asyncio.sleep(max(0.0, voice_at - call.elapsed))
            await call.play(voice)

        tasks = [asyncio.ensure_future(send_digits(at, d)) for at, d in sorted(dtmf)]
        if voice is not None:
            tasks.append(asyncio.ensure_future(speak()))
        await call.wait_ended(max(duration - call.elapsed, 0.0))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await call.close()
    return call.result


def parse_dtmf(values: Sequence[str]) -> list[tuple[float, str]]:
    """``DIGITS@SECONDS`` items -> (seconds, digits), checking both."""
    out = []
    for v in values:
        digits, _, at = v.partition("@")
        bad = [c for c in digits if c not in "0123456789*#ABCDabcd"]
        if not digits or not at or bad:
            raise SimulatorError(f"--dtmf {v!r}: write DIGITS@SECONDS with digits 0-9 * # A-D, e.g. 1@6.5")
        try:
            seconds = float(at)
        except ValueError:
            raise SimulatorError(f"--dtmf {v!r}: {at!r} is not a number of seconds") from None
        if seconds < 0:
            raise SimulatorError(f"--dtmf {v!r}: the time is seconds after the answer, not negative")
        out.append((seconds, digits.upper()))
    return out


def format_report(result: SimulationResult, dialed: str, server: str) -> str:
    if not result.answered:
        return f"call to {dialed} via {server} failed: {result.status} {result.reason or ''}".rstrip()
    lines = [f"call to {dialed} via {server}: answered in {result.setup_seconds:.3f} s"]
    events: list[tuple[float, str]] = []
    for i, seg in enumerate(result.segments, 1):
        events.append((seg.start, f"heard prompt #{i} until {seg.end:.2f} s ({seg.duration:.2f} s)"))
    for at, digits in result.digits_sent:
        events.append((at, f"sent digits {digits}"))
    for a, b in result.voice_sent:
        events.append((a, f"caller spoke until {b:.2f} s"))
    lines += [f"  {at:7.2f} s  {text}" for at, text in sorted(events, key=lambda e: e[0])]
    lines.append(f"  {result.duration:7.2f} s  hung up by the {result.hung_up_by} ({result.end_reason})")
    return "\n".join(lines)


def simulator_main(args: argparse.Namespace) -> int:
    """``contact-server call``: 0 when the call was answered, 1 when it failed, 2 for bad arguments."""
    try:
        dtmf = parse_dtmf(args.dtmf)
        voice = None
        if args.voice:
            try:
                voice = load_wav_8k(args.voice)
            except (OSError, ValueError, IvrError) as exc:
                raise SimulatorError(f"--voice {args.voice}: cannot read it as a WAV file ({exc})") from exc
        if args.duration <= 0 or args.voice_at < 0:
            raise SimulatorError("--duration must be positive and --voice-at not negative")
        result = asyncio.run(simulate(args.server, args.caller, args.dialed, dtmf=dtmf, voice=voice,
                                      voice_at=args.voice_at, duration=args.duration))
    except SimulatorError as exc:
        print(f"contact-server call: {exc}", file=sys.stderr)
        return 2
    if args.record and result.audio is not None:
        write_wav(args.record, result.audio)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_report(result, args.dialed, args.server))
        if args.record and result.audio is not None:
            print(f"what the caller heard: {Path(args.record).resolve()}")
    return 0 if result.answered else 1


if __name__ == "__main__":  # pragma: no cover
    from ivr.cli import main

    sys.exit(main(["call", *sys.argv[1:]]))
