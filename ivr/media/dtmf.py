"""DTMF in its three transports: RFC 4733 telephone-events, SIP INFO bodies and in-band tones.

Everything here is sans-IO: the session shell feeds payloads and decoded audio, and passes ``now`` where a
timeout matters. Each transport yields ``DtmfDigit`` objects once per key press.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import numpy as np

from ivr.media.errors import DtmfError

DIGITS = "0123456789*#ABCD"
ROW_FREQS = (697.0, 770.0, 852.0, 941.0)
COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
DBM0_PEAK = 32768 / 10 ** (3.17 / 20)
"""Peak int16 amplitude of a 0 dBm0 sine: G.711's full-scale sine is +3.17 dBm0."""


class DtmfMode(enum.Enum):
    """How a session listens for digits.

    AUTO accepts RFC 4733 and INFO, and runs the in-band detector until the first RFC 4733 event arrives:
    some peers (pyVoIP) negotiate telephone-event but only ever send tones, while a peer that does send
    RFC 4733 may also leave the tones in the audio, which would otherwise count twice.
    """

    RFC4733 = "rfc4733"
    INFO = "info"
    INBAND = "inband"
    AUTO = "auto"


class DtmfSource(enum.Enum):
    RFC4733 = "rfc4733"
    INFO = "info"
    INBAND = "inband"


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str
    source: DtmfSource
    duration_ms: int | None = None


def _check_digit(digit: str) -> str:
    d = digit.upper()
    if len(d) != 1 or d not in DIGITS:
        raise DtmfError(f"{digit!r} is not a DTMF digit: use one of {DIGITS}")
    return d


