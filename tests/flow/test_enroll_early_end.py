"""enroll_voice ends as soon as the service says the voiceprint is made (enough net speech before all takes)."""

from ivr.flow import CallerLookedUp, EnrollVoice, Finished, Hangup, IvrExit, PlayFinished, VoiceResult
from tests.flow.test_nodes import cfg_with
from tests.flow.helpers import Driver

NODES = """
a: {kind: identify, on_found: e, on_not_found: fail, on_failed: fail}
e: {kind: enroll_voice, prompt: "Dica la frase", takes: 3, branches: {accept: ok}, fallback: fail}
ok: {kind: hangup, reason: enrolled}
fail: {kind: hangup, reason: failed}
"""


def test_enrolled_flag_ends_the_node_before_the_last_take(tmp_path):
    d = Driver(cfg_with(tmp_path, NODES))
    d.send(CallerLookedUp({"id": 7, "name": "Ugo"}))
    d.send(PlayFinished())
    assert d.action == EnrollVoice("7", 1, 3)
    d.send(VoiceResult("accept", flags=("ENROLLED",)))
    assert d.last == [Hangup("enrolled"), Finished(IvrExit.HUNG_UP, "enrolled")]
    assert d.run.context.variables["voice_enrolled"] is True


def test_plain_accept_asks_for_the_next_take(tmp_path):
    d = Driver(cfg_with(tmp_path, NODES))
    d.send(CallerLookedUp({"id": 7}))
    d.send(PlayFinished())
    d.send(VoiceResult("accept"))
    d.send(PlayFinished())
    assert d.action == EnrollVoice("7", 2, 3)
