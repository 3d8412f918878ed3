"""The process pool with the real bundled GE2E encoder in real spawned worker processes."""

import asyncio
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from tests.voiceauth.conftest import ENROLL, TEST, phone
from voiceauth.analysis import EmbedWhen
from voiceauth.channel import resample
from voiceauth.enrollment import EnrollmentPolicy, audio_fingerprint
from voiceauth.errors import EncoderLoadError, Overloaded, VoiceAuthError, WorkerCrashed
from voiceauth.pool import EncoderPool, create_pool
from voiceauth.procpool import EncoderSpec, ProcessEncoderPool
from voiceauth.quality import QualityPolicy, assess_quality
from voiceauth.service import VoiceAuthService
from voiceauth.store import SqlVoiceprintStore
from voiceauth.verification import Decision, Flag, VerifierPolicy

pytestmark = pytest.mark.timeout(240)

GE2E = EncoderSpec("resemblyzer")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_process_results_equal_in_process_results(encoder):
    long_take = phone("ls-2414", "2414-128291-0001")
    short = phone("ls-367", "367-130732-0000")[:4000]  # 0.5 s: too little speech, no embedding
    policy = QualityPolicy()
    async with ProcessEncoderPool(GE2E, workers=1) as pool:
        assert (pool.model_name, pool.dimension, pool.sample_rate) == ("resemblyzer", 256, 16000)
        pids = pool.worker_pids()
        assert len(pids) == 1 and pids[0] != os.getpid()
        full, brief, plain = await asyncio.gather(
            pool.analyse(long_take, 8000, policy, EmbedWhen.ENOUGH_SPEECH),
            pool.analyse(short, 8000, policy, EmbedWhen.ENOUGH_SPEECH),
            pool.embed(phone("ls-3005", "3005-163389-0004", "alaw"), 8000))
    expected = encoder.embed(resample(long_take, 8000, 16000))
    assert full.embedding.shape == (256,)
    assert float(np.max(np.abs(full.embedding - expected))) < 1e-4
    assert full.report == assess_quality(long_take, 8000, policy)
    assert full.fingerprint == audio_fingerprint(long_take)
    assert brief.embedding is None and brief.report.net_speech_s < policy.min_net_speech_s
    other = encoder.embed(resample(phone("ls-3005", "3005-163389-0004", "alaw"), 8000, 16000))
    assert float(np.max(np.abs(plain - other))) < 1e-4
    assert not any(_alive(p) for p in pids)


async def test_thread_and_process_modes_give_the_same_analysis():
    take = phone("ls-3005", "3005-163389-0001")
    q = EnrollmentPolicy().quality
    out = []
    for mode in ("process", "thread"):
        pool = create_pool("resemblyzer", mode=mode)
        await pool.start()
        try:
            out.append(await pool.analyse(take, 8000, q, EmbedWhen.QUALITY_OK))
        finally:
            await pool.close()
    assert isinstance(create_pool("resemblyzer", mode="thread"), EncoderPool)
    assert out[0].report == out[1].report and out[0].fingerprint == out[1].fingerprint
    assert float(np.max(np.abs(out[0].embedding - out[1].embedding))) < 1e-4
    with pytest.raises(ValueError, match="process' or 'thread"):
        create_pool("resemblyzer", mode="fork")


async def test_full_queue_is_busy_and_waiting_requests_run_as_one_batch(keyring, tmp_path):
    store = SqlVoiceprintStore(f"sqlite:///{tmp_path / 'voice.db'}", keyring)  # verifications run concurrently
    pool = ProcessEncoderPool(GE2E, workers=1, max_queue=3, max_batch=8)
    await pool.start()
    svc = VoiceAuthService(pool, store, VerifierPolicy.from_calibration("resemblyzer", "ulaw", 3))
    store.record_consent("c1", channel="test", actor="t", now=1000.0)
    await svc.enroll_recordings("c1", [(phone("ls-2414", n), 8000) for n in ENROLL["ls-2414"]], actor="t",
                                now=1001.0)
    (pid,) = pool.worker_pids()
    os.kill(pid, signal.SIGSTOP)  # a worker that does not answer: requests pile up
    try:
        probes = [phone("ls-2414", TEST["ls-2414"][0]), phone("ls-2414", TEST["ls-2414"][1]),
                  phone("ls-367", TEST["ls-367"][0]), phone("ls-3005", TEST["ls-3005"][0])]
        first = asyncio.create_task(svc.verify("c1", probes[0], 8000, call_id="a0", now=1002.0))
        await _wait_for(lambda: pool.in_flight == 1)
        waiting = [asyncio.create_task(svc.verify("c1", p, 8000, call_id=f"a{i}", now=1002.0))
                   for i, p in enumerate(probes[1:], 1)]
        await _wait_for(lambda: pool.queued == 3)
        busy = await svc.verify("c1", probes[0], 8000, call_id="busy", now=1002.0)
        assert busy.decision is Decision.ERROR and busy.flags == (Flag.BUSY,) and "queue full" in busy.detail
        with pytest.raises(Overloaded):
            await pool.embed(probes[0], 8000)
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        results = await asyncio.gather(first, *waiting)
    finally:
        await pool.close()
    assert [r.decision for r in results[:2]] == [Decision.ACCEPT, Decision.ACCEPT]
    assert [r.decision for r in results[2:]] == [Decision.REJECT, Decision.REJECT]
    assert pool.batches_run == 2 + 3 and pool.largest_batch == 3  # 3 enrollment takes, then [1] and [3]


