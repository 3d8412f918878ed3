from __future__ import annotations

import csv
import io
import wave
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import numpy as np
from openapi_spec_validator import validate
from sqlalchemy import select

from crm_bridge import models as m
from crm_bridge.recorder import CallRecorder
from crm_bridge.web import create_web_app
from crm_bridge.web.api import PREFIX, ROUTES
from crm_bridge.web.campaigns import ROUTES as CAMPAIGN_ROUTES
from crm_bridge.web.surveys import ROUTES as SURVEY_ROUTES

from .conftest import Web


async def test_admin_api_needs_the_bearer_token(web: Web) -> None:
    assert (await web.client.get("/api/v1/customers")).status == 401
    bad = await web.client.get("/api/v1/customers", headers={"Authorization": "Bearer wrong"})
    assert bad.status == 401 and bad.headers["WWW-Authenticate"] == "Bearer"
    await web.login()                                     # a desktop session is not an admin
    assert (await web.client.get("/api/v1/customers")).status == 401
    ok = await web.client.get("/api/v1/customers", headers=web.admin())
    assert ok.status == 200 and (await ok.json())["total"] >= 1


async def test_admin_api_is_off_without_a_token(seeded) -> None:  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import TestClient, TestServer

    from .conftest import make_deps
    deps, _, _ = make_deps(seeded, admin_token=None)
    client = TestClient(TestServer(create_web_app(deps), host="127.0.0.1"))
    await client.start_server()
    try:
        resp = await client.get("/api/v1/agents", headers={"Authorization": "Bearer anything"})
        assert resp.status == 503 and "admin_token" in (await resp.json())["error"]
    finally:
        await client.close()


async def test_customer_create_read_update_and_phones(web: Web) -> None:
    h = web.admin()
    resp = await web.client.post("/api/v1/customers", headers=h, json={
        "first_name": "Giorgio", "last_name": "Neri", "segment": "business", "account_number": "99887766",
        "pin": "2468", "phones": [{"number": "333 765 4321"}, {"number": "+44 20 7946 0958", "label": "uk"}]})
    assert resp.status == 201, await resp.text()
    c = await resp.json()
    assert [p["e164"] for p in c["phones"]] == ["+393337654321", "+442079460958"]
    assert c["has_pin"] and "pin" not in c and "pin_hash" not in c
    cid = c["id"]
    found = await (await web.client.get("/api/v1/customers", params={"phone": "0039 333 765 4321"}, headers=h)).json()
    assert [x["id"] for x in found["items"]] == [cid]
    upd = await web.client.patch(f"/api/v1/customers/{cid}", headers=h, json={"segment": "critical"})
    assert (await upd.json())["segment"] == "critical"
    dup = await web.client.post("/api/v1/customers", headers=h, json={
        "first_name": "X", "last_name": "Y", "phones": [{"number": "+393337654321"}]})
    assert dup.status == 409
    bad = await web.client.post(f"/api/v1/customers/{cid}/phones", headers=h, json={"number": "12"})
    assert bad.status == 422 and "number" in (await bad.json())["error"]
    added = await web.client.post(f"/api/v1/customers/{cid}/phones", headers=h, json={"number": "+39 347 111 2222"})
    assert added.status == 201
    gone = await web.client.delete(f"/api/v1/customers/{cid}/phones/+393471112222", headers=h)
    assert gone.status == 204
    assert (await web.client.get(f"/api/v1/customers/{cid}", headers=h)).status == 200
    assert (await web.client.get("/api/v1/customers/999999", headers=h)).status == 404
    invalid = await web.client.post("/api/v1/customers", headers=h, json={"first_name": "A", "segment": "gold"})
    assert invalid.status == 422 and "last_name" in (await invalid.json())["error"]


