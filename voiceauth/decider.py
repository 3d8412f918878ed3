"""``ProcessDecider``: verification decisions in a process of their own.

A decision reads the voiceprint and the recent attempts, decrypts them, scans for replays and the watchlist, and
records the attempt: a few milliseconds of SQLAlchemy and Python per verification. On a thread of the server
process that work competes with the event loop for the GIL, and under tens of verifications per second RTP sends
were late by several ms (``bench/voice_under_load.py``). Here it runs in one spawned process with its own store
(same database URL, same keys); the server process only sends the embedding and receives the result.

``Verifier`` methods are called by name (``precheck``, ``not_enough_speech``, ``decide``); arguments and results
are plain dataclasses and numpy arrays. A process that dies fails the call in flight with ``VoiceAuthError``
(the IVR takes its error branch) and is started again for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .crypto import KeyRing
from .errors import VoiceAuthError
from .verification import Verifier, VerifierPolicy

log = logging.getLogger(__name__)

_verifier: Verifier | None = None

_DECISIONS = frozenset({"precheck", "not_enough_speech", "decide"})


def _init(url: str, keys: tuple[bytes, ...], model: str, policy: VerifierPolicy, actor: str,
          cpus: tuple[int, ...] | None) -> None:
    from .procpool import _exit_with_parent
    from .store import SqlVoiceprintStore

    global _verifier
    _exit_with_parent()
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, cpus)
    _verifier = Verifier(SqlVoiceprintStore(url, KeyRing(list(keys)), create=False), model, policy, actor)


def _call(method: str, args: tuple, kw: dict) -> Any:
    assert _verifier is not None, "decider process not initialised"
    return getattr(_verifier, method)(*args, **kw)


def _pid() -> int:
    return os.getpid()


def can_run_apart(url: str) -> bool:
    """An in-memory SQLite database exists only inside the server process: decisions must stay there."""
    return url not in ("sqlite://", "sqlite:///:memory:") and ":memory:" not in url


class ProcessDecider:
    """``ProcessDecider(url, keyring, model, policy, cpus=None)``; ``await start()``, ``await call("decide",
    ...)``, ``await close()``."""

    def __init__(self, url: str, keyring: KeyRing, model: str, policy: VerifierPolicy, *, actor: str = "ivr",
                 cpus: tuple[int, ...] | None = None) -> None:
        if not can_run_apart(url):
            raise ValueError("an in-memory database cannot be shared with the decision process")
        self._args = (url, keyring.material(), model, policy, actor, cpus)
        self._executor: ProcessPoolExecutor | None = None
        self.restarts = 0
        self.pid: int | None = None

    async def start(self) -> None:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init, initargs=self._args)
            self.pid = await asyncio.wrap_future(self._executor.submit(_pid))

    async def call(self, method: str, *args: Any, **kw: Any) -> Any:
        if method not in _DECISIONS:
            raise ValueError(f"{method!r} is not a verification decision")
        if self._executor is None:
            await self.start()
        assert self._executor is not None
        try:
            return await asyncio.wrap_future(self._executor.submit(_call, method, args, kw))
        except BrokenProcessPool:
            log.error("voice decision process died; starting a new one")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            self.restarts += 1
            raise VoiceAuthError("the voice decision process stopped; try the verification again") from None

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, lambda: executor.shutdown(wait=True))
