"""Asyncio shell for the IVR: quality check and embedding in the pool's worker, decisions in a worker thread.

Nothing heavy runs on the event loop: the recording goes to the pool as PCM16 bytes and comes back as a quality
report, a fingerprint and (when worth it) an embedding. A full pool queue is the BUSY outcome (ERROR + Flag.BUSY),
a dead or hung worker an ERROR: the IVR takes its fallback branch in both cases.

    service = VoiceAuthService(pool, store, VerifierPolicy.from_calibration("resemblyzer", "ulaw", 3))
    result = await service.verify(customer_id, audio_8k, 8000, call_id=..., now=time.time())
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .analysis import EmbedWhen
from .enrollment import EnrollmentPolicy, EnrollmentSession, TakeResult
from .errors import ConsentRequired, Overloaded, VoiceAuthError
from .pool import EmbeddingPool
from .quality import QualityPolicy
from .store import SqlVoiceprintStore
from .verification import Decision, Flag, VerificationResult, Verifier, VerifierPolicy
from .voiceprint import Voiceprint

log = logging.getLogger(__name__)

__all__ = ["VoiceAuthService"]


def _pin_thread(cpus: tuple[int, ...] | None) -> None:
    """Linux schedules threads one by one: this store thread goes to the voice CPUs, the rest of the process
    (event loop, RTP) stays where it is."""
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(threading.get_native_id(), cpus)
        except OSError as exc:
            log.warning("voice store thread not moved to CPUs %s: %s", cpus, exc)


@dataclass
class VoiceAuthService:
    pool: EmbeddingPool
    store: SqlVoiceprintStore
    policy: VerifierPolicy
    enrollment_policy: EnrollmentPolicy = EnrollmentPolicy()
    verify_quality: QualityPolicy = QualityPolicy()
    actor: str = "ivr"
    db_threads: int = 1
    db_cpus: tuple[int, ...] | None = None
    """``voice.cpus``: the store threads run there too (SQL, commits, decryption), beside the embedding workers,
    not on the server's CPUs."""
    decider: Any | None = None
    """``voiceauth.decider.ProcessDecider``: decisions in a process of their own (the server's default with a
    database file); None: on the store thread."""
    _db: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.store, self.pool.model_name, self.policy, self.actor)

    async def _io(self, fn, *args, **kw):
        """Store reads/writes and decisions (SQL, decryption, replay and watchlist scans: pure Python that holds
        the GIL for milliseconds). A few own threads, not the loop's default executor: 20 verifications in 20
        threads would queue the event loop behind each of them for the GIL, and RTP would be late."""
        if self._db is None:
            self._db = ThreadPoolExecutor(self.db_threads, thread_name_prefix="voiceauth-db",
                                          initializer=_pin_thread, initargs=(self.db_cpus,))
        return await asyncio.get_running_loop().run_in_executor(self._db, lambda: fn(*args, **kw))

    async def _decision(self, method: str, *args, **kw):
        if self.decider is not None:
            try:
                return await self.decider.call(method, *args, **kw)
            except VoiceAuthError as exc:
                customer_id, call_id = args[0], args[1]
                return VerificationResult(Decision.ERROR, customer_id, call_id, self.pool.model_name,
                                          threshold=self.policy.threshold, detail=str(exc))
        return await self._io(getattr(self.verifier, method), *args, **kw)

    async def close(self) -> None:
        """Stop the pool's workers and the store threads."""
        await self.pool.close()
        if self.decider is not None:
            await self.decider.close()
        if self._db is not None:
            self._db.shutdown(wait=False)

    # -- verification ---------------------------------------------------------------------
    async def verify(self, customer_id: str, audio: np.ndarray, rate: int, *, call_id: str,
                     now: float) -> VerificationResult:
        pre = await self._decision("precheck", customer_id, call_id, now)
        if pre is not None:
            return pre
        try:
            analysis = await self.pool.analyse(audio, rate, self.verify_quality, EmbedWhen.ENOUGH_SPEECH)
        except Overloaded as exc:
            log.warning("voice verification of %s: %s", customer_id, exc)
            return VerificationResult(Decision.ERROR, customer_id, call_id, self.pool.model_name,
                                      threshold=self.policy.threshold, flags=(Flag.BUSY,), detail=str(exc))
        except VoiceAuthError as exc:
            return VerificationResult(Decision.ERROR, customer_id, call_id, self.pool.model_name,
                                      threshold=self.policy.threshold, detail=str(exc))
        report = analysis.report
        if analysis.embedding is None:
            return await self._decision("not_enough_speech", customer_id, call_id, report, now)
        return await self._decision("decide", customer_id, call_id, analysis.embedding, self.pool.model_name,
                              now=now, audio_hash=analysis.fingerprint, report=report)

    # -- enrollment -----------------------------------------------------------------------
    async def start_enrollment(self, customer_id: str, *, takes_required: int | None = None) -> EnrollmentSession:
        """``takes_required`` overrides the policy's count (the IVR node's ``takes``)."""
        if await self._io(self.store.active_consent, customer_id) is None:
            raise ConsentRequired(f"customer {customer_id} has no recorded consent to voice authentication; "
                                  "record it (store.record_consent) before enrolling")
        policy = self.enrollment_policy
        if takes_required is not None:
            policy = replace(policy, takes_required=takes_required, max_takes=max(policy.max_takes, takes_required))
        return EnrollmentSession(customer_id, self.pool.model_name, policy)

    async def add_take(self, session: EnrollmentSession, audio: np.ndarray, rate: int) -> TakeResult:
        """Check and embed one take in the pool; a poor one comes back with the re-prompt reason.
        Raises :class:`Overloaded` when the pool is full (the IVR's error branch)."""
        analysis = await self.pool.analyse(audio, rate, session.policy.quality, EmbedWhen.QUALITY_OK)
        if analysis.embedding is None:
            return session.reject_take(analysis.report)
        emb = analysis.embedding
        label = await self._io(self.verifier.watchlist_hit, emb, self.pool.model_name)
        if label is not None:
            session.flag_watchlist(label)
        return session.add_take(audio, rate, emb, analysis.report, fingerprint=analysis.fingerprint)

    async def finish_enrollment(self, session: EnrollmentSession, *, actor: str, now: float) -> Voiceprint:
        vp = session.voiceprint()

        def save() -> None:
            if self.store.active_consent(session.customer_id) is None:
                raise ConsentRequired(f"consent of {session.customer_id} was withdrawn during enrollment")
            for audio, rate, emb, fp in session.accepted_takes():
                self.store.add_enrollment_take(session.customer_id, session.model, audio, rate, emb, fp, now)
            self.store.save_voiceprint(vp, actor=actor, now=now)
            if session.watchlist_hits:
                self.store.audit(actor, "enrollment_flagged", session.customer_id, now,
                                 flags=sorted(session.flags), watchlist=session.watchlist_hits)

        await self._io(save)
        return vp

    async def enroll_recordings(self, customer_id: str, recordings: list[tuple[np.ndarray, int]], *, actor: str,
                                now: float) -> tuple[Voiceprint, EnrollmentSession]:
        """Upload path (admin API/CLI): every recording is a take; poor ones are skipped."""
        session = await self.start_enrollment(customer_id)
        for audio, rate in recordings:
            if session.complete:
                break
            await self.add_take(session, audio, rate)
        return await self.finish_enrollment(session, actor=actor, now=now), session