async def test_phone_csv_import_reports_each_bad_row(web: Web, seeded) -> None:  # type: ignore[no-untyped-def]
    existing = seeded.run_sync(lambda s: s.scalars(select(m.Customer)).first())
    taken = seeded.run_sync(lambda s: s.scalars(select(m.PhoneNumber.e164)).first())
    text = ("account_number,first_name,last_name,segment,phone,label\n"
            f"{existing.account_number},,,,+39 02 1234 5678,office\n"          # 2: ok (existing customer)
            "55500011,Marta,Gialli,retail,347 555 0101,mobile\n"               # 3: ok, creates the customer
            "55500011,Marta,Gialli,retail,0039 347 555 0102,\n"                # 4: ok, same new customer
            "55500012,Nome,,retail,347 555 0103,\n"                            # 5: unknown account, no name
            "55500013,A,B,gold,347 555 0104,\n"                                # 6: bad segment
            f"{existing.account_number},,,,not a number,\n"                    # 7: bad phone
            f"{existing.account_number},,,,+39 02 1234 5678,\n"                # 8: duplicate within file
            f"55500011,,,,{taken},\n")                                         # 9: belongs to someone else
    dry = await web.client.post("/api/v1/phones/import?dry_run=true", data=text.encode(),
                                headers={**web.admin(), "Content-Type": "text/csv"})
    report = await dry.json()
    assert dry.status == 200 and report["dry_run"] and report["added"] == 3
    assert seeded.run_sync(lambda s: s.scalars(select(m.PhoneNumber).where(
        m.PhoneNumber.e164 == "+390212345678")).first()) is None          # nothing written
    form = aiohttp.FormData()
    form.add_field("file", text.encode(), filename="phones.csv", content_type="text/csv")
    resp = await web.client.post("/api/v1/phones/import", data=form, headers=web.admin())
    report = await resp.json()
    assert resp.status == 200
    assert (report["rows"], report["added"], report["customers_created"], report["failed"]) == (8, 3, 1, 5)
    by_row = {e["row"]: e for e in report["errors"]}
    assert set(by_row) == {5, 6, 7, 8, 9}
    assert by_row[5]["column"] == "account_number" and "first_name" in by_row[5]["error"]
    assert by_row[6]["column"] == "segment"
    assert by_row[7]["column"] == "phone" and "not a phone number" in by_row[7]["error"]
    assert "row 2" in by_row[8]["error"]
    assert "already belongs" in by_row[9]["error"]
    phones = seeded.run_sync(lambda s: {p.e164: p.customer_id for p in s.scalars(select(m.PhoneNumber))})
    assert phones["+390212345678"] == existing.id
    assert phones["+393475550101"] == phones["+393475550102"]
    no_header = await web.client.post("/api/v1/phones/import", data=b"x,y\n1,2\n",
                                      headers={**web.admin(), "Content-Type": "text/csv"})
    assert no_header.status == 400 and "phone" in (await no_header.json())["error"]


async def test_agents_and_skills(web: Web) -> None:
    h = web.admin()
    assert (await web.client.post("/api/v1/skills", headers=h, json={"name": "mortgages"})).status == 201
    assert (await web.client.post("/api/v1/skills", headers=h, json={"name": "mortgages"})).status == 409
    resp = await web.client.post("/api/v1/agents", headers=h, json={
        "id": "agent-9", "name": "Sara Conti", "login": "s.conti", "password": "super-secret-9",
        "extension": "2009", "supervisor": True, "skills": {"mortgages": 7, "accounts": 5}})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["skills"] == {"mortgages": 7, "accounts": 5}
    unknown = await web.client.patch("/api/v1/agents/agent-9", headers=h, json={"skills": {"astrology": 3}})
    assert unknown.status == 422 and "astrology" in (await unknown.json())["error"]
    listed = await (await web.client.get("/api/v1/agents", headers=h)).json()
    assert {"agent-1", "agent-2", "agent-9"} <= {a["id"] for a in listed["items"]}
    assert all("password" not in a and "password_hash" not in a for a in listed["items"])
    # the new supervisor logs in and reaches the supervisor pages
    login = await web.login("s.conti", "super-secret-9")
    assert login.status == 302
    assert (await web.client.get("/supervisor/wallboard.json")).status == 200
    off = await web.client.patch("/api/v1/agents/agent-9", headers=h, json={"active": False})
    assert (await off.json())["active"] is False
    web.client.session.cookie_jar.clear()
    assert (await web.login("s.conti", "super-secret-9")).status == 401


async def test_config_reload_calls_the_server(web: Web) -> None:
    resp = await web.client.post("/api/v1/config/reload", headers=web.admin())
    assert resp.status == 200 and await resp.json() == {"ok": True, "problems": []}
    assert web.reloads == [True]


async def _calls(db) -> None:  # type: ignore[no-untyped-def]
    rec = CallRecorder(db)
    t0 = datetime.now(timezone.utc) - timedelta(minutes=30)
    await rec.call_arrived("c-ans", ani="+393331112222", dnis="800100100", line="retail", at=t0)
    await rec.queued("c-ans", "cards", service="cards", at=t0 + timedelta(seconds=20))
    await rec.answered("c-ans", "2001", at=t0 + timedelta(seconds=30))
    await rec.ended("c-ans", "caller_bye", at=t0 + timedelta(seconds=200))
    await rec.call_arrived("c-ab", ani="=HYPERLINK(\"x\")", dnis="800100100", line="retail", at=t0)
    await rec.queued("c-ab", "retail_accounts", service="accounts", at=t0 + timedelta(seconds=10))
    await rec.ended("c-ab", "caller_bye", at=t0 + timedelta(seconds=70))


