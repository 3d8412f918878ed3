"""``contact-server call``: a real SIP caller for admins trying a menu before it goes live (and for tests).

It is built on the server's own SIP and media stack used as a client: one outgoing INVITE with a caller number
(From and P-Asserted-Identity), RFC 4733 digits at given moments, an optional WAV streamed as the caller's
voice, and everything heard recorded. What it prints comes from the audio itself: the prompts heard are the
stretches of sound between silences, with their times since the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ivr.calls import CallManager, OriginateFailed
from ivr.media.audio import load_wav_8k, write_wav
from ivr.media.session import MediaEngine
from ivr.sip.events import EndReason
from ivr.sip.transport import SipServer
from ivr.sip.useragent import SipUserAgent, UaConfig

FRAME = 160  # 20 ms at 8 kHz


@dataclass
class HeardSegment:
    start: float
    end: float


@dataclass
class SimulationResult:
    answered: bool
    status: int | None = None
    setup_seconds: float | None = None
    segments: list[HeardSegment] = field(default_factory=list)
    digits_sent: list[tuple[float, str]] = field(default_factory=list)
    hung_up_by: str | None = None
    duration: float = 0.0
    audio: np.ndarray | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("audio")
        return d


def heard_segments(pcm: np.ndarray, threshold_dbfs: float = -45.0, min_gap: float = 0.6,
                   min_length: float = 0.2) -> list[HeardSegment]:
    """Stretches of sound separated by at least ``min_gap`` seconds of silence (20 ms frame energy)."""
    n = len(pcm) // FRAME
    if n == 0:
        return []
    frames = pcm[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) / 32768.0
    loud = 20 * np.log10(np.maximum(rms, 1e-9)) > threshold_dbfs
    segments: list[HeardSegment] = []
    start = None
    quiet = 0
    gap_frames = int(min_gap / 0.02)
    for i, on in enumerate(loud):
        if on:
            if start is None:
                start = i
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet >= gap_frames:
                end = i - quiet + 1
                if (end - start) * 0.02 >= min_length:
                    segments.append(HeardSegment(round(start * 0.02, 2), round(end * 0.02, 2)))
                start, quiet = None, 0
    if start is not None and (n - quiet - start) * 0.02 >= min_length:
        segments.append(HeardSegment(round(start * 0.02, 2), round((n - quiet) * 0.02, 2)))
    return segments


class _NoIncoming:
    async def run(self, call) -> None:
        call.reject(403, "This is a test caller")


async def simulate(server: str, caller: str, dialed: str, *, dtmf: list[tuple[float, str]] = (),
                   voice: np.ndarray | None = None, voice_at: float = 0.0, duration: float = 20.0,
                   local_ip: str = "127.0.0.1") -> SimulationResult:
    """Place one call to ``server`` (host:port) and return what happened; never raises for call failures."""
    host, _, port = server.rpartition(":")
    ua = SipUserAgent(UaConfig(host=local_ip, port=0, user_agent="contact-server-call"))
    lo = random.randrange(40000, 58000, 2)
    media = MediaEngine(local_ip, lo, lo + 200)
    ref: dict = {}

    async def on_event(ev):
        ref["m"].handle_event(ev)

    sip = SipServer(ua, local_ip, 0, on_event=on_event, tcp=False)
    manager = CallManager(sip, media, _NoIncoming(), local_ip=local_ip)
    ref["m"] = manager
    await sip.start()
    chunks: list[np.ndarray] = []
    result = SimulationResult(answered=False)
    started = time.monotonic()
    try:
        try:
            leg = await manager.originate(
                f"sip:{dialed}@{host}:{port}", f"sip:{caller}@{local_ip}",
                headers=[("P-Asserted-Identity", f"<sip:{caller}@{local_ip}>")], ring_timeout=30.0)
        except OriginateFailed as exc:
            result.status = exc.status
            return result
        answered_at = time.monotonic()
        result.answered, result.status = True, 200
        result.setup_seconds = round(answered_at - started, 3)
        leg.session.add_audio_listener(lambda _s, _pkt, pcm: chunks.append(pcm) if pcm is not None else None)

        async def send_digits(at: float, digits: str) -> None:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - answered_at)))
            if not leg.ended:
                leg.session.send_dtmf(digits)
                result.digits_sent.append((round(time.monotonic() - answered_at, 2), digits))

        async def speak() -> None:
            await asyncio.sleep(voice_at)
            if not leg.ended:
                await leg.session.play(voice)

        tasks = [asyncio.ensure_future(send_digits(at, d)) for at, d in dtmf]
        if voice is not None:
            tasks.append(asyncio.ensure_future(speak()))
        try:
            await asyncio.wait_for(leg.wait_ended(), duration)
            result.hung_up_by = "server"
        except asyncio.TimeoutError:
            result.hung_up_by = "caller"
            leg.hangup()
            await asyncio.wait_for(leg.wait_ended(), 5)
        for t in tasks:
            t.cancel()
        if leg.end_reason is not None and leg.end_reason is not EndReason.BYE_REMOTE:
            result.hung_up_by = "caller"
        result.duration = round(time.monotonic() - answered_at, 2)
    finally:
        await manager.shutdown(grace=0)
        await sip.stop()
        await media.close()
    result.audio = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
    result.segments = heard_segments(result.audio)
    return result


def _parse_dtmf(values: list[str]) -> list[tuple[float, str]]:
    out = []
    for v in values:
        digits, _, at = v.partition("@")
        if not digits or not at:
            raise SystemExit(f"--dtmf {v!r}: write DIGITS@SECONDS, e.g. 1@6.5")
        out.append((float(at), digits))
    return out


def simulator_main(args: argparse.Namespace) -> int:
    voice = load_wav_8k(args.voice) if args.voice else None
    result = asyncio.run(simulate(args.server, args.caller, args.dialed, dtmf=_parse_dtmf(args.dtmf), voice=voice,
                                  voice_at=args.voice_at, duration=args.duration))
    if args.record and result.audio is not None:
        write_wav(args.record, result.audio)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not result.answered:
        print(f"call to {args.dialed} via {args.server} failed: {result.status}")
    else:
        print(f"answered in {result.setup_seconds:.3f} s; call lasted {result.duration:.1f} s, "
              f"hung up by the {result.hung_up_by}")
        for i, seg in enumerate(result.segments, 1):
            print(f"  heard #{i}: {seg.start:6.2f} s - {seg.end:6.2f} s")
        for at, digits in result.digits_sent:
            print(f"  sent {digits} at {at:.2f} s")
        if args.record:
            print(f"what the caller heard: {Path(args.record).resolve()}")
    return 0 if result.answered else 1


if __name__ == "__main__":  # pragma: no cover
    from ivr.cli import main

    sys.exit(main(["call", *sys.argv[1:]]))
