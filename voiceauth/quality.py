"""Sans-IO speech quality checks: decide whether a take is worth embedding or needs a re-prompt."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from .channel import as_float32, resample
from .vad import speech_frames

__all__ = ["QualityIssue", "QualityPolicy", "QualityReport", "assess_quality"]


class QualityIssue(str, Enum):
    TOO_SHORT = "TOO_SHORT"  # not enough net speech
    CLIPPED = "CLIPPED"
    TOO_QUIET = "TOO_QUIET"


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    min_net_speech_s: float = 1.5
    # G.711 tops out at 0.98 (mu-law) / 0.984 (A-law) of full scale: count samples at the rail.
    clip_level: float = 0.97
    max_clipping_ratio: float = 0.005
    min_speech_dbfs: float = -45.0
    vad_aggressiveness: int = 2


@dataclass(frozen=True, slots=True)
class QualityReport:
    duration_s: float
    net_speech_s: float
    clipping_ratio: float
    speech_dbfs: float
    peak_dbfs: float
    issues: tuple[QualityIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def reprompt_reason(self) -> QualityIssue | None:
        """The one issue to tell the caller about, most actionable first."""
        for issue in (QualityIssue.TOO_QUIET, QualityIssue.CLIPPED, QualityIssue.TOO_SHORT):
            if issue in self.issues:
                return issue
        return None


def _dbfs(x: float) -> float:
    return float(20.0 * np.log10(max(x, 1e-10)))


def assess_quality(audio: np.ndarray, rate: int, policy: QualityPolicy = QualityPolicy()) -> QualityReport:
    a = as_float32(audio)
    if rate not in (8000, 16000, 32000, 48000):
        a, rate = resample(a, rate, 16000), 16000
    duration = a.size / rate if rate else 0.0
    frame_ms = 30
    n = rate * frame_ms // 1000
    flags = speech_frames(a, rate, frame_ms, policy.vad_aggressiveness)
    net = float(flags.sum()) * frame_ms / 1000.0
    if flags.any():
        speech = a[: flags.size * n].reshape(-1, n)[flags]
        speech_rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64))))
    else:
        speech_rms = float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0
    peak = float(np.max(np.abs(a))) if a.size else 0.0
    clipping = float(np.mean(np.abs(a) >= policy.clip_level)) if a.size else 0.0
    issues = []
    level = _dbfs(speech_rms)
    if level < policy.min_speech_dbfs:
        issues.append(QualityIssue.TOO_QUIET)
    if clipping > policy.max_clipping_ratio:
        issues.append(QualityIssue.CLIPPED)
    if net < policy.min_net_speech_s:
        issues.append(QualityIssue.TOO_SHORT)
    return QualityReport(duration, net, clipping, level, _dbfs(peak), tuple(issues))
