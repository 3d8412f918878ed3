"""Any sequence of well-typed answers keeps the protocol: one awaited action per step, and the run ends."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.flow import (CallerHungUp, CallerLookedUp, CollectDigits, DigitsCollected, EnrollVoice, Finished,
                      LookupCaller, PinResult, Play, PlayFinished, VerifyPin, VerifyVoice, VoiceResult)
from tests.flow.helpers import MONDAY_10, Driver, demo_config

CFG = demo_config()
KEYS = st.sampled_from(list("0123456789*#"))
CUSTOMER = st.one_of(st.none(), st.fixed_dictionaries({
    "id": st.sampled_from(["C1", "C2"]), "name": st.sampled_from(["Mario Rossi", "Anna Smith", ""]),
    "segment": st.sampled_from(["retail", "critical", "private"]), "language": st.sampled_from(["it", "en", "fr"])}))


def answer(draw, action):
    if isinstance(action, Play):
        return PlayFinished(draw(st.one_of(st.none(), KEYS)) if action.barge_in else None)
    if isinstance(action, CollectDigits):
        digits = draw(st.text("0123456789*", max_size=action.max_digits))
        return DigitsCollected(digits, draw(st.sampled_from(["max", "terminator", "timeout", "closed"])))
    if isinstance(action, LookupCaller):
        return CallerLookedUp(draw(CUSTOMER))
    if isinstance(action, VerifyPin):
        ok = draw(st.booleans())
        return PinResult(ok, locked=not ok and draw(st.booleans()), customer=draw(CUSTOMER) if ok else None)
    if isinstance(action, (VerifyVoice, EnrollVoice)):
        return VoiceResult(draw(st.sampled_from(["accept", "reject", "not_enough_speech", "not_enrolled",
                                                 "locked_out", "error", "bogus"])), 0.3)
    raise AssertionError(action)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(["800100", "800200", "0212345600", "999"]),
       st.sampled_from(["+393331234567", None]), st.integers(0, 7 * 24 * 3600))
def test_random_answers_keep_protocol(data, dnis, ani, offset):
    d = Driver(CFG, ani=ani, dnis=dnis, now=MONDAY_10 + offset)
    for _ in range(200):
        if isinstance(d.last[-1], Finished):
            break
        if data.draw(st.integers(0, 60)) == 0:
            d.send(CallerHungUp())
            break
        d.send(answer(data.draw, d.action))        # Driver checks the one-awaited-action invariant
    else:
        return                                      # a caller may keep pressing invalid keys for a long time
    assert d.run.finished and d.run.trace.exit is not None
    assert d.run.trace.to_dict()["duration"] >= 0
    assert all(set(x.digits) <= set("0123456789*#") for x in d.run.trace.digits)
