"""Two call legs joined: audio relayed both ways, DTMF re-sent, optional recording of the conversation.

Audio is relayed packet by packet as it arrives (no pacing, no jitter buffer: the far end's jitter buffer
does that job, and relaying at once adds no delay). The payload passes through untouched when both legs use
the same codec and goes through the 256-entry G.711 transcoding table otherwise; each leg keeps its own SSRC,
sequence numbers and timestamp base. Digits that arrived as RFC 4733 or SIP INFO are re-sent as RFC 4733 on
the other leg (or as tones when it has no telephone-event); in-band digits are already in the relayed audio.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from pathlib import Path

import numpy as np

from ivr.media.audio import write_wav
from ivr.media.dtmf import DtmfDigit, DtmfSource
from ivr.media.rtp import RtpPacket
from ivr.media.session import MediaSession

log = logging.getLogger(__name__)

RATE = 8000


class RecordMode(enum.Enum):
    STEREO = "stereo"
    """Leg a on the left channel, leg b on the right: best for quality review and speech analytics."""
    MIXED = "mixed"


class _Track:
    """What one leg heard from its peer, laid on the bridge's timeline: a stream's first packet is placed by
    its arrival time, the following ones by their RTP timestamps (so jitter does not smear the audio)."""

    def __init__(self, t0: float, max_samples: int):
        self.t0 = t0
        self.max_samples = max_samples
        self.buf = np.zeros(RATE * 8, np.int16)
        self.length = 0
        self.ssrc: int | None = None
        self.base_pos = 0
        self.base_ts = 0

    def add(self, pkt: RtpPacket, pcm: np.ndarray, now: float) -> None:
        if pkt.ssrc != self.ssrc:
            self.ssrc = pkt.ssrc
            self.base_pos = int((now - self.t0) * RATE)
            self.base_ts = pkt.timestamp
        offset = (pkt.timestamp - self.base_ts) & 0xFFFFFFFF
        if offset >= 0x80000000 or offset > self.max_samples:
            return
        pos = self.base_pos + offset
        end = pos + len(pcm)
        if end > self.max_samples:
            return
        if end > len(self.buf):
            grown = np.zeros(max(end, 2 * len(self.buf)), np.int16)
            grown[: self.length] = self.buf[: self.length]
            self.buf = grown
        self.buf[pos:end] = pcm
        self.length = max(self.length, end)


class Bridge:
    """``Bridge(a, b, record_to=None)``: both sessions must be started; ``start()`` then ``await stop()``."""

    def __init__(self, a: MediaSession, b: MediaSession, record_to: Path | str | None = None,
                 record_mode: RecordMode = RecordMode.STEREO, max_record_seconds: float = 4 * 3600):
        if a is b:
            raise ValueError("a bridge needs two different sessions")
        self.a = a
        self.b = b
        self.record_to = Path(record_to) if record_to is not None else None
        self.record_mode = record_mode
        self.max_record_seconds = max_record_seconds
        self.active = False
        self.relayed = {"a_to_b": 0, "b_to_a": 0}
        self.digits_relayed = 0
        self._tracks: tuple[_Track, _Track] | None = None

    def start(self) -> None:
        if self.active:
            return
        self.active = True
        recording = self.record_to is not None
        if recording:
            t0 = time.monotonic()
            cap = int(self.max_record_seconds * RATE)
            self._tracks = (_Track(t0, cap), _Track(t0, cap))
        for s in (self.a, self.b):
            s.set_relay(True)
            s.add_audio_listener(self._on_audio, want_pcm=recording)
            s.add_dtmf_listener(self._on_digit)

    def _on_audio(self, session: MediaSession, pkt: RtpPacket, pcm: np.ndarray | None) -> None:
        if session is self.a:
            self.b.forward(pkt, self.a.codec)
            self.relayed["a_to_b"] += 1
            idx = 0
        else:
            self.a.forward(pkt, self.b.codec)
            self.relayed["b_to_a"] += 1
            idx = 1
        if self._tracks is not None and pcm is not None:
            self._tracks[idx].add(pkt, pcm, time.monotonic())

    def _on_digit(self, session: MediaSession, digit: DtmfDigit) -> None:
        if digit.source is DtmfSource.INBAND:
            return
        other = self.b if session is self.a else self.a
        other.send_dtmf(digit.digit, duration_ms=max(60, min(digit.duration_ms or 100, 1000)))
        self.digits_relayed += 1

    async def stop(self) -> Path | None:
        """Unlink the legs (each goes back to its own prompts/silence) and write the recording, if any."""
        if not self.active:
            return None
        self.active = False
        for s in (self.a, self.b):
            s.remove_audio_listener(self._on_audio)
            s.remove_dtmf_listener(self._on_digit)
            if not s.closed:
                s.set_relay(False)
        if self._tracks is None or self.record_to is None:
            return None
        a, b = self._tracks
        self._tracks = None
        path = self.record_to
        await asyncio.to_thread(self._write, a.buf[: a.length], b.buf[: b.length], path)
        return path

    def _write(self, a: np.ndarray, b: np.ndarray, path: Path) -> None:
        n = max(len(a), len(b))
        left = np.zeros(n, np.int16)
        right = np.zeros(n, np.int16)
        left[: len(a)] = a
        right[: len(b)] = b
        if self.record_mode is RecordMode.STEREO:
            write_wav(path, np.stack([left, right], axis=1))
        else:
            mixed = np.clip(left.astype(np.int32) + right.astype(np.int32), -32768, 32767).astype(np.int16)
            write_wav(path, mixed)
        log.info("bridge recording written to %s (%.1f s)", path, n / RATE)
