"""Embedding in worker processes, so a slow model never delays RTP.

In a thread, the numpy pre-processing (resampling, VAD, mel spectrogram) and parts of torch hold the GIL
for milliseconds at a time and the event loop, which paces RTP every 20 ms for hundreds of calls, waits for
it: the lateness p99 of RTP sends grew several-fold during verifications. Here each worker is a separate
process (``spawn``: no forked copy of the loop, sockets or threads), loads its encoder once, runs torch on one
thread at a lowered priority, and does every heavy step of a request (:func:`voiceauth.analysis.analyse_batch`).
The loop only ships PCM16 bytes and gets back the embedding and the quality measures, through
``concurrent.futures`` futures whose results are set from the executor's own threads.

Requests wait in a bounded queue on the loop's side; whenever a worker is free it gets every waiting request
(up to ``max_batch``) as one batch. A full queue raises :class:`Overloaded` at once. A worker that dies fails
the requests in flight with :class:`WorkerCrashed` and the pool is rebuilt; :meth:`close` terminates the
workers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .analysis import Analysis, AnalysisRequest, EmbedWhen, analyse_batch, pack_audio
from .encoders import SpeakerEncoder, create_encoder
from .errors import EncoderLoadError, Overloaded, VoiceAuthError, WorkerCrashed
from .quality import QualityPolicy

log = logging.getLogger(__name__)

__all__ = ["EncoderSpec", "ProcessEncoderPool"]


@dataclass(frozen=True)
class EncoderSpec:
    """A picklable encoder factory: the model's registered name and its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> SpeakerEncoder:
        return create_encoder(self.name, **self.kwargs)