# ---------------------------------------------------------------------------------------------------------------
# RFC 4733


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload is {len(payload)} bytes, needs 4")
        event, flags, duration = struct.unpack_from("!BBH", payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        return struct.pack("!BBH", self.event, (0x80 if self.end else 0) | (self.volume & 0x3F),
                           min(self.duration, 0xFFFF))


@dataclass(slots=True)
class _Pending:
    digit: str
    first: float
    last: float
    duration: int


class Rfc4733Receiver:
    """Turns telephone-event packets into one digit per key press.

    Events are keyed by (SSRC, timestamp): RFC 4733 gives every packet of one event the same timestamp, and
    SIPp sends its DTMF with an SSRC different from its audio, so sequence numbers cannot be trusted to tell
    events apart. A digit is reported when the first end packet arrives; the two retransmitted end packets
    (and late updates) hit the ``_done`` memory and are absorbed. If the end never arrives, the digit is
    reported ``end_timeout`` seconds after the last packet of the event (``handle_timer``), or at once when a
    newer event from the same SSRC starts.
    """

    def __init__(self, clock_rate: int = 8000, end_timeout: float = 0.25, memory_seconds: float = 4.0):
        self.clock_rate = clock_rate
        self.end_timeout = end_timeout
        self.memory_seconds = memory_seconds
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._done: dict[tuple[int, int], float] = {}

    def receive(self, ssrc: int, timestamp: int, payload: bytes, now: float) -> list[DtmfDigit]:
        """Feed one telephone-event payload; returns the digits it completes (usually zero or one)."""
        out: list[DtmfDigit] = []
        try:
            ev = TelephoneEvent.parse(payload)
        except DtmfError:
            return out
        if ev.event >= len(DIGITS):
            return out  # flash-hook (16) and line events are not digits
        key = (ssrc, timestamp)
        if key in self._done:
            return out
        pending = self._pending.get(key)
        if pending is None:
            for other in [k for k in self._pending if k[0] == ssrc]:
                out.append(self._finish(other, now))
            pending = self._pending[key] = _Pending(DIGITS[ev.event], now, now, ev.duration)
        pending.last = now
        pending.duration = max(pending.duration, ev.duration)
        if ev.end:
            out.append(self._finish(key, now))
        self._expire(now)
        return out

    def _finish(self, key: tuple[int, int], now: float) -> DtmfDigit:
        p = self._pending.pop(key)
        self._done[key] = now + self.memory_seconds
        return DtmfDigit(p.digit, DtmfSource.RFC4733, round(p.duration * 1000 / self.clock_rate))

    def _expire(self, now: float) -> None:
        if self._done and len(self._done) > 16:
            for k in [k for k, t in self._done.items() if t <= now]:
                del self._done[k]

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called, or None when nothing is pending."""
        if not self._pending:
            return None
        return min(p.last for p in self._pending.values()) + self.end_timeout

    def handle_timer(self, now: float) -> list[DtmfDigit]:
        out = [self._finish(k, now) for k, p in list(self._pending.items()) if p.last + self.end_timeout <= now]
        for k in [k for k, t in self._done.items() if t <= now]:
            del self._done[k]
        return out


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    payload: bytes
    marker: bool
    timestamp: int
    end: bool


def encode_event(digit: str, timestamp: int, duration_ms: int = 100, ptime_ms: int = 20, volume: int = 10,
                 clock_rate: int = 8000, end_repeats: int = 3) -> list[DtmfPacket]:
    """The packets of one key press, to send one per ptime: a start packet with the marker bit, updates with a
    growing duration, then ``end_repeats`` identical end packets (RFC 4733 section 2.5.1.4). All share
    ``timestamp``, the start of the event on the sender's RTP clock."""
    event = DIGITS.index(_check_digit(digit))
    step = clock_rate * ptime_ms // 1000
    total = max(step, min(clock_rate * duration_ms // 1000, 0xFFFF))
    packets = []
    d = step
    while d < total:
        packets.append(DtmfPacket(bytes(TelephoneEvent(event, False, volume, d)), not packets, timestamp, False))
        d += step
    end = bytes(TelephoneEvent(event, True, volume, total))
    packets.extend(DtmfPacket(end, not packets and i == 0, timestamp, True) for i in range(end_repeats))
    return packets


# ---------------------------------------------------------------------------------------------------------------
# SIP INFO

_INFO_SIGNALS = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}


def parse_info_body(content_type: str | None, body: bytes | str) -> DtmfDigit | None:
    """Digit of a SIP INFO request, or None when the content type is not a DTMF one (answer 415 then).

    ``application/dtmf-relay``: ``Signal=5`` and ``Duration=160`` (ms) lines; ``application/dtmf``: the digit
    alone. Some phones send 10/11 for * and #. Raises ``DtmfError`` (answer 400) on a malformed body.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
    if ctype == "application/dtmf-relay":
        fields: dict[str, str] = {}
        for line in text.replace("\r", "\n").split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k.strip().lower()] = v.strip()
        if "signal" not in fields:
            raise DtmfError("application/dtmf-relay body has no Signal= line")
        digit = _info_digit(fields["signal"])
        duration = None
        if "duration" in fields:
            try:
                duration = int(fields["duration"])
            except ValueError:
                raise DtmfError(f"application/dtmf-relay Duration {fields['duration']!r} is not an integer") from None
        return DtmfDigit(digit, DtmfSource.INFO, duration)
    if ctype == "application/dtmf":
        return DtmfDigit(_info_digit(text.strip()), DtmfSource.INFO, None)
    return None


def _info_digit(signal: str) -> str:
    signal = _INFO_SIGNALS.get(signal, signal)
    return _check_digit(signal)


# ---------------------------------------------------------------------------------------------------------------
# In-band


def generate_tone(digit: str, duration_ms: int, level_dbm0: float = -10.0, twist_db: float = 0.0,
                  sample_rate: int = 8000, phase: float = 0.0) -> np.ndarray:
    """int16 samples of one DTMF tone, each frequency at ``level_dbm0`` (the column tone ``twist_db`` lower)."""
    d = _check_digit(digit)
    row = next(i for i, r in enumerate(_KEYPAD) if d in r)
    col = _KEYPAD[row].index(d)
    t = np.arange(sample_rate * duration_ms // 1000) / sample_rate
    a_row = DBM0_PEAK * 10 ** (level_dbm0 / 20)
    a_col = a_row * 10 ** (-twist_db / 20)
    x = a_row * np.sin(2 * np.pi * ROW_FREQS[row] * t + phase) + a_col * np.sin(2 * np.pi * COL_FREQS[col] * t)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def tone_sequence(digits: str, on_ms: int = 100, off_ms: int = 100, level_dbm0: float = -10.0,
                  sample_rate: int = 8000) -> np.ndarray:
    silence = np.zeros(sample_rate * off_ms // 1000, np.int16)
    parts = [silence]
    for d in digits:
        parts += [generate_tone(d, on_ms, level_dbm0, sample_rate=sample_rate), silence]
    return np.concatenate(parts)


@dataclass
class InbandDtmfDetector:
    """Goertzel DTMF detector over 20 ms windows sliding by 10 ms.

    Goertzel computes the DFT term of one frequency; evaluating its recurrence is a per-sample loop, so the
    eight terms are computed instead as one matrix product with precomputed cos/sin bases (same values, one
    BLAS call). Each 10 ms block is projected once, on both halves of the basis, and a window's terms are the
    sum of its two blocks' projections: every sample is multiplied once, and the last block of a call is
    carried to the next. No window function: DTMF rows are only 73 Hz apart and a 20 ms rectangular window
    already resolves them with 13 dB to spare.

    A window holds a digit when: both tones exceed ``min_level_dbm0``; twist is within limits; the strongest
    row and column exceed the other rows/columns by ``relative_peak_db``; and the two tones carry at least
    ``tone_ratio`` of the window's energy (speech spreads its energy over many harmonics). A digit is reported
    after ``min_on`` consecutive windows agree (~40 ms) and once per tone; the same digit again needs
    ``min_off`` windows in which its tones are absent (not merely failing a check: a 10 ms drop-out in a
    tone must not make a second key press).
    """

    sample_rate: int = 8000
    hop: int = 80
    min_on: int = 3
    min_off: int = 2
    min_level_dbm0: float = -33.0
    normal_twist_db: float = 8.0
    reverse_twist_db: float = 6.0
    relative_peak_db: float = 8.0
    tone_ratio: float = 0.7
    batch_blocks: int = 6
    """Blocks evaluated per numpy pass: a pass costs mostly fixed overhead, so batching keeps hundreds of
    sessions affordable at the price of ``batch_blocks * hop`` samples (60 ms) of latency."""

    _basis: np.ndarray = field(init=False, repr=False)

    @property
    def window(self) -> int:
        return 2 * self.hop

    def __post_init__(self) -> None:
        n = np.arange(self.window)
        freqs = np.array(ROW_FREQS + COL_FREQS)
        ang = 2 * np.pi * np.outer(n, freqs) / self.sample_rate
        full = np.concatenate([np.cos(ang), np.sin(ang)], axis=1)  # (window, 16)
        self._basis = np.ascontiguousarray(np.concatenate([full[: self.hop], full[self.hop:]], axis=1))
        amp = DBM0_PEAK * 10 ** (self.min_level_dbm0 / 20)
        self._min_power = amp * amp / 2
        self._normal = 10 ** (-self.normal_twist_db / 10)
        self._reverse = 10 ** (-self.reverse_twist_db / 10)
        self._rel = 10 ** (-self.relative_peak_db / 10)
        scale = 2.0 / (self.window * self.window)  # |X|^2 -> mean-square power of a tone
        self._min_power_raw = self._min_power / scale
        self._ratio_k = self.tone_ratio / (self.window * scale)  # tones / window energy, in raw units
        self.reset()

    def reset(self) -> None:
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._cand: int = -1
        self._run = 0
        self._off = self.min_off
        self._held: int = -1

    def feed(self, pcm: np.ndarray) -> list[DtmfDigit]:
        """Feed decoded 8 kHz int16 audio of any length; returns the digits that completed."""
        self._pending.append(pcm)
        self._pending_len += len(pcm)
        hop = self.hop
        if self._pending_len < self.batch_blocks * hop:
            return []
        x = np.concatenate(self._pending).astype(np.float64)
        nb = len(x) // hop
        # keep the last full block (start of the next window) and the partial one
        self._pending = [x[(nb - 1) * hop:]]
        self._pending_len = len(x) - (nb - 1) * hop
        blocks = x[: nb * hop].reshape(nb, hop)
        proj = blocks @ self._basis  # (nb, 32): each block on the first and second half of the basis
        win = proj[:-1, :16] + proj[1:, 16:]  # window j = blocks j and j+1
        sq = win * win
        power = sq[:, :8] + sq[:, 8:]  # |X|^2 per tone, unscaled: thresholds are scaled instead
        energy = np.einsum("ij,ij->i", blocks, blocks)
        e = energy[:-1] + energy[1:]
        if self._held < 0 and not (power.sum(axis=1) >= self._ratio_k * e).any():
            # nothing tone-like (the common case): only a few numpy calls per batch
            if self._cand >= 0 or self._off < self.min_off:
                return self._decide(np.full((len(e), 2), -1))
            return []
        return self._decide(self._classify(power, e))

    def _classify(self, power: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Per window: (digit index passing every check, digit index whose two tones are merely present),
        -1 for none. The looser second one only keeps a held digit alive across short drop-outs."""
        rows, cols = power[:, :4], power[:, 4:]
        r = rows.argmax(axis=1)
        c = cols.argmax(axis=1)
        idx = np.arange(len(power))
        rp = rows[idx, r]
        cp = cols[idx, c]
        minp = self._min_power_raw
        ok = (rp >= minp) & (cp >= minp)
        ok &= (cp >= rp * self._normal) & (rp >= cp * self._reverse)
        rows_other = rows.copy()
        rows_other[idx, r] = 0
        cols_other = cols.copy()
        cols_other[idx, c] = 0
        present = (rp >= minp * 0.25) & (cp >= minp * 0.25)
        present &= (rows_other.max(axis=1) <= rp * self._rel) & (cols_other.max(axis=1) <= cp * self._rel)
        ok &= present & ((rp + cp) >= self._ratio_k * e)
        k = r * 4 + c
        return np.stack([np.where(ok, k, -1), np.where(present, k, -1)], axis=1)

    def _decide(self, classes: np.ndarray) -> list[DtmfDigit]:
        out = []
        for k, present in classes.tolist():  # a few windows per call, not samples
            if k < 0 and present == self._held >= 0:
                self._off = 0
                continue
            if k < 0:
                self._off += 1
                self._run = 0
                self._cand = -1
                if self._off >= self.min_off:
                    self._held = -1
                continue
            self._off = 0
            if k == self._cand:
                self._run += 1
            else:
                self._cand, self._run = k, 1
            if self._run >= self.min_on and k != self._held:
                self._held = k
                out.append(DtmfDigit(_KEYPAD[k // 4][k % 4], DtmfSource.INBAND))
        return out
