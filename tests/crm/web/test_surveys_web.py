"""Survey results on the web, on the real app and database: the admin API (JSON, CSV, bearer token), the
supervisor pages (labels from the survey script, CSAT by agent and queue, CSV export) and, in a real headless
Chromium, a supervisor reading them. A survey whose script is missing still shows its figures by question id."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from crm_bridge.db import Database
from crm_bridge.recorder import CallRecorder
from crm_bridge.surveys import SurveyStore
from crm_bridge.web import create_web_app

from .conftest import ADMIN_TOKEN, CHROMIUM, Web, chromium_or_fail, make_deps

pytest.importorskip("ivr.survey.script")

H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
T0 = 1_742_806_800.0          # 2025-03-24 09:00 UTC

SCRIPT = """
name: service
title: "Servizio <clienti>"
languages: [it, en]
csat_question: q1
intro: {it: "Buongiorno.", en: "Hello."}
questions:
  - id: q1
    kind: scale
    scale: {min: 1, max: 5}
    text: {it: "Quanto è soddisfatto?", en: "How satisfied are you?"}
  - id: q2
    kind: yes_no
    text: {it: "Risolto?", en: "Solved?"}
  - id: q3
    kind: choice
    options: {"1": {value: speed, label: "Velocità"}, "2": {value: courtesy, label: "Cortesia"}}
    text: {it: "Che cosa ha apprezzato?", en: "What did you value?"}
