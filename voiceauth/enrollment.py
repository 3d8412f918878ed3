"""Sans-IO enrollment policy: collect checked takes until enough good speech, then a voiceprint.

The caller (IVR node or upload API) drives it: ``assess`` a take, re-prompt on a bad report,
embed the good ones off the loop, ``add_take``; ``complete`` says when to stop prompting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
import numpy as np

from .channel import pcm16_bytes
from .errors import EnrollmentError
from .quality import QualityIssue, QualityPolicy, QualityReport, assess_quality
from .voiceprint import Voiceprint, mean_embedding

__all__ = ["EnrollmentPolicy", "EnrollmentSession", "TakeResult", "audio_fingerprint"]


def audio_fingerprint(audio: np.ndarray) -> str:
    """Exact fingerprint of the PCM16 samples: a byte-identical replay has the same one."""
    return hashlib.sha256(pcm16_bytes(audio)).hexdigest()


@dataclass(frozen=True, slots=True)
class EnrollmentPolicy:
    takes_required: int = 3
    net_speech_target_s: float = 20.0  # complete earlier if this much net speech was collected
    max_takes: int = 6  # attempts (good or bad) before the IVR gives up
    quality: QualityPolicy = QualityPolicy(min_net_speech_s=2.0)


@dataclass(frozen=True, slots=True)
class TakeResult:
    accepted: bool
    report: QualityReport
    reason: QualityIssue | None
    complete: bool
    exhausted: bool  # too many attempts: stop prompting


@dataclass(slots=True)
class _Take:
    audio: np.ndarray
    rate: int
    embedding: np.ndarray
    report: QualityReport
    fingerprint: str


@dataclass
class EnrollmentSession:
    customer_id: str
    model: str
    policy: EnrollmentPolicy = field(default_factory=EnrollmentPolicy)
    flags: set[str] = field(default_factory=set)
    watchlist_hits: list[str] = field(default_factory=list)
    attempts: int = 0
    _takes: list[_Take] = field(default_factory=list)

    def assess(self, audio: np.ndarray, rate: int) -> QualityReport:
        return assess_quality(audio, rate, self.policy.quality)

    @property
    def takes(self) -> int:
        return len(self._takes)

    @property
    def net_speech_s(self) -> float:
        return sum(t.report.net_speech_s for t in self._takes)

    @property
    def complete(self) -> bool:
        return self.takes >= self.policy.takes_required or (
            self.takes > 0 and self.net_speech_s >= self.policy.net_speech_target_s)

    @property
    def exhausted(self) -> bool:
        return not self.complete and self.attempts >= self.policy.max_takes

    def reject_take(self, report: QualityReport) -> TakeResult:
        """Count a poor take (from ``assess``) so the IVR re-prompts with the reason."""
        self.attempts += 1
        return TakeResult(False, report, report.reprompt_reason, self.complete, self.exhausted)

    def add_take(self, audio: np.ndarray, rate: int, embedding: np.ndarray, report: QualityReport, *,
                 fingerprint: str | None = None) -> TakeResult:
        """``fingerprint`` is ``audio_fingerprint(audio)`` when the pool already computed it."""
        if self.complete:
            raise EnrollmentError("enrollment already complete: call voiceprint() instead of adding takes")
        if not report.ok:
            return self.reject_take(report)
        fp = fingerprint or audio_fingerprint(audio)
        if any(t.fingerprint == fp for t in self._takes):
            self.flags.add("DUPLICATE_TAKE")
            return self.reject_take(report)
        self.attempts += 1
        self._takes.append(_Take(np.asarray(audio), rate, np.asarray(embedding, np.float32), report, fp))
        return TakeResult(True, report, None, self.complete, False)

    def flag_watchlist(self, label: str) -> None:
        self.flags.add("WATCHLIST")
        self.watchlist_hits.append(label)

    def accepted_takes(self) -> list[tuple[np.ndarray, int, np.ndarray, str]]:
        return [(t.audio, t.rate, t.embedding, t.fingerprint) for t in self._takes]

    def voiceprint(self) -> Voiceprint:
        if not self.complete:
            raise EnrollmentError(f"enrollment of {self.customer_id} needs {self.policy.takes_required} good takes "
                                  f"or {self.policy.net_speech_target_s:.0f} s of speech; have {self.takes} "
                                  f"({self.net_speech_s:.1f} s)")
        return Voiceprint(self.customer_id, self.model, mean_embedding([t.embedding for t in self._takes]),
                          self.takes)