def check_cpus(cpus: tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    """The CPUs the workers may run on, all of them available to this process; None leaves the scheduler free."""
    if not cpus:
        return None
    wanted = tuple(sorted(set(int(c) for c in cpus)))
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ValueError(f"voice worker CPUs {missing} are not available to this process (available: "
                         f"{sorted(available)}); fix voice.cpus")
    return wanted


# --- worker side (module globals live in each worker process) -------------------------------------------------
_encoder: SpeakerEncoder | None = None
_load_error: BaseException | None = None


def _init_worker(factory: Callable[[], SpeakerEncoder], torch_threads: int, niceness: int,
                 cpus: tuple[int, ...] | None = None) -> None:
    """Runs once per worker process: its own CPUs when configured, lower priority, one torch thread, load the
    model (or remember why not)."""
    global _encoder, _load_error
    _exit_with_parent()
    if cpus:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setaffinity(0, cpus)
    try:
        if niceness:
            os.nice(niceness)
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # optional: only BLAS thread counts
        pass
    try:
        import torch

        torch.set_num_threads(torch_threads)
        _encoder = factory()
    except BaseException as exc:  # reported by _describe / _work with its message
        _load_error = exc if isinstance(exc, VoiceAuthError) else EncoderLoadError(
            f"the speaker model could not be loaded in the worker process: {type(exc).__name__}: {exc}")


def _exit_with_parent() -> None:
    """A server killed with -9 cannot terminate its workers; they notice its death and leave by themselves
    (they hold both ends of the task queue's pipe, so they would otherwise wait on it forever)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="voiceauth-parent-watch", daemon=True).start()


def _ready_encoder() -> SpeakerEncoder:
    if _encoder is None:
        raise _load_error or EncoderLoadError("worker process has no encoder")
    return _encoder


def _describe() -> tuple[str, int, int, int]:
    enc = _ready_encoder()
    return enc.name, int(enc.dimension), int(enc.sample_rate), os.getpid()


def _work(requests: list[AnalysisRequest]) -> list[Analysis | Exception]:
    return analyse_batch(_ready_encoder(), requests)


# --- loop side --------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Pending:
    request: AnalysisRequest
    future: asyncio.Future


class ProcessEncoderPool:
    """``await pool.analyse(audio, rate, quality, embed_when)`` / ``await pool.embed(audio, rate)``.

    ``encoder_factory`` must be picklable (an :class:`EncoderSpec`, or a module-level function): it is called
    in each worker. ``request_timeout`` bounds one batch; a worker stuck longer is killed like a dead one.
    """

    def __init__(self, encoder_factory: Callable[[], SpeakerEncoder], workers: int = 1, max_queue: int = 32,
                 max_batch: int = 8, torch_threads: int = 1, niceness: int = 10, request_timeout: float = 60.0,
                 mp_context: str = "spawn", start_timeout: float = 180.0,
                 cpus: tuple[int, ...] | None = None) -> None:
        if workers < 1 or max_queue < 1 or max_batch < 1:
            raise ValueError("workers, max_queue and max_batch must be >= 1")
        self._cpus = check_cpus(cpus)
        if mp_context not in ("spawn", "forkserver"):
            raise ValueError("mp_context must be 'spawn' or 'forkserver' (fork would copy the server's loop)")
        self._factory = encoder_factory
        self._workers = workers
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._torch_threads = torch_threads
        self._niceness = niceness
        self._timeout = request_timeout
        self._start_timeout = start_timeout
        self._ctx = multiprocessing.get_context(mp_context)
        self._executor: ProcessPoolExecutor | None = None
        self._pending: collections.deque[_Pending] = collections.deque()
        self._inflight: set[asyncio.Future] = set()
        self._facts: tuple[str, int, int] | None = None
        self._pids: set[int] = set()
        self._restarting: asyncio.Task | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches_run = 0
        self.largest_batch = 0
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the workers and wait until each has loaded its model; a model that fails to load raises here."""
        if self._executor is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            await self._spawn()
        except BaseException:
            await self.close()
            raise

    async def _spawn(self) -> None:
        executor = ProcessPoolExecutor(self._workers, mp_context=self._ctx, initializer=_init_worker,
                                       initargs=(self._factory, self._torch_threads, self._niceness, self._cpus))
        self._executor = executor
        # one describe per worker at once: the executor spawns a process for each, and each loads its model
        futs = [asyncio.wrap_future(executor.submit(_describe)) for _ in range(self._workers)]
        try:
            facts = await asyncio.wait_for(asyncio.gather(*futs), self._start_timeout)
        except BrokenProcessPool as exc:
            raise EncoderLoadError(f"a voice worker process died while loading the model ({exc}); "
                                   "check memory and the model files") from None
        except asyncio.TimeoutError:
            raise EncoderLoadError(f"voice worker processes did not load the model within "
                                   f"{self._start_timeout:.0f} s") from None
        names = {f[:3] for f in facts}
        if len(names) != 1:
            raise EncoderLoadError(f"voice workers loaded different models: {sorted(names)}")
        self._facts = facts[0][:3]
        self._pids = set(self.worker_pids())
        log.info("voice worker processes ready: model %s, pids %s", self._facts[0], sorted(self._pids))

    async def close(self) -> None:
        """Fail what waits, terminate the workers and reap them (no child process outlives the pool)."""
        if self._closed:
            return
        self._closed = True
        if self._restarting is not None:
            self._restarting.cancel()
        self._fail_pending(VoiceAuthError("voice worker pool is closed"))
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, _terminate, executor)
        self._pids.clear()

    async def __aenter__(self) -> "ProcessEncoderPool":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- facts -------------------------------------------------------------------------------------------------
    def _ready(self) -> tuple[str, int, int]:
        if self._facts is None:
            raise VoiceAuthError("ProcessEncoderPool not started: use 'async with' or await start()")
        return self._facts

    @property
    def model_name(self) -> str:
        return self._ready()[0]

    @property
    def dimension(self) -> int:
        return self._ready()[1]

    @property
    def sample_rate(self) -> int:
        return self._ready()[2]

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def worker_pids(self) -> list[int]:
        """Live worker process ids (for monitoring, and for tests that stop or kill one)."""
        ex = self._executor
        procs = getattr(ex, "_processes", None) or {}
        return sorted(p.pid for p in list(procs.values()) if p.pid is not None and p.is_alive())

    # -- work --------------------------------------------------------------------------------------------------
    async def embed(self, audio: np.ndarray, rate: int) -> np.ndarray:
        return (await self.analyse(audio, rate)).embedding

    async def analyse(self, audio: np.ndarray, rate: int, quality: QualityPolicy | None = None,
                      embed_when: EmbedWhen = EmbedWhen.ALWAYS) -> Analysis:
        """Quality report, fingerprint and embedding of one utterance, computed in a worker process."""
        self._ready()
        if self._closed:
            raise VoiceAuthError("voice worker pool is closed")
        if len(self._pending) >= self._max_queue:
            raise Overloaded(f"embedding queue full ({self._max_queue} waiting); take the IVR fallback branch "
                             "or add voice workers")
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(AnalysisRequest(pack_audio(audio, rate), quality, EmbedWhen(embed_when)), fut))
        self._pump()
        return await fut

    def _pump(self) -> None:
        """Hand every waiting request to free workers, one batch per free worker."""
        while self._pending and len(self._inflight) < self._workers and self._executor is not None \
                and self._restarting is None and not self._closed:
            batch: list[_Pending] = []
            while self._pending and len(batch) < self._max_batch:
                p = self._pending.popleft()
                if not p.future.done():  # the caller may have given up (hung up)
                    batch.append(p)
            if not batch:
                return
            try:
                cf = self._executor.submit(_work, [p.request for p in batch])
            except (BrokenProcessPool, RuntimeError):
                # a worker died while idle: nothing of this batch ran, so it waits for the new workers
                self._pending.extendleft(reversed(batch))
                log.error("a voice worker process died while idle; restarting the pool")
                self._restart()
                return
            self.batches_run += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            done = asyncio.wrap_future(cf)
            self._inflight.add(done)
            timer = self._loop.call_later(self._timeout, self._on_timeout, done, cf) if self._timeout else None
            done.add_done_callback(lambda f, b=batch, t=timer: self._on_batch_done(f, b, t))

    def _on_batch_done(self, done: asyncio.Future, batch: list[_Pending], timer) -> None:
        self._inflight.discard(done)
        if timer is not None:
            timer.cancel()
        if done.cancelled():
            self._settle_batch(batch, WorkerCrashed("voice worker stopped answering and was killed; "
                                                    "the request was not processed"))
        elif (exc := done.exception()) is not None:
            if isinstance(exc, BrokenProcessPool):
                log.error("a voice worker process died; %d request(s) failed, restarting the pool", len(batch))
                self._settle_batch(batch, WorkerCrashed("the voice worker process died while handling this "
                                                        "request; take the fallback branch"))
                self._restart()
            else:
                err = exc if isinstance(exc, VoiceAuthError) else VoiceAuthError(
                    f"voice worker failed: {type(exc).__name__}: {exc}")
                self._settle_batch(batch, err)
        else:
            for p, outcome in zip(batch, done.result()):
                if p.future.done():
                    continue
                if isinstance(outcome, Exception):
                    p.future.set_exception(outcome)
                else:
                    p.future.set_result(outcome)
        self._pump()

    def _on_timeout(self, done: asyncio.Future, cf: Future) -> None:
        if done.done():
            return
        log.error("a voice worker batch ran past %.0f s: killing the workers", self._timeout)
        done.cancel()
        self._restart()

    @staticmethod
    def _settle_batch(batch: list[_Pending], exc: BaseException) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)

    def _fail_pending(self, exc: BaseException) -> None:
        while self._pending:
            p = self._pending.popleft()
            if not p.future.done():
                p.future.set_exception(exc)

    # -- recovery ----------------------------------------------------------------------------------------------
    def _restart(self) -> None:
        if self._closed or self._restarting is not None:
            return
        self._restarting = self._loop.create_task(self._rebuild())

    async def _rebuild(self) -> None:
        old, self._executor = self._executor, None
        for f in list(self._inflight):  # the whole executor is gone: nothing in flight will answer
            f.cancel()
        loop = asyncio.get_running_loop()
        if old is not None:
            await loop.run_in_executor(None, _terminate, old)
        delay = 0.5
        while not self._closed:
            try:
                await self._spawn()
                self.restarts += 1
                break
            except EncoderLoadError as exc:
                log.error("voice workers could not be restarted: %s (retrying in %.0f s)", exc, delay)
                self._fail_pending(WorkerCrashed(f"voice workers are restarting and failed: {exc}"))
                ex, self._executor = self._executor, None
                if ex is not None:
                    await loop.run_in_executor(None, _terminate, ex)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._restarting = None
        self._pump()


def _terminate(executor: ProcessPoolExecutor, grace: float = 2.0) -> None:
    """Stop a pool now, running batches included, and reap every worker (blocking: run in a thread)."""
    procs = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