opt_out_digit: "9"
closing: {it: "Grazie.", en: "Thank you."}
"""

# (agent extension, queue, answers {q: (digit, value)}, status)
RESPONSES = [
    ("2001", "cards", {"q1": ("5", 5), "q2": ("1", True), "q3": ("2", "courtesy")}, "completed"),
    ("2001", "cards", {"q1": ("4", 4), "q2": ("1", True), "q3": ("1", "speed")}, "completed"),
    ("2001", "loans", {"q1": ("2", 2)}, "partial"),
    ("2002", "loans", {"q1": ("3", 3), "q2": ("2", False), "q3": ("2", "courtesy")}, "completed"),
    ("2002", "cards", {}, "no_answer"),
    ("2002", "cards", {"q1": ("9", None)}, "opted_out"),
]


@pytest.fixture
def surveys_dir(tmp_path: Path) -> Path:
    d = tmp_path / "surveys"
    d.mkdir()
    (d / "service.yaml").write_text(SCRIPT, encoding="utf-8")
    return d


@pytest.fixture
async def web(seeded: Database, surveys_dir: Path) -> AsyncIterator[Web]:
    deps, control, reloads = make_deps(seeded, surveys_dir=surveys_dir, tz="UTC")
    client = TestClient(TestServer(create_web_app(deps), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Web(client, deps, deps.hub, control, reloads)
    finally:
        await client.close()


async def _load(db: Database) -> None:
    t = [T0]
    store = SurveyStore(db, clock=lambda: t[0])
    rec = CallRecorder(db)
    for i, (agent, queue, answers, status) in enumerate(RESPONSES):
        t[0] = T0 + i * 3600
        call_id = f"web-survey-{i}"
        await rec.call_arrived(call_id, ani=f"+3934700000{i:02d}", dnis="800100100", line="retail")
        await rec.queued(call_id, queue, service=queue)
        await rec.answered(call_id, agent)
        await rec.ended(call_id, "agent_bye")
        rid = await store.begin(survey="service", channel="post_call", call_id=call_id)
        for q, (digit, value) in answers.items():
            await store.answer(rid, q, digit, value)
        await store.end(rid, status)
    t[0] = T0 + 86400 * 2                      # another day, another channel
    rid = await store.begin(survey="service", channel="outbound", campaign_id=4, phone="+390212345678")
    await store.answer(rid, "q1", "1", 1)
    await store.end(rid, "partial")
    old = await store.begin(survey="legacy", channel="post_call", agent_id="2001", queue="cards")
    await store.answer(old, "a", "3", 3)
    await store.end(old, "completed")


async def test_api_lists_surveys_and_serves_results_as_json_and_csv(web: Web, seeded: Database) -> None:
    await _load(seeded)
    c = web.client
    assert (await c.get("/api/v1/surveys")).status == 401
    assert (await c.get("/api/v1/surveys/service/results")).status == 401
    assert (await c.get("/api/v1/surveys/service/results.csv",
                        headers={"Authorization": "Bearer wrong"})).status == 401

    items = (await (await c.get("/api/v1/surveys", headers=H)).json())["items"]
    by = {i["survey"]: i for i in items}
    assert by["service"]["script"] is True and by["service"]["questions"] == 3
    assert (by["service"]["responses"], by["service"]["answered"], by["service"]["completed"]) == (7, 6, 3)
    assert by["legacy"]["script"] is False and by["legacy"]["responses"] == 1

    resp = await c.get("/api/v1/surveys/service/results", headers=H)
    r = await resp.json()
    assert resp.status == 200, r
    assert (r["offered"], r["answered"], r["response_rate"], r["opted_out"]) == (7, 6, round(6 / 7, 4), 1)
    assert r["distribution"]["q1"] == {"1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "9": 1}
    assert r["csat_question"] == "q1" and r["csat_scale"] == [1, 5]
    # q1 on the scale: 5, 4, 2, 3, 1 (the opt-out key 9 is not a rating)
    assert r["csat"] == {"responses": 5, "satisfied": 2, "csat": 40.0, "mean": 3.0}
    assert r["csat_by"]["agent"]["2001"] == {"responses": 3, "satisfied": 2, "csat": 66.7, "mean": 3.67}
    assert r["csat_by"]["agent"]["2002"] == {"responses": 1, "satisfied": 0, "csat": 0.0, "mean": 3.0}
    assert r["csat_by"]["queue"]["cards"]["csat"] == 100.0 and r["csat_by"]["line"]["retail"]["responses"] == 4
    assert r["agent_names"]["2001"] == "Anna Ferrari"
    assert r["script"]["questions"][2]["options"] == {"1": "Velocità", "2": "Cortesia"}

    only = await (await c.get("/api/v1/surveys/service/results?channel=outbound&campaign_id=4",
                              headers=H)).json()
    assert only["offered"] == 1 and only["csat"]["mean"] == 1.0
    day = await (await c.get("/api/v1/surveys/service/results?since=2025-03-24&until=2025-03-24",
                             headers=H)).json()
    assert day["offered"] == 6
    bad = await c.get("/api/v1/surveys/service/results?channel=fax", headers=H)
    assert bad.status == 400 and "channel" in (await bad.json())["error"]
    bad = await c.get("/api/v1/surveys/service/results?since=yesterday", headers=H)
    assert bad.status == 400 and "yesterday" in (await bad.json())["error"]
    assert (await c.get("/api/v1/surveys/nothing/results", headers=H)).status == 404

    legacy = await (await c.get("/api/v1/surveys/legacy/results", headers=H)).json()
    assert legacy["script"] is None and legacy["csat"] is None and legacy["distribution"] == {"a": {"3": 1}}

    resp = await c.get("/api/v1/surveys/service/results.csv", headers=H)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0][-3:] == ["q1", "q2", "q3"] and len(rows) == 8
    first = dict(zip(rows[0], rows[1]))
    assert (first["agent_id"], first["queue"], first["q1"], first["q2"], first["q3"], first["status"]) == \
        ("2001", "cards", "5", "yes", "courtesy", "completed")
    assert first["call_id"] == "web-survey-0" and first["ticket_id"]


async def test_supervisor_pages_show_labels_csat_and_export(web: Web, seeded: Database) -> None:
    await _load(seeded)
    c = web.client
    resp = await c.get("/supervisor/surveys", allow_redirects=False)
    assert resp.status in (302, 401)
    resp = await c.get("/supervisor/surveys/service", allow_redirects=False)
    assert resp.status in (302, 401)
    resp = await c.get("/supervisor/surveys/service/results.csv", allow_redirects=False)
    assert resp.status in (302, 401)

    text = await (await c.get("/supervisor/surveys", headers=H)).text()
    assert '<a href="/supervisor/surveys/service">service</a>' in text and "Servizio &lt;clienti&gt;" in text
    assert '<a href="/supervisor/surveys">Surveys</a>' in text

    resp = await c.get("/supervisor/surveys/service", headers=H)
    text = await resp.text()
    assert resp.status == 200
    assert "Servizio &lt;clienti&gt;" in text and "Quanto è soddisfatto?" in text
    assert '<tr data-digit="1"><td>Velocità</td><td>1</td><td>1</td><td>33.3 %</td></tr>' in text
    assert '<tr data-digit="9"><td>opt-out</td>' in text
    assert 'id="t-csat">40.0 %<' in text and 'id="t-offered">7<' in text
    assert '<tr data-key="2001"><td>Anna Ferrari (2001)</td><td>3</td><td>2</td><td class="csat">66.7 %</td>' in text
    assert 'id="csat-queue"' in text and 'id="csat-service"' in text and 'id="csat-line"' in text
    assert 'href="/supervisor/surveys/service/results.csv"' in text

    resp = await c.get("/supervisor/surveys/service?channel=outbound", headers=H)
    text = await resp.text()
    assert 'id="t-offered">1<' in text and 'href="/supervisor/surveys/service/results.csv?channel=outbound"' in text
    assert (await c.get("/supervisor/surveys/service?campaign_id=x", headers=H)).status == 400
    assert (await c.get("/supervisor/surveys/nothing", headers=H)).status == 404

    text = await (await c.get("/supervisor/surveys/legacy", headers=H)).text()
    assert 'id="no-script"' in text and 'id="dist-a"' in text and 'id="t-csat">–<' in text

    resp = await c.get("/supervisor/surveys/service/results.csv?channel=post_call", headers=H)
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert resp.status == 200 and len(rows) == 7


async def test_a_broken_script_file_does_not_hide_the_good_ones(web: Web, seeded: Database,
                                                                surveys_dir: Path) -> None:
    (surveys_dir / "broken.yaml").write_text("name: broken\nquestions: []\n", encoding="utf-8")
    body = await (await web.client.get("/api/v1/surveys", headers=H)).json()
    assert [i["survey"] for i in body["items"]] == ["service"]
    assert body["script_problems"] and "broken.yaml" in body["script_problems"][0]
    text = await (await web.client.get("/supervisor/surveys", headers=H)).text()
    assert "broken.yaml" in text and '<a href="/supervisor/surveys/service">' in text


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_supervisor_reads_survey_results_in_chromium(web: Web, seeded: Database, tmp_path: Path) -> None:
    chromium = chromium_or_fail()
    from playwright.async_api import async_playwright, expect

    from .test_browser import ARGS

    await _load(seeded)
    shots = Path(os.environ.get("WEB_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    base = web.origin
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium or CHROMIUM, args=ARGS)
        try:
            ctx = await browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
            page = await ctx.new_page()
            await page.goto(base + "/login")
            await page.click("details summary")
            await page.fill("input[name=token]", ADMIN_TOKEN)
            await page.click("text=Open the wallboard")
            await page.wait_for_url(base + "/supervisor/wallboard")
            await page.click("header nav >> text=Surveys")
            await page.wait_for_url(base + "/supervisor/surveys")
            await expect(page.locator("#surveys tr[data-survey=service] td").nth(3)).to_have_text("7")
            await page.click("#surveys a[href='/supervisor/surveys/service']")
            await page.wait_for_url(base + "/supervisor/surveys/service")
            await expect(page.locator("#t-csat")).to_have_text("40.0 %")
            await expect(page.locator("#dist-q3 tr[data-digit='2'] td").nth(2)).to_have_text("2")
            await expect(page.locator("#csat-agent tr[data-key='2001'] td.csat")).to_have_text("66.7 %")
            await page.screenshot(path=str(shots / "survey_results.png"), full_page=True)

            await page.select_option("select[name=channel]", "outbound")
            await page.click("text=Show")
            await page.wait_for_url("**/supervisor/surveys/service?*channel=outbound*")
            await expect(page.locator("#t-offered")).to_have_text("1")
            async with page.expect_download() as dl:
                await page.click("#csv-export")
            download = await dl.value
            rows = list(csv.reader(io.StringIO(Path(await download.path()).read_text(encoding="utf-8"))))
            assert len(rows) == 2 and rows[1][2] == "outbound"
        finally:
            await browser.close()