async def test_call_records_list_filter_and_csv(web: Web, seeded) -> None:  # type: ignore[no-untyped-def]
    await _calls(seeded)
    h = web.admin()
    allc = await (await web.client.get("/api/v1/calls", headers=h)).json()
    assert allc["total"] == 2
    cards = await (await web.client.get("/api/v1/calls", params={"queue": "cards"}, headers=h)).json()
    assert [c["call_id"] for c in cards["items"]] == ["c-ans"] and cards["items"][0]["agent_id"] == "2001"
    bad = await web.client.get("/api/v1/calls", params={"from": "yesterday"}, headers=h)
    assert bad.status == 400 and "not a date" in (await bad.json())["error"]
    resp = await web.client.get("/api/v1/calls.csv", headers=h)
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert {r["call_id"] for r in rows} == {"c-ans", "c-ab"}
    ab = next(r for r in rows if r["call_id"] == "c-ab")
    assert ab["ani"].startswith("'=")                   # no formula reaches a spreadsheet
    assert next(r for r in rows if r["call_id"] == "c-ans")["ani"] == "+393331112222"
    kpis = await (await web.client.get("/api/v1/kpis", params={"group_by": "queue"}, headers=h)).json()
    by_q = {g["key"]: g for g in kpis["groups"]}
    assert by_q["cards"]["answered"] == 1 and by_q["retail_accounts"]["abandoned"] == 1


def _wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class _ConsentStore:
    def __init__(self) -> None:
        self.consents: dict[str, str] = {}

    def active_consent(self, customer_id: str) -> Any:
        return self.consents.get(customer_id)

    def record_consent(self, customer_id: str, *, channel: str, actor: str, now: float) -> None:
        self.consents[customer_id] = channel


class _Voice:
    """Stands in for VoiceAuthService (its own tests cover enrollment); records what the endpoint hands over."""

    def __init__(self) -> None:
        self.store = _ConsentStore()
        self.calls: list[tuple[str, list[tuple[np.ndarray, int]], str]] = []

    async def enroll_recordings(self, customer_id: str, recordings: list[tuple[np.ndarray, int]], *, actor: str,
                                now: float) -> Any:
        if self.store.active_consent(customer_id) is None:
            raise RuntimeError("no consent")
        self.calls.append((customer_id, recordings, actor))
        vp = type("VP", (), {"model": "resemblyzer"})()
        session = type("S", (), {"takes": len(recordings), "flags": set()})()
        return vp, session


async def test_voice_enrollment_upload_needs_consent_and_passes_the_audio(seeded) -> None:  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import TestClient, TestServer

    from .conftest import make_deps
    voice = _Voice()
    deps, _, _ = make_deps(seeded, voice=voice)
    client = TestClient(TestServer(create_web_app(deps), host="127.0.0.1"))
    await client.start_server()
    h = {"Authorization": f"Bearer {deps.admin_token}"}
    cid = seeded.run_sync(lambda s: s.scalars(select(m.Customer.id)).first())
    try:
        def form(consent: bool) -> aiohttp.FormData:
            f = aiohttp.FormData()
            for i in range(3):
                f.add_field("audio", _wav(1.0 + i * 0.1), filename=f"take{i}.wav", content_type="audio/wav")
            if consent:
                f.add_field("consent", "true")
                f.add_field("consent_channel", "branch_form")
            f.add_field("actor", "ops1")
            return f
        refused = await client.post(f"/api/v1/customers/{cid}/voice-enrollment", data=form(False), headers=h)
        assert refused.status == 409 and "consent" in (await refused.json())["error"]
        assert voice.calls == []
        resp = await client.post(f"/api/v1/customers/{cid}/voice-enrollment", data=form(True), headers=h)
        assert resp.status == 201, await resp.text()
        assert voice.store.consents[str(cid)] == "branch_form"
        (who, recs, actor), = voice.calls
        assert who == str(cid) and actor == "admin:ops1" and len(recs) == 3
        audio, rate = recs[0]
        assert rate == 16000 and audio.dtype == np.float32 and abs(float(np.max(audio)) - 0.3) < 0.01
        junk = aiohttp.FormData()
        junk.add_field("audio", b"RIFF....not a wav", filename="x.wav")
        bad = await client.post(f"/api/v1/customers/{cid}/voice-enrollment", data=junk, headers=h)
        assert bad.status == 422 and "x.wav" in (await bad.json())["error"]
    finally:
        await client.close()


async def test_openapi_document_is_valid_and_matches_the_routes(web: Web) -> None:
    resp = await web.client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    validate(doc)
    described = {(method.upper(), path) for path, item in doc["paths"].items()
                 for method in item if method in ("get", "post", "patch", "delete", "put")}
    routed = {(method, path) for method, path, _ in ROUTES + CAMPAIGN_ROUTES + SURVEY_ROUTES}
    assert described == routed
    registered = {(r.method, r.resource.canonical) for r in web.client.app.router.routes()
                  if r.resource is not None and r.resource.canonical.startswith(PREFIX)}
    assert {(mth, PREFIX + p) for mth, p in routed} <= registered
    schema = doc["components"]["schemas"]["CustomerCreate"]
    assert set(schema["required"]) == {"first_name", "last_name"}