async def test_killed_worker_fails_its_request_and_is_replaced(store):
    pool = ProcessEncoderPool(GE2E, workers=1)
    await pool.start()
    try:
        (old,) = pool.worker_pids()
        audio = phone("ls-2414", "2414-128291-0001")
        os.kill(old, signal.SIGSTOP)  # so the request is certainly in flight when the worker dies
        req = asyncio.create_task(pool.embed(audio, 8000))
        await _wait_for(lambda: pool.in_flight == 1)
        os.kill(old, signal.SIGKILL)
        with pytest.raises(WorkerCrashed, match="died"):
            await req
        emb = await pool.embed(audio, 8000)  # waits for the new worker, then succeeds
        assert emb.shape == (256,) and pool.restarts == 1
        (new,) = pool.worker_pids()
        assert new != old and not _alive(old)
        # the service turns a crash into ERROR (the IVR's fallback), never a hang
        svc = VoiceAuthService(pool, store, VerifierPolicy(threshold=0.8))
        store.record_consent("c2", channel="test", actor="t", now=1000.0)
        await svc.enroll_recordings("c2", [(phone("ls-367", n), 8000) for n in ENROLL["ls-367"]], actor="t",
                                    now=1001.0)
        os.kill(new, signal.SIGKILL)
        await _wait_for(lambda: not _alive(new) or pool.worker_pids() != [new])
        # died while idle: the next request waits for the replacement instead of failing
        ok = await svc.verify("c2", phone("ls-367", TEST["ls-367"][0]), 8000, call_id="after", now=1002.0)
        assert ok.decision is Decision.ACCEPT and pool.restarts == 2
    finally:
        await pool.close()


async def test_close_leaves_no_child_process_and_refuses_new_work():
    pool = ProcessEncoderPool(GE2E, workers=2)
    await pool.start()
    await pool.embed(phone("ls-367", "367-130732-0000"), 8000)
    pids = pool.worker_pids()
    assert 1 <= len(pids) <= 2
    await pool.close()
    assert not any(_alive(p) for p in pids)
    assert not [c for c in multiprocessing.active_children() if c.pid in pids]
    with pytest.raises(VoiceAuthError, match="closed"):
        await pool.embed(phone("ls-367", "367-130732-0000"), 8000)


async def test_model_that_cannot_load_in_the_worker_fails_start_clearly():
    pool = ProcessEncoderPool(EncoderSpec("ecapa", {"model_dir": "/nope/ecapa"}), workers=1)
    with pytest.raises(EncoderLoadError, match="/nope/ecapa"):
        await pool.start()
    assert pool.worker_pids() == []


def test_workers_leave_when_the_server_is_killed(tmp_path):
    """kill -9 of the server process: its worker processes exit by themselves instead of lingering."""
    import subprocess
    import sys

    script = tmp_path / "server.py"
    script.write_text(
        "import asyncio, sys, time\n"
        "from voiceauth.procpool import EncoderSpec, ProcessEncoderPool\n"
        "async def main():\n"
        "    pool = ProcessEncoderPool(EncoderSpec('resemblyzer'), workers=1)\n"
        "    await pool.start()\n"
        "    print(*pool.worker_pids(), flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": root})
    try:
        (worker,) = [int(x) for x in proc.stdout.readline().split()]
        assert _alive(worker)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


async def test_workers_run_on_the_configured_cpus_only():
    mine = os.sched_getaffinity(0)
    cpu = min(mine)
    async with ProcessEncoderPool(GE2E, workers=1, cpus=(cpu,)) as pool:
        (pid,) = pool.worker_pids()
        assert os.sched_getaffinity(pid) == {cpu}
    assert os.sched_getaffinity(0) == mine          # the pool pins its workers, never its parent
    with pytest.raises(ValueError, match="voice.cpus"):
        ProcessEncoderPool(GE2E, workers=1, cpus=(4096,))


async def test_store_thread_of_the_service_runs_on_the_voice_cpus(tmp_path):
    import threading

    from voiceauth.crypto import KeyRing, generate_key
    from voiceauth.service import VoiceAuthService
    from voiceauth.store import SqlVoiceprintStore
    from voiceauth.verification import VerifierPolicy

    cpu = min(os.sched_getaffinity(0))
    store = SqlVoiceprintStore(f"sqlite:///{tmp_path / 'v.db'}", KeyRing.from_base64(generate_key()))
    svc = VoiceAuthService(ProcessEncoderPool(GE2E, workers=1), store,
                           VerifierPolicy.from_calibration("resemblyzer", "ulaw", 3), db_cpus=(cpu,))
    try:
        where = await svc._io(lambda: os.sched_getaffinity(threading.get_native_id()))
        assert where == {cpu}
        assert await svc._io(store.get_voiceprint, "nobody", "resemblyzer") is None
    finally:
        await svc.close()
