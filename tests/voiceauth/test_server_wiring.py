"""server.yaml's voice section: the pool it builds, and a model that cannot load in the worker."""

import pytest

from ivr.app import _build_voice
from ivr.config import ServerConfig, VoiceConfig
from ivr.errors import IvrError
from voiceauth.pool import EncoderPool
from voiceauth.procpool import ProcessEncoderPool

pytestmark = pytest.mark.timeout(240)


def _cfg(tmp_path, **voice) -> ServerConfig:
    return ServerConfig(voice=VoiceConfig(key_file=str(tmp_path / "voice.key"), **voice))


def test_defaults_are_worker_processes():
    v = VoiceConfig()
    assert (v.pool, v.workers, v.max_queue, v.required) == ("process", 1, 32, True)
    with pytest.raises(ValueError):
        VoiceConfig(pool="fork")


@pytest.mark.parametrize("mode, kind", [("process", ProcessEncoderPool), ("thread", EncoderPool)])
async def test_voice_section_builds_the_configured_pool(tmp_path, mode, kind):
    svc = await _build_voice(_cfg(tmp_path, pool=mode, max_queue=4), f"sqlite:///{tmp_path / 'v.db'}")
    try:
        assert isinstance(svc.pool, kind) and svc.pool.model_name == "resemblyzer"
        # decisions in their own process with worker processes and a database file
        assert (svc.decider is not None) == (mode == "process")
    finally:
        await svc.close()


async def test_in_memory_database_keeps_decisions_in_the_server(tmp_path):
    svc = await _build_voice(_cfg(tmp_path, pool="process"), "sqlite://")
    try:
        assert svc.decider is None
    finally:
        await svc.close()


async def test_model_that_cannot_load_stops_the_start_up_with_its_reason(tmp_path):
    cfg = _cfg(tmp_path, model="ecapa", model_dir=str(tmp_path / "no-such-model"))
    with pytest.raises(IvrError, match="no-such-model.*voice.required: false"):
        await _build_voice(cfg, "sqlite://")
    cfg = _cfg(tmp_path, model="ecapa", model_dir=str(tmp_path / "no-such-model"), required=False)
    assert await _build_voice(cfg, "sqlite://") is None


async def test_verifier_policy_comes_from_the_voice_section(tmp_path):
    from voiceauth.calibration import threshold_for

    cfg = _cfg(tmp_path, pool="thread", max_failures_per_day=2, refresh_weight=0.05, refresh_margin=0.12)
    svc = await _build_voice(cfg, f"sqlite:///{tmp_path / 'v.db'}")
    try:
        p = svc.policy
        assert (p.max_failures_per_day, p.refresh_weight, p.refresh_margin) == (2, 0.05, 0.12)
        assert p.threshold == threshold_for("resemblyzer", "ulaw", 3.0)
    finally:
        await svc.pool.close()
    with pytest.raises(IvrError, match="calibration"):
        await _build_voice(_cfg(tmp_path, pool="thread", calibration_codec="alaw"), "sqlite://")
