"""End-of-speech detection for recordings (voice verification, messages): energy with an adaptive floor.

Sans-IO: time is the audio itself (samples fed), so the same input always gives the same decision; the
session adds a wall-clock guard for peers that stop sending RTP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class EosEvent(enum.Enum):
    SPEECH_START = "speech_start"
    END_OF_SPEECH = "end_of_speech"
    NO_SPEECH = "no_speech"
    """Nobody spoke within ``start_timeout``."""
    MAX_DURATION = "max_duration"


_TERMINAL = (EosEvent.END_OF_SPEECH, EosEvent.NO_SPEECH, EosEvent.MAX_DURATION)


@dataclass
class EndOfSpeechDetector:
    """Speech is a 20 ms frame louder than the noise floor by ``start_margin_db`` and than ``min_speech_dbfs``;
    ``min_speech_ms`` of it in a row starts speech (a click or a cough does not). After that, speech ends
    with ``silence_end_seconds`` of frames below floor + ``end_margin_db`` (a lower bar: hysteresis keeps
    soft word endings in). The floor follows the quietest frames: it drops at once and rises 5 dB/s, which
    tracks a noisy line without letting speech raise it between syllables.
    """

    max_seconds: float = 10.0
    silence_end_seconds: float = 1.5
    start_timeout: float = 5.0
    sample_rate: int = 8000
    frame_ms: int = 20
    min_speech_ms: int = 100
    start_margin_db: float = 12.0
    end_margin_db: float = 6.0
    min_speech_dbfs: float = -45.0
    floor_rise_db_per_s: float = 5.0

    samples: int = field(default=0, init=False)
    speech_start: int | None = field(default=None, init=False)
    """Sample index where speech began (after the run of ``min_speech_ms``), None before."""
    speech_end: int | None = field(default=None, init=False)
    result: EosEvent | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._frame = self.sample_rate * self.frame_ms // 1000
        self._pending = np.zeros(0, np.int16)
        self._floor: float | None = None
        self._rise = self.floor_rise_db_per_s * self.frame_ms / 1000
        self._run = 0
        self._silence = 0
        self._need_speech = max(1, self.min_speech_ms // self.frame_ms)
        self._need_silence = max(1, round(self.silence_end_seconds * 1000 / self.frame_ms))

    @property
    def done(self) -> bool:
        return self.result is not None

    def feed(self, pcm: np.ndarray) -> list[EosEvent]:
        """Feed int16 audio; returns SPEECH_START and/or one terminal event when they happen."""
        if self.done:
            return []
        buf = np.concatenate([self._pending, np.asarray(pcm, np.int16)]) if len(self._pending) else np.asarray(pcm)
        n = len(buf) // self._frame
        self._pending = np.array(buf[n * self._frame:], np.int16)
        if n == 0:
            return []
        frames = buf[: n * self._frame].reshape(n, self._frame).astype(np.float64)
        ms = np.einsum("ij,ij->i", frames, frames) / self._frame
        levels = 10 * np.log10(ms / (32768.0 * 32768.0) + 1e-12)
        events: list[EosEvent] = []
        for level in levels.tolist():  # one decision per 20 ms frame
            self.samples += self._frame
            ev = self._frame_decision(level)
            if ev is not None:
                events.append(ev)
                if ev in _TERMINAL:
                    self.result = ev
                    break
        return events

    def _frame_decision(self, level: float) -> EosEvent | None:
        floor = level if self._floor is None else min(self._floor + self._rise, level)
        self._floor = floor
        if self.speech_start is None:
            if level >= max(floor + self.start_margin_db, self.min_speech_dbfs) or (
                self._run and level >= max(floor + self.end_margin_db, self.min_speech_dbfs)
            ):
                self._run += 1
            else:
                self._run = 0
            if self._run >= self._need_speech:
                self.speech_start = self.samples - self._run * self._frame
                return EosEvent.SPEECH_START
            if self.samples >= self.start_timeout * self.sample_rate:
                return EosEvent.NO_SPEECH
        else:
            if level >= max(floor + self.end_margin_db, self.min_speech_dbfs):
                self._silence = 0
            else:
                self._silence += 1
                if self._silence >= self._need_silence:
                    self.speech_end = self.samples - self._silence * self._frame
                    return EosEvent.END_OF_SPEECH
        if self.samples >= self.max_seconds * self.sample_rate:
            if self.speech_start is not None:
                self.speech_end = self.samples
            return EosEvent.MAX_DURATION
        return None
