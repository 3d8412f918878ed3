"""A full embedding queue through the IVR's services: the error branch, flagged BUSY on the call."""

import asyncio
from dataclasses import dataclass, field

import pytest

pytestmark = pytest.mark.timeout(120)

from ivr.flow import actions as A
from ivr.services import ContactCentreServices
from tests.voiceauth.conftest import ENROLL, TEST, phone
from tests.voiceauth.test_pool import GatedEncoder
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
