"""Biometric data through the web layer: admin reads of a customer's voice data and agents' pops that show a
verification outcome are audited views; erasure through the admin API removes every copy (checked in the
tables themselves); agents reach neither those endpoints nor each other's calls and pops; every websocket
checks its Origin."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, text

from crm_bridge import models as m
from crm_bridge.crm import SqlCrmAdapter
from crm_bridge.web import ScreenPopHub, create_web_app
from ivr.app import _verification_view_auditor
from voiceauth.crypto import KeyRing, generate_key
from voiceauth.store import AttemptRecord, SqlVoiceprintStore
from voiceauth.voiceprint import Voiceprint

from .conftest import ADMIN_TOKEN, Web, make_deps

NOW = 1_760_000_000.0


@pytest.fixture
def voice_store(tmp_path):
    store = SqlVoiceprintStore(f"sqlite:///{tmp_path / 'voice.db'}", KeyRing.from_base64(generate_key()))
    yield store
    store.engine.dispose()


def _enroll(store: SqlVoiceprintStore, cid: str) -> Voiceprint:
    v = np.random.default_rng(3).random(256).astype(np.float32)
    vp = Voiceprint(cid, "resemblyzer", v / np.linalg.norm(v), 3)
    store.record_consent(cid, channel="phone", actor="ivr", now=NOW)
    store.save_voiceprint(vp, actor="ivr", now=NOW)
    for i in range(3):
        store.add_enrollment_take(cid, "resemblyzer", np.full(800, 0.1 * i, np.float32), 8000, vp.embedding,
                                  f"h{i}", NOW)
    store.record_attempt(AttemptRecord(cid, "call-9", 0.91, 0.8, "accept", "resemblyzer", (), NOW + 5, "fp",
                                       vp.embedding), actor="ivr")
    return vp


@pytest.fixture
async def web_voice(seeded, voice_store):  # type: ignore[no-untyped-def]
    deps, control, reloads = make_deps(seeded, voice=SimpleNamespace(store=voice_store))
    client = TestClient(TestServer(create_web_app(deps), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Web(client, deps, deps.hub, control, reloads)
    finally:
        await client.close()


def _biometric_rows(store: SqlVoiceprintStore, cid: str) -> dict[str, int]:
    with store.engine.connect() as c:
        q = lambda sql: c.execute(text(sql), {"c": cid}).scalar()  # noqa: E731
        return {"voiceprints": q("select count(*) from voiceauth_voiceprints where customer_id = :c"),
                "enrollment_audio": q("select count(*) from voiceauth_enrollment_audio where customer_id = :c"),
                "attempt_embeddings": q("select count(*) from voiceauth_verification_attempts where customer_id = :c"
                                        " and (embedding_blob is not null or audio_hash is not null)"),
                "attempts": q("select count(*) from voiceauth_verification_attempts where customer_id = :c")}


async def test_admin_read_is_audited_and_erasure_removes_every_copy(web_voice: Web, seeded, voice_store) -> None:  # type: ignore[no-untyped-def]
    cid = seeded.run_sync(lambda s: s.scalars(select(m.Customer.id)).first())
    _enroll(voice_store, str(cid))
    h = {**web_voice.admin(), "X-Actor": "dpo.rossi"}
    url = f"/api/v1/customers/{cid}/voice-enrollment"

    resp = await web_voice.client.get(url, headers=h)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["consent"]["channel"] == "phone"
    assert body["voiceprints"] == [{"model": "resemblyzer", "enrollment_takes": 3}]
    assert [v["decision"] for v in body["recent_verifications"]] == ["accept"]
    assert "embedding" not in json.dumps(body) and "blob" not in json.dumps(body)
    log = [(e.action, e.actor) for e in voice_store.audit_log(str(cid))]
    assert ("voice_verified", "ivr") in log
    assert ("biometric_data_viewed", "admin:dpo.rossi") in log

    assert _biometric_rows(voice_store, str(cid)) == {"voiceprints": 1, "enrollment_audio": 3,
                                                      "attempt_embeddings": 1, "attempts": 1}
    resp = await web_voice.client.delete(url, headers=h)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"customer_id": cid, "voiceprints": 1, "enrollment_takes": 3,
                                 "attempt_embeddings": 1}
    # every biometric copy is gone from the tables; the attempt row stays as a decision without biometrics
    assert _biometric_rows(voice_store, str(cid)) == {"voiceprints": 0, "enrollment_audio": 0,
                                                      "attempt_embeddings": 0, "attempts": 1}
    assert voice_store.recent_attempts(str(cid))[0].embedding is None
    assert voice_store.active_consent(str(cid)) is None
    log = [(e.action, e.actor) for e in voice_store.audit_log(str(cid))]
    assert ("biometric_data_erased", "admin:dpo.rossi") in log and ("consent_withdrawn", "admin:dpo.rossi") in log
    after = await (await web_voice.client.get(url, headers=h)).json()
    assert after["consent"] is None and after["voiceprints"] == []


async def test_agents_and_strangers_cannot_reach_voice_data_or_call_records(web_voice: Web, seeded, voice_store) -> None:  # type: ignore[no-untyped-def]
    cid = seeded.run_sync(lambda s: s.scalars(select(m.Customer.id)).first())
    _enroll(voice_store, str(cid))
    assert (await web_voice.login()).status == 302           # an agent's desktop session (cookie)
    url = f"/api/v1/customers/{cid}/voice-enrollment"
    for method, path in (("GET", url), ("DELETE", url), ("GET", "/api/v1/calls"), ("GET", "/api/v1/calls.csv")):
        resp = await web_voice.client.request(method, path, headers=web_voice.headers())
        assert resp.status == 401, (method, path, resp.status)
        resp = await web_voice.client.request(method, path, headers={"Authorization": "Bearer not-the-token"})
        assert resp.status == 401, (method, path, resp.status)
    assert _biometric_rows(voice_store, str(cid))["voiceprints"] == 1
    assert not [e for e in voice_store.audit_log(str(cid)) if e.action == "biometric_data_viewed"]


async def _views(store: SqlVoiceprintStore, expected: int) -> int:
    """The audit row is written just after the pop is sent: wait for it (bounded)."""
    for _ in range(50):
        n = len([e for e in store.audit_log() if e.action == "verification_viewed"])
        if n >= expected:
            return n
        await asyncio.sleep(0.05)
    return n


async def test_a_pop_showing_a_verification_is_an_audited_view_for_that_agent_only(seeded, voice_store) -> None:  # type: ignore[no-untyped-def]
    hub = ScreenPopHub(SqlCrmAdapter(seeded), db=seeded,
                       on_verification_view=_verification_view_auditor(SimpleNamespace(store=voice_store)))
    deps, _, _ = make_deps(seeded, hub=hub)
    client = TestClient(TestServer(create_web_app(deps), host="127.0.0.1"))
    await client.start_server()
    web = Web(client, deps, hub, None, [])  # type: ignore[arg-type]
    other = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        await web.login("a.ferrari", "demo-agent-1")              # agent 2001
        ws1 = await client.ws_connect("/ws/agent", headers=web.headers())
        await ws1.receive(timeout=5)
        r = await other.post(client.make_url("/login"), data={"login": "l.moretti", "password": "demo-agent-2"},
                             headers=web.headers(), allow_redirects=False)
        assert r.status == 302
        ws2 = await other.ws_connect(client.make_url("/ws/agent"), headers=web.headers())
        await ws2.receive(timeout=5)

        verified = {"ani": "+393471000001", "customer": {"id": "7", "name": "Maria"},
                    "verification": {"decision": "accept", "score": 0.93, "threshold": 0.8, "flags": []}}
        await hub.ringing("2001", "call-v", verified)
        pop = json.loads((await ws1.receive(timeout=5)).data)
        assert pop["type"] == "pop" and pop["pop"]["verification"]["status"] == "voice"
        with pytest.raises(asyncio.TimeoutError):
            await ws2.receive(timeout=0.5)                        # agent 2002 sees nothing of it
        await _views(voice_store, 1)
        views = [e for e in voice_store.audit_log() if e.action == "verification_viewed"]
        assert [(e.actor, e.customer_id) for e in views] == [("agent:2001", "7")]
        assert views[0].detail["call_id"] == "call-v"

        # agent 2002 reconnecting gets no pop of 2001's call; 2001 reconnecting sees it again, audited again
        ws2b = await other.ws_connect(client.make_url("/ws/agent"), headers=web.headers())
        first = json.loads((await ws2b.receive(timeout=5)).data)
        assert first["type"] == "state"
        with pytest.raises(asyncio.TimeoutError):
            await ws2b.receive(timeout=0.5)
        ws1b = await client.ws_connect("/ws/agent", headers=web.headers())
        kinds = [json.loads((await ws1b.receive(timeout=5)).data)["type"] for _ in range(2)]
        assert kinds == ["state", "pop"]
        assert await _views(voice_store, 2) == 2

        # a pop without a voice outcome (unknown caller) is not a biometric view
        await hub.ringing("2002", "call-u", {"ani": "+393330000999"})
        assert json.loads((await ws2.receive(timeout=5)).data)["call_id"] == "call-u"
        assert len([e for e in voice_store.audit_log() if e.action == "verification_viewed"]) == 2
        for ws in (ws1, ws2, ws1b, ws2b):
            await ws.close()
    finally:
        await other.close()
        await client.close()


async def test_every_websocket_refuses_a_foreign_origin(web: Web) -> None:
    await web.client.post("/login/token", data={"token": ADMIN_TOKEN}, headers=web.headers(),
                          allow_redirects=False)
    for path in ("/ws/agent", "/ws/wallboard"):
        for origin in ("https://evil.example", "null"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await web.client.ws_connect(path, headers={"Origin": origin})
            assert exc.value.status == 403, (path, origin)
    ws = await web.client.ws_connect("/ws/wallboard", headers=web.headers())
    assert json.loads((await ws.receive(timeout=5)).data)
    await ws.close()
