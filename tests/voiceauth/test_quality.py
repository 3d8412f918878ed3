import numpy as np

from tests.voiceauth.conftest import phone
from voiceauth.quality import QualityIssue, QualityPolicy, assess_quality


def test_clear_phone_speech_passes():
    r = assess_quality(phone("ls-2414", "2414-128291-0001"), 8000)
    assert r.ok, r
    assert 5.0 < r.net_speech_s <= r.duration_s
    assert r.clipping_ratio < 0.001


def test_silence_and_short_takes_are_too_short():
    r = assess_quality(np.zeros(8000 * 3, np.float32), 8000)
    assert QualityIssue.TOO_SHORT in r.issues
    short = assess_quality(phone("ls-2414", "2414-128291-0001")[:8000], 8000)
    assert short.issues == (QualityIssue.TOO_SHORT,)
    assert short.reprompt_reason is QualityIssue.TOO_SHORT


def test_quiet_take_is_too_quiet():
    r = assess_quality(phone("ls-367", "367-130732-0004") * 0.003, 8000)
    assert QualityIssue.TOO_QUIET in r.issues
    assert r.reprompt_reason is QualityIssue.TOO_QUIET


def test_overdriven_take_is_clipped():
    loud = np.clip(phone("ls-3005", "3005-163389-0001") * 30, -1, 1)
    r = assess_quality(loud, 8000)
    assert QualityIssue.CLIPPED in r.issues
    assert r.clipping_ratio > 0.005


def test_odd_rates_are_resampled_for_vad():
    x = phone("ls-2414", "2414-128291-0001")
    from voiceauth.channel import resample

    r = assess_quality(resample(x, 8000, 22050), 22050, QualityPolicy(min_net_speech_s=1.0))
    assert r.ok
