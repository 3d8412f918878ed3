import asyncio
import threading

import numpy as np
import pytest

from tests.voiceauth.conftest import phone
from voiceauth.errors import EncoderLoadError, Overloaded
from voiceauth.pool import EncoderPool


class GatedEncoder:
    """A real encoder behind a gate, so the test controls when the worker may finish."""

    def __init__(self, inner):
        self.inner, self.gate = inner, threading.Event()
        self.name, self.dimension, self.sample_rate = inner.name, inner.dimension, inner.sample_rate
        self.batch_sizes = []

    def embed(self, audio):
        return self.embed_batch([audio])[0]

    def embed_batch(self, audios):
        self.gate.wait(30)
        self.batch_sizes.append(len(audios))
        return self.inner.embed_batch(audios)


async def test_loop_keeps_ticking_while_embedding(encoder):
    audio = phone("ls-2414", "2414-128291-0001")  # 8.4 s: many ms of CPU
    async with EncoderPool(lambda: encoder, workers=1) as pool:
        events = []

        async def ticker():
            while True:
                events.append("tick")
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        emb = await pool.embed(audio, 8000)
        events.append("done")
        t.cancel()
    assert emb.shape == (256,)
    assert events.count("tick") > 10 and events[-1] == "done"
    assert np.allclose(emb, encoder.embed(__import__("voiceauth.channel").channel.resample(audio, 8000, 16000)),
                       atol=1e-5)


async def test_full_queue_raises_overloaded_and_waiting_requests_are_batched(encoder):
    gated = GatedEncoder(encoder)
    audio = phone("ls-367", "367-130732-0000")
    pool = EncoderPool(lambda: gated, workers=1, max_queue=3, max_batch=8)
    await pool.start()
    try:
        first = asyncio.create_task(pool.embed(audio, 8000))
        await asyncio.sleep(0.05)
        while pool.queued:  # worker picked up the first job and waits at the gate
            await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(pool.embed(audio, 8000)) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue full"):
            await pool.embed(audio, 8000)
        gated.gate.set()
        results = await asyncio.gather(first, *waiting)
    finally:
        gated.gate.set()
        await pool.close()
    assert gated.batch_sizes == [1, 3]
    assert all(np.allclose(r, results[0], atol=1e-5) for r in results)


async def test_factory_failure_surfaces_at_start():
    def broken():
        raise EncoderLoadError("model directory /nope lacks hyperparams.yaml")

    with pytest.raises(EncoderLoadError, match="/nope"):
        async with EncoderPool(broken):
            pass


async def test_bad_audio_fails_only_its_request(encoder):
    async with EncoderPool(lambda: encoder) as pool:
        good = phone("ls-367", "367-130732-0000")
        r = await asyncio.gather(pool.embed(good, 8000), pool.embed(np.zeros(10, np.float32), 8000),
                                 return_exceptions=True)
    assert r[0].shape == (256,) and isinstance(r[1], Exception)
