"""The IVR's voice nodes through ContactCentreServices: BUSY on a full queue, enrollment takes and early end."""

import asyncio
from dataclasses import dataclass, field

import pytest

pytestmark = pytest.mark.timeout(120)

from ivr.flow import actions as A
from ivr.services import ContactCentreServices
from tests.voiceauth.conftest import ENROLL, TEST, phone
from tests.voiceauth.test_pool import GatedEncoder
from voiceauth.enrollment import EnrollmentPolicy
from voiceauth.pool import EncoderPool
from voiceauth.service import VoiceAuthService
from voiceauth.verification import VerifierPolicy


@dataclass
class PhoneCall:
    """The caller's side of ``ivr.calls.Call`` that the voice nodes use: an id, a number, a recording."""

    id: str
    audio: object
    ani: str = "+393331234567"
    variables: dict = field(default_factory=dict)

    async def record(self, max_seconds, silence_end_seconds=1.5, start_timeout=5.0):
        return self.audio


async def test_busy_voice_pool_takes_the_error_branch_with_a_busy_flag(encoder, store):
    gated = GatedEncoder(encoder)
    gated.gate.set()
    pool = EncoderPool(lambda: gated, workers=1, max_queue=1)
    await pool.start()
    try:
        svc = VoiceAuthService(pool, store, VerifierPolicy(threshold=0.8))
        store.record_consent("7", channel="test", actor="t", now=1000.0)
        await svc.enroll_recordings("7", [(phone("ls-367", n), 8000) for n in ENROLL["ls-367"]], actor="t",
                                    now=1001.0)
        services = ContactCentreServices(crm=None, voice=svc)
        gated.gate.clear()
        probe = phone("ls-367", TEST["ls-367"][0])
        held = [asyncio.create_task(pool.embed(probe, 8000))]  # taken by the worker, which waits at the gate
        await asyncio.sleep(0.05)
        while pool.queued:
            await asyncio.sleep(0.01)
        held.append(asyncio.create_task(pool.embed(probe, 8000)))  # fills the queue (max_queue=1)
        while pool.queued < 1:
            await asyncio.sleep(0.01)
        call = PhoneCall("call-1", probe)
        verify = await services.verify_voice(call, A.VerifyVoice(customer_id="7"))
        enroll = await services.enroll_voice(PhoneCall("call-2", probe), A.EnrollVoice(customer_id="7"))
        gated.gate.set()
        await asyncio.gather(*held)
    finally:
        gated.gate.set()
        await pool.close()
    assert (verify.decision, verify.flags) == ("error", ("BUSY",))
    assert call.variables["voice"] is verify
    assert (enroll.decision, enroll.flags) == ("error", ("BUSY",))


async def _enroll_by_phone(encoder, store, policy, takes_audio, takes: int):
    pool = EncoderPool(lambda: encoder, workers=1)
    await pool.start()
    try:
        svc = VoiceAuthService(pool, store, VerifierPolicy(threshold=0.8), enrollment_policy=policy)
        store.record_consent("9", channel="test", actor="t", now=1000.0)
        services = ContactCentreServices(crm=None, voice=svc)
        call = PhoneCall("call-e", None)
        out = []
        for n, audio in enumerate(takes_audio, 1):
            call.audio = audio
            out.append(await services.enroll_voice(call, A.EnrollVoice(customer_id="9", take=n, takes=takes)))
            if "ENROLLED" in out[-1].flags:
                break
        return out, store.get_voiceprint("9", "resemblyzer")
    finally:
        await pool.close()


async def test_phone_enrollment_takes_the_nodes_count_of_takes(encoder, store):
    audio = [phone("ls-2414", n) for n in ENROLL["ls-2414"]]
    out, vp = await _enroll_by_phone(encoder, store, EnrollmentPolicy(), audio[:2], takes=2)
    assert [(r.decision, "ENROLLED" in r.flags) for r in out] == [("accept", False), ("accept", True)]
    assert vp is not None and vp.count == 2


async def test_phone_enrollment_ends_early_on_enough_net_speech(encoder, store):
    audio = [phone("ls-2414", n) for n in ENROLL["ls-2414"]]
    policy = EnrollmentPolicy(net_speech_target_s=2.0)
    out, vp = await _enroll_by_phone(encoder, store, policy, audio, takes=3)
    assert len(out) == 1 and out[0].decision == "accept" and "ENROLLED" in out[0].flags
    assert vp is not None and vp.count == 1


async def test_a_duplicate_take_is_refused_and_asked_again(encoder, store):
    same = phone("ls-2414", ENROLL["ls-2414"][0])
    out, vp = await _enroll_by_phone(encoder, store, EnrollmentPolicy(), [same, same], takes=2)
    assert [r.decision for r in out] == ["accept", "not_enough_speech"]
    assert out[1].flags == ("DUPLICATE_TAKE",) and vp is None
