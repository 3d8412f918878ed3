"""Admin API and supervisor page of campaigns, on the real web app (aiohttp TestServer) and database."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from crm_bridge import campaign_store as cs
from crm_bridge.security import fast_hasher
from crm_bridge.seed import seed_demo
from crm_bridge.web import create_web_app
from tests.crm.web.conftest import ADMIN_TOKEN, make_deps

H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RULES = {"window": {"timezone": "Europe/Rome", "hours": {"mon-fri": "09:00-20:00"}},
         "pacing": {"max_concurrent": 3, "calls_per_minute": 6},
         "retries": {"no_answer": {"max_attempts": 2, "delay_seconds": 1800}}}


@pytest.fixture
async def client(db):
    db.run_sync(lambda s: seed_demo(s, hasher=fast_hasher()))
    deps, _, _ = make_deps(db)
    c = TestClient(TestServer(create_web_app(deps), host="127.0.0.1"))
    await c.start_server()
    try:
        yield c
    finally:
        await c.close()


async def test_create_list_progress_and_control(client):
    changed: list[int] = []
    cs.subscribe(changed.append)
    try:
        resp = await client.post("/api/v1/campaigns", headers=H, json={
            "name": "CSAT marzo", "survey": "csat", "rules": RULES,
            "contacts": [{"phone": "+39 347 100 0001"}, {"phone": "+390212345678", "language": "en"},
                         {"customer_id": 1}]})
        body = await resp.json()
        assert resp.status == 201, body
        cid = body["id"]
        assert body["state"] == "draft" and body["import"]["added"] >= 2
        assert body["rules"]["pacing"]["calls_per_minute"] == 6
        assert body["rules"]["retries"]["no_answer"] == {"max_attempts": 2, "delay_seconds": 1800.0}
        for cmd, state in (("resume", "running"), ("pause", "paused"), ("resume", "running"), ("stop", "stopped")):
            resp = await client.post(f"/api/v1/campaigns/{cid}/{cmd}", headers=H)
            assert resp.status == 200 and (await resp.json())["state"] == state
        assert changed.count(cid) == 5
        resp = await client.post(f"/api/v1/campaigns/{cid}/resume", headers=H)
        assert resp.status == 409 and "stopped" in (await resp.json())["error"]
        got = await (await client.get(f"/api/v1/campaigns/{cid}", headers=H)).json()
        assert got["by_state"]["skipped"] == got["contacts"] and got["response_rate"] is None
        items = (await (await client.get("/api/v1/campaigns", headers=H)).json())["items"]
        assert [i["id"] for i in items] == [cid]
        contacts = (await (await client.get(f"/api/v1/campaigns/{cid}/contacts", headers=H)).json())["items"]
        assert "+393471000001" in {c["phone"] for c in contacts}
    finally:
        cs.unsubscribe(changed.append)


async def test_csv_body_and_crm_query(client):
    csv_text = "phone,language\n+39 347 100 0001,it\n+390212345678,en\nnot-a-number,it\n"
    resp = await client.post("/api/v1/campaigns?name=csv&survey=csat&start=true", data=csv_text.encode(),
                             headers={**H, "Content-Type": "text/csv"})
    body = await resp.json()
    assert resp.status == 201, body
    assert body["state"] == "running" and body["import"]["added"] == 2
    assert body["import"]["errors"][0]["row"] == 4
    resp = await client.post("/api/v1/campaigns", headers=H, json={
        "name": "business", "survey": "csat", "query": {"segment": "business"}})
    body = await resp.json()
    assert resp.status == 201 and body["source"]["kind"] == "query" and body["contacts"] >= 1


async def test_errors_say_what_to_change(client):
    resp = await client.get("/api/v1/campaigns")
    assert resp.status == 401
    resp = await client.post("/api/v1/campaigns", json={"name": "x", "survey": "csat", "contacts": []})
    assert resp.status == 403                    # no bearer token: treated as a cross-site form post
    resp = await client.post("/api/v1/campaigns", headers=H, json={"name": "x", "survey": "csat"})
    assert resp.status == 422 and "exactly one of contacts" in (await resp.json())["error"]
    bad_window = {**RULES, "window": {"timezone": "Mars/Olympus", "hours": {"mon": "09:00-10:00"}}}
    resp = await client.post("/api/v1/campaigns", headers=H, json={
        "name": "x", "survey": "csat", "rules": bad_window, "contacts": [{"phone": "+390212345678"}]})
    assert resp.status == 422 and "unknown time zone" in (await resp.json())["error"]
    resp = await client.post("/api/v1/campaigns", headers=H, json={
        "name": "x", "survey": "csat", "contacts": [{"phone": "123"}]})
    assert resp.status == 422 and "no contact can be called" in (await resp.json())["error"]
    ok = {"name": "dup", "survey": "csat", "contacts": [{"phone": "+390212345678"}]}
    assert (await client.post("/api/v1/campaigns", headers=H, json=ok)).status == 201
    resp = await client.post("/api/v1/campaigns", headers=H, json=ok)
    assert resp.status == 409 and "exists already" in (await resp.json())["error"]
    assert (await client.get("/api/v1/campaigns/999", headers=H)).status == 404


async def test_opt_out_then_a_new_campaign_keeps_the_number_out(client):
    resp = await client.post("/api/v1/opt-outs", headers=H, json={"phone": "+39 02 1234 5678", "reason": "asked"})
    assert resp.status == 201 and (await resp.json())["e164"] == "+390212345678"
    resp = await client.post("/api/v1/campaigns", headers=H, json={
        "name": "after", "survey": "csat", "contacts": [{"phone": "+390212345678"}, {"phone": "+393471000001"}]})
    body = await resp.json()
    assert body["import"]["opted_out"] == 1 and body["by_state"]["opted_out"] == 1


async def test_supervisor_page_and_openapi(client):
    await client.post("/api/v1/campaigns", headers=H, json={
        "name": "Page <b>test</b>", "survey": "csat", "contacts": [{"phone": "+390212345678"}]})
    resp = await client.get("/supervisor/campaigns", headers=H)
    text = await resp.text()
    assert resp.status == 200 and "Page &lt;b&gt;test&lt;/b&gt;" in text and 'class="state">draft' in text
    assert '<a href="/supervisor/campaigns">Campaigns</a>' in text           # in the supervisors' menu
    assert (await client.get("/supervisor/campaigns", allow_redirects=False)).status in (302, 401)
    js = await (await client.get("/supervisor/campaigns.json", headers=H)).json()
    assert js["items"][0]["by_state"]["pending"] == 1
    spec = await (await client.get("/api/v1/openapi.json")).json()
    assert {"/campaigns", "/campaigns/{id}/pause", "/opt-outs"} <= set(spec["paths"])
    assert "CampaignCreate" in spec["components"]["schemas"]
