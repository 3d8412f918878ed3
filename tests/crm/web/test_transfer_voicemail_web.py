"""The desktop's transfer endpoints and the supervisors' voicemail endpoints at the HTTP edge: who may call
them, input validation, the refusal mapping, and 503 without routing. The transfers themselves run end to end
in tests/e2e/test_transfers_sip.py; here the queue service is a recording stand-in."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ivr.media.audio import write_wav
from ivr.queueing import TransferRefused
from ivr.voicemail import Voicemail, VoicemailBox

from .conftest import ADMIN_TOKEN, Web


class RecordingTransfers:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def transfer_targets(self) -> dict:
        return {"queues": [{"name": "general"}], "agents": [{"id": "2001"}, {"id": "2002"}]}

    def call_of_agent(self, agent_id: str) -> str | None:
        return "c-1" if agent_id == "2001" else None

    async def transfer(self, call_id, agent_id, **kw):
        self.calls.append(("transfer", call_id, agent_id, kw))
        if kw.get("to_queue") == "full":
            raise TransferRefused(409, "nobody free", 480)
        return {"call_id": "c-1", "mode": "blind", **kw}

    async def consult(self, call_id, agent_id, **kw):
        self.calls.append(("consult", call_id, agent_id, kw))
        return {"call_id": "c-1", "mode": "consult", "state": "ringing"}

    def transfer_to_survey(self, call_id, agent_id):
        self.calls.append(("survey", call_id, agent_id))
        if call_id == "c-9":
            raise TransferRefused(404, "agent 2001 has no call in conversation with id c-9", 481)
        return {"call_id": "c-1", "mode": "survey"}

    async def consult_complete(self, call_id, agent_id):
        raise TransferRefused(409, "there is no consultation to complete")

    async def consult_cancel(self, call_id, agent_id):
        self.calls.append(("cancel", call_id, agent_id))
        return {"call_id": "c-1", "state": "cancelled"}


async def test_transfer_needs_an_agent_session_and_routing(web: Web) -> None:
    resp = await web.client.post("/desktop/transfer", json={"to_queue": "general"}, headers=web.headers())
    assert resp.status == 401
    await web.login()
    resp = await web.client.post("/desktop/transfer", json={"to_queue": "general"}, headers=web.headers())
    assert resp.status == 503 and "routing" in (await resp.json())["error"]
    resp = await web.client.get("/desktop/transfer/targets", headers={"Accept": "application/json"})
    assert resp.status == 503


async def test_transfer_is_validated_scoped_to_the_session_agent_and_refusals_are_mapped(web: Web) -> None:
    service = RecordingTransfers()
    web.control.transfers = service
    await web.login()
    post = lambda path, body: web.client.post(path, json=body, headers=web.headers())  # noqa: E731
    for bad in ({"mode": "warp", "to_queue": "general"}, {"to_queue": "general", "to_agent": "2002"}, {},
                {"to_queue": "general", "note": "x" * 1001}, {"to_queue": ["general"]},
                {"to_queue": "general", "call_id": 7}):
        resp = await post("/desktop/transfer", bad)
        assert resp.status == 400, bad
    assert service.calls == []
    resp = await web.client.post("/desktop/transfer", data="not json", headers=web.headers())
    assert resp.status == 400
    resp = await post("/desktop/transfer", {"to_queue": "general", "note": "  card 4111 1111 1111 1111  ",
                                            "agent_id": "2002"})
    assert resp.status == 200
    (kind, call_id, agent_id, kw) = service.calls[-1]
    assert (kind, call_id, agent_id) == ("transfer", None, "2001")          # the session's agent, always
    assert kw["to_queue"] == "general" and "4111 1111 1111 1111" not in kw["note"]
    resp = await post("/desktop/transfer", {"mode": "consult", "to_agent": "2002", "call_id": "c-1"})
    assert resp.status == 200 and service.calls[-1][:3] == ("consult", "c-1", "2001")
    resp = await post("/desktop/transfer", {"to_queue": "full"})
    assert resp.status == 409 and (await resp.json())["error"] == "nobody free"
    resp = await post("/desktop/transfer/complete", {})
    assert resp.status == 409
    resp = await post("/desktop/transfer/cancel", {})
    assert resp.status == 200 and service.calls[-1] == ("cancel", None, "2001")
    targets = await (await web.client.get("/desktop/transfer/targets")).json()
    assert targets["current_call"] == "c-1" and [a["id"] for a in targets["agents"]] == ["2002"]
    resp = await post("/desktop/transfer", {"mode": "survey"})
    assert resp.status == 200 and service.calls[-1] == ("survey", None, "2001")
    resp = await post("/desktop/transfer", {"mode": "survey", "call_id": "c-9"})
    assert resp.status == 404 and "c-9" in (await resp.json())["error"]


def _leave(box: VoicemailBox, call_id: str, at: float) -> Voicemail:
    vm = Voicemail(id=f"{int(at * 1000):013d}-{call_id}", call_id=call_id, queue="online_banking",
                   mailbox="mailbox:online", ani="+393471000001", customer_id=None, seconds=1.0, at=at)
    box.root.mkdir(parents=True, exist_ok=True)
    write_wav(box.root / f"{vm.id}.wav", (np.sin(np.arange(8000) / 5) * 8000).astype(np.int16))
    (box.root / f"{vm.id}.json").write_text(json.dumps({k: getattr(vm, k) for k in vm.__slots__}))
    return vm


async def test_voicemail_list_and_audio_for_supervisors_only(web: Web, tmp_path: Path) -> None:
    admin = web.admin()
    resp = await web.client.get("/supervisor/voicemail.json", headers=admin)
    assert resp.status == 503                                  # no routing: no box
    box = VoicemailBox(tmp_path / "vm")
    web.control.voicemail = box
    assert (await (await web.client.get("/supervisor/voicemail.json", headers=admin)).json())["items"] == []
    old = _leave(box, "call-1", time.time() - 60)
    new = _leave(box, "call-2", time.time())
    items = (await (await web.client.get("/supervisor/voicemail.json", headers=admin)).json())["items"]
    assert [i["id"] for i in items] == [new.id, old.id]        # newest first
    wav = await web.client.get(items[0]["audio_url"], headers=admin)
    assert wav.status == 200 and await wav.read() == (box.root / f"{new.id}.wav").read_bytes()
    detail = await (await web.client.get(items[0]["record_url"], headers=admin)).json()
    assert detail["call_id"] == "call-2" and detail["call_record"] is None
    for bad in ("/supervisor/voicemail/nope.wav", "/supervisor/voicemail/..%2F..%2Fetc.wav",
                f"/supervisor/voicemail/{new.id[:-1]}9.wav"):
        assert (await web.client.get(bad, headers=admin)).status == 404, bad
    resp = await web.client.get("/supervisor/voicemail.json", headers={"Accept": "application/json"})
    assert resp.status == 401
    resp = await web.client.post("/login/token", data={"token": ADMIN_TOKEN}, headers=web.headers(),
                                 allow_redirects=False)
    assert resp.status in (302, 303)
    page = await (await web.client.get("/supervisor/voicemail")).text()
    assert page.count("<audio") == 2 and items[0]["audio_url"] in page and "+393471000001" in page
    web.client.session.cookie_jar.clear()
    await web.login()                                          # an agent, not a supervisor
    assert (await web.client.get("/supervisor/voicemail.json")).status == 403
    assert (await web.client.get(items[0]["audio_url"])).status == 403
