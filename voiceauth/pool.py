"""Embedding off the event loop in worker threads: a bounded queue, batching of waiting requests.

The in-process option (``voice.pool: thread``). The server's default is
:class:`voiceauth.procpool.ProcessEncoderPool`: the numpy pre-processing and parts of torch hold the
GIL long enough to make the RTP pacer late, whatever the thread's nice value. Threads remain for
tests and tools that need an in-process encoder (one that cannot be pickled, a gated test double).
"""

from __future__ import annotations

import asyncio
import os
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .analysis import Analysis, AnalysisRequest, EmbedWhen, analyse_batch, pack_audio
from .encoders import SpeakerEncoder
from .errors import EncoderLoadError, Overloaded, VoiceAuthError
from .quality import QualityPolicy

log = logging.getLogger(__name__)

__all__ = ["EmbeddingPool", "EncoderPool", "create_pool"]


class EmbeddingPool(Protocol):
    """What :class:`voiceauth.service.VoiceAuthService` needs from a pool (thread or process)."""

    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def sample_rate(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def embed(self, audio: np.ndarray, rate: int) -> np.ndarray: ...

    async def analyse(self, audio: np.ndarray, rate: int, quality: QualityPolicy | None = None,
                      embed_when: EmbedWhen = EmbedWhen.ALWAYS) -> Analysis: ...

_STOP = object()


@dataclass(slots=True)
class _Job:
    request: AnalysisRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class EncoderPool:
    """``await pool.embed(audio, rate)``; raises :class:`Overloaded` instead of queueing without bound."""

    def __init__(self, encoder_factory: Callable[[], SpeakerEncoder], workers: int = 1, max_queue: int = 32,
                 max_batch: int = 8, torch_threads: int = 1) -> None:
        if workers < 1 or max_queue < 1 or max_batch < 1:
            raise ValueError("workers, max_queue and max_batch must be >= 1")
        self._factory = encoder_factory
        self._workers = workers
        self._max_batch = max_batch
        self._torch_threads = torch_threads
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._threads: list[threading.Thread] = []
        self._encoder: SpeakerEncoder | None = None
        self._closed = False
        self.batches_run = 0
        self.largest_batch = 0

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load one encoder per worker (in the worker thread) and wait until all are ready."""
        if self._threads:
            return
        loop = asyncio.get_running_loop()
        ready = [loop.create_future() for _ in range(self._workers)]
        for i, fut in enumerate(ready):
            t = threading.Thread(target=self._run, args=(loop, fut), name=f"voiceauth-embed-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        try:
            encoders = await asyncio.gather(*ready)
        except BaseException:
            await self.close()
            raise
        self._encoder = encoders[0]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)  # blocks only if full; workers are draining it
        loop = asyncio.get_running_loop()
        for t in self._threads:
            await loop.run_in_executor(None, t.join)

    async def __aenter__(self) -> "EncoderPool":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- model facts ----------------------------------------------------------------------
    def _ready(self) -> SpeakerEncoder:
        if self._encoder is None:
            raise VoiceAuthError("EncoderPool not started: use 'async with EncoderPool(...)' or await start()")
        return self._encoder

    @property
    def model_name(self) -> str:
        return self._ready().name

    @property
    def dimension(self) -> int:
        return self._ready().dimension

    @property
    def sample_rate(self) -> int:
        return self._ready().sample_rate

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # -- work -----------------------------------------------------------------------------
    async def embed(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """Embed mono audio at ``rate`` (resampled once in the worker)."""
        return (await self.analyse(audio, rate)).embedding

    async def analyse(self, audio: np.ndarray, rate: int, quality: QualityPolicy | None = None,
                      embed_when: EmbedWhen = EmbedWhen.ALWAYS) -> Analysis:
        """Quality report, fingerprint and (when ``embed_when`` allows) the embedding, all in the worker."""
        self._ready()
        if self._closed:
            raise VoiceAuthError("EncoderPool is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        job = _Job(AnalysisRequest(pack_audio(audio, rate), quality, EmbedWhen(embed_when)), loop, fut)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"embedding queue full ({self._queue.maxsize} waiting); "
                             "take the IVR fallback branch or add workers") from None
        return await fut

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future) -> None:
        _lower_priority()
        try:
            if self._torch_threads:
                import torch

                torch.set_num_threads(self._torch_threads)
            encoder = self._factory()
        except BaseException as exc:  # surfaced by start()
            err = exc if isinstance(exc, VoiceAuthError) else EncoderLoadError(f"encoder factory failed: {exc!r}")
            loop.call_soon_threadsafe(_settle, ready, None, err)
            return
        loop.call_soon_threadsafe(_settle, ready, encoder, None)
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            jobs = [job]
            while len(jobs) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._queue.put(_STOP)
                    break
                jobs.append(nxt)
            self._process(encoder, jobs)

    def _process(self, encoder: SpeakerEncoder, jobs: list[_Job]) -> None:
        live = [j for j in jobs if not j.future.cancelled()]
        if not live:
            return
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(live))
        try:
            outcomes = analyse_batch(encoder, [j.request for j in live])
        except Exception as exc:  # a bug, not bad audio: fail the batch, keep the worker
            log.exception("embedding batch failed")
            outcomes = [exc] * len(live)
        for j, o in zip(live, outcomes):
            if isinstance(o, Exception):
                j.loop.call_soon_threadsafe(_settle, j.future, None, o)
            else:
                j.loop.call_soon_threadsafe(_settle, j.future, o, None)


def _settle(fut: asyncio.Future, value, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


def _lower_priority(niceness: int = 10) -> None:
    """Make this worker thread yield the CPU to the event loop (RTP pacing) when both want it: Linux schedules
    threads individually, so a nice value on the thread's own id leaves the rest of the process untouched."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: embeddings just compete as equals


def create_pool(model: str, model_kwargs: dict | None = None, *, mode: str = "process", workers: int = 1,
                max_queue: int = 32, max_batch: int = 8, **kw) -> EmbeddingPool:
    """The pool the server configures (``voice.pool`` in server.yaml): worker processes by default,
    worker threads with ``mode="thread"``. Not started: ``await pool.start()``."""
    from .procpool import EncoderSpec, ProcessEncoderPool

    spec = EncoderSpec(model, dict(model_kwargs or {}))
    if mode == "process":
        return ProcessEncoderPool(spec, workers=workers, max_queue=max_queue, max_batch=max_batch, **kw)
    if mode == "thread":
        return EncoderPool(spec, workers=workers, max_queue=max_queue, max_batch=max_batch, **kw)
    raise ValueError(f"unknown voice pool mode {mode!r}; use 'process' or 'thread'")
