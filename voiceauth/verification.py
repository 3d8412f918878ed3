"""Verification decisions: score against the voiceprint, with lock-out, replay and watchlist checks.

The verifier takes an embedding that was computed elsewhere (the pool) and the current time;
it reads and writes the store (blocking SQL: call it from a worker thread when on an event loop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

import numpy as np

from .calibration import threshold_for
from .errors import KeyringError, ModelMismatch, VoiceAuthError
from .quality import QualityIssue, QualityReport
from .store import AttemptRecord, VoiceprintStore
from .voiceprint import cosine

log = logging.getLogger(__name__)

__all__ = ["Decision", "Flag", "VerifierPolicy", "VerificationResult", "Verifier"]


class Decision(str, Enum):
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    NOT_ENOUGH_SPEECH = "NOT_ENOUGH_SPEECH"
    NOT_ENROLLED = "NOT_ENROLLED"
    LOCKED_OUT = "LOCKED_OUT"
    ERROR = "ERROR"


class Flag(str, Enum):
    REPLAY = "REPLAY"
    WATCHLIST = "WATCHLIST"
    MODEL_MISMATCH = "MODEL_MISMATCH"
    REFRESHED = "REFRESHED"
    CLIPPED = "CLIPPED"
    TOO_QUIET = "TOO_QUIET"
    BUSY = "BUSY"  # the embedding queue was full: no decision was attempted


@dataclass(frozen=True, slots=True)
class VerifierPolicy:
    threshold: float
    max_failures_per_day: int = 5
    replay_cosine: float = 0.995
    replay_history: int = 50
    watchlist_threshold: float | None = None  # None: the verification threshold
    refresh_weight: float = 0.0  # 0 disables the slow voiceprint refresh
    refresh_margin: float = 0.1  # refresh only when score >= threshold + margin

    @classmethod
    def from_calibration(cls, model: str, codec: str = "ulaw", seconds: float | None = None,
                         calibration_dir=None, **kw) -> "VerifierPolicy":
        return cls(threshold=threshold_for(model, codec, seconds, directory=calibration_dir), **kw)


@dataclass(frozen=True, slots=True)
class VerificationResult:
    decision: Decision
    customer_id: str
    call_id: str
    model: str
    score: float | None = None
    threshold: float | None = None
    flags: tuple[Flag, ...] = ()
    watchlist_label: str | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.decision is Decision.ACCEPT


def _day_start(now: float) -> float:
    d = datetime.fromtimestamp(now, tz=timezone.utc)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass
class Verifier:
    store: VoiceprintStore
    model: str
    policy: VerifierPolicy
    actor: str = "ivr"
    _fail = (Decision.REJECT.value,)

    # -- before recording -----------------------------------------------------------------
    def precheck(self, customer_id: str, call_id: str, now: float) -> VerificationResult | None:
        """NOT_ENROLLED or LOCKED_OUT before the caller is asked to speak; None means go ahead."""
        if self.store.get_voiceprint(customer_id, self.model) is None:
            return VerificationResult(Decision.NOT_ENROLLED, customer_id, call_id, self.model,
                                      threshold=self.policy.threshold)
        if self.failures_today(customer_id, now) >= self.policy.max_failures_per_day:
            return VerificationResult(Decision.LOCKED_OUT, customer_id, call_id, self.model,
                                      threshold=self.policy.threshold,
                                      detail=f"{self.policy.max_failures_per_day} failed verifications today")
        return None

    def failures_today(self, customer_id: str, now: float) -> int:
        return self.store.count_decisions_since(customer_id, self._fail, _day_start(now))

    # -- decision -------------------------------------------------------------------------
    def not_enough_speech(self, customer_id: str, call_id: str, report: QualityReport,
                          now: float) -> VerificationResult:
        res = VerificationResult(Decision.NOT_ENOUGH_SPEECH, customer_id, call_id, self.model,
                                 threshold=self.policy.threshold,
                                 detail=f"{report.net_speech_s:.1f} s of net speech")
        self._record(res, now, None, None)
        return res

    def decide(self, customer_id: str, call_id: str, embedding: np.ndarray, model: str, *, now: float,
               audio_hash: str | None = None, report: QualityReport | None = None) -> VerificationResult:
        """Score one attempt and record it; never raises for bad data, answers ERROR instead."""
        try:
            return self._decide(customer_id, call_id, embedding, model, now, audio_hash, report)
        except (ModelMismatch, KeyringError, ValueError, VoiceAuthError) as exc:
            flags = (Flag.MODEL_MISMATCH,) if isinstance(exc, ModelMismatch) else ()
            log.warning("verification of %s failed: %s", customer_id, exc)
            res = VerificationResult(Decision.ERROR, customer_id, call_id, model, threshold=self.policy.threshold,
                                     flags=flags, detail=str(exc))
            try:
                self._record(res, now, None, None)
            except Exception:  # the store itself may be what failed
                log.exception("could not record failed verification")
            return res

    def _decide(self, customer_id, call_id, embedding, model, now, audio_hash, report) -> VerificationResult:
        if model != self.model:
            raise ModelMismatch(f"attempt embedded with {model!r} but this verifier uses {self.model!r}")
        pre = self.precheck(customer_id, call_id, now)
        if pre is not None:
            self._record(pre, now, None, None)
            return pre
        if report is not None and QualityIssue.TOO_SHORT in report.issues:
            return self.not_enough_speech(customer_id, call_id, report, now)
        vp = self.store.get_voiceprint(customer_id, self.model)
        emb = np.asarray(embedding, np.float32)
        score = vp.score(emb, model)
        flags: list[Flag] = []
        if report is not None:
            flags += [Flag(i.value) for i in report.issues if i.value in Flag.__members__]
        if self._is_replay(customer_id, emb, audio_hash):
            flags.append(Flag.REPLAY)
        label = self._watchlist_hit(emb)
        if label is not None:
            flags.append(Flag.WATCHLIST)
        accept = score >= self.policy.threshold and Flag.REPLAY not in flags
        decision = Decision.ACCEPT if accept else Decision.REJECT
        if (accept and self.policy.refresh_weight > 0 and not flags
                and score >= self.policy.threshold + self.policy.refresh_margin):
            self.store.save_voiceprint(vp.refreshed(emb, model, self.policy.refresh_weight), actor=self.actor,
                                       now=now, action="voiceprint_refreshed")
            flags.append(Flag.REFRESHED)
        res = VerificationResult(decision, customer_id, call_id, model, score, self.policy.threshold,
                                 tuple(flags), label)
        self._record(res, now, emb, audio_hash)
        if Flag.REPLAY in flags or Flag.WATCHLIST in flags:
            self.store.audit(self.actor, "verification_flagged", customer_id, now, call_id=call_id,
                             flags=[f.value for f in flags], watchlist=label)
        return res

    def _is_replay(self, customer_id: str, emb: np.ndarray, audio_hash: str | None) -> bool:
        earlier = [(t.audio_hash, t.embedding) for t in self.store.enrollment_takes(customer_id, self.model)]
        earlier += [(a.audio_hash, a.embedding) for a in
                    self.store.recent_attempts(customer_id, self.model, self.policy.replay_history)]
        for h, e in earlier:
            if audio_hash is not None and h == audio_hash:
                return True
            if e is not None and cosine(e, self.model, emb, self.model) > self.policy.replay_cosine:
                return True
        return False

    def _watchlist_hit(self, emb: np.ndarray) -> str | None:
        limit = self.policy.watchlist_threshold if self.policy.watchlist_threshold is not None else self.policy.threshold
        best, label = -2.0, None
        for entry in self.store.watchlist(self.model):
            s = cosine(entry.embedding, self.model, emb, self.model)
            if s > best:
                best, label = s, entry.label
        return label if best >= limit else None

    def watchlist_hit(self, embedding: np.ndarray, model: str) -> str | None:
        """Enrollment uses this too: a fraudster's voice is flagged whatever number they call from."""
        if model != self.model:
            raise ModelMismatch(f"embedding of {model!r} checked against the {self.model!r} watchlist")
        return self._watchlist_hit(np.asarray(embedding, np.float32))

    def _record(self, res: VerificationResult, now: float, emb: np.ndarray | None, audio_hash: str | None) -> None:
        self.store.record_attempt(AttemptRecord(res.customer_id, res.call_id, res.score, res.threshold,
                                                res.decision.value, res.model, tuple(f.value for f in res.flags),
                                                now, audio_hash, emb), actor=self.actor)
        if res.decision is Decision.REJECT and self.failures_today(res.customer_id, now) >= \
                self.policy.max_failures_per_day:
            self.store.audit(self.actor, "locked_out", res.customer_id, now, call_id=res.call_id)
