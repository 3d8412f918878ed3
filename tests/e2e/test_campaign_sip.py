"""Outbound survey campaigns end to end: the full server dials SIPp UAS processes ("customers") on loopback
through the configured outbound trunk routes. Customers who answer press RFC 4733 digits to answer the
survey; one never answers (the server cancels after the ring timeout), one is busy (486). Then a restart in
the middle of a campaign on the same database.

What each customer received is read from its own SIPp message log (INVITEs counted, so a duplicate call would
show); what the server decided from the campaign tables and the survey answers it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from tests.e2e.harness import SIPP
from tests.e2e.campaign_survey import SURVEY_FILES, SURVEY_NAME, prepare_database, stored_answers
from tests.e2e.server_fixture import IN_HOURS, ShiftedClock, contact_server
from tests.e2e.test_routing_sip import Sipp, start_sipp, until

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(240),
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]

TOKEN = "campaign-e2e-admin-token"
GIULIA, MARCO, ANNA, LUCA = "+393471000001", "+393471000002", "+393351000003", "+393391000004"
SOFIA, PAOLO = "+393401000005", "+393281000006"


# ------------------------------------------------------------------------------------------ helpers

def server_overrides(routes: dict[str, int], db: Path) -> dict[str, str]:
    """Each customer's number routed to its own SIPp (longest prefix = the whole number)."""
    table = [{"prefix": number, "trunk": f"sip:{{number}}@127.0.0.1:{port}"} for number, port in routes.items()]
    return {"CONTACT_SERVER__OUTBOUND__TRUNK": "sip:{number}@127.0.0.1:9",
            "CONTACT_SERVER__OUTBOUND__ROUTES": json.dumps(table),
            "CONTACT_SERVER__OUTBOUND__POLL_SECONDS": "0.5",
            "CONTACT_SERVER_ADMIN_TOKEN": TOKEN,
            "CONTACT_SERVER_DATABASE_URL": f"sqlite:///{db}"}


@contextlib.asynccontextmanager
async def campaign_server(root: Path, routes: dict[str, int], db: Path) -> AsyncIterator[Any]:
    root.mkdir(parents=True, exist_ok=True)
    prepare_database(db)
    async with contact_server(root, clock=ShiftedClock(IN_HOURS), overrides=server_overrides(routes, db),
                              extra_files=SURVEY_FILES) as srv:
        assert srv.server.extras.get("campaign_service") is not None, "the campaign service did not start"
        yield srv


async def api(srv, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{srv.server.extras['web_port']}/api/v1{path}"
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            return resp.status, await resp.json()


def contacts(srv, campaign_id: int) -> dict[str, dict[str, Any]]:
    from crm_bridge import campaign_store as cs

    return {c["phone"]: c for c in srv.query(lambda s: cs.contact_rows(s, campaign_id))}


def attempts(srv, campaign_id: int) -> list[tuple[str, int, float, float | None, str | None]]:
    from crm_bridge.campaign_models import CampaignAttempt, CampaignContact

    rows = srv.query(lambda s: s.execute(
        select(CampaignContact.phone, CampaignAttempt.attempt, CampaignAttempt.started_at, CampaignAttempt.ended_at,
               CampaignAttempt.outcome).join(CampaignContact, CampaignAttempt.contact_id == CampaignContact.id)
        .where(CampaignContact.campaign_id == campaign_id).order_by(CampaignAttempt.id)).all())
    return [(p, a, s.timestamp(), e.timestamp() if e else None, o) for p, a, s, e, o in rows]


async def customer(tmp: Path, name: str, scenario: str, calls: int, **variables: Any) -> Sipp:
    return await start_sipp(tmp, name, scenario, calls=calls, variables=variables, timeout=200)


def invites(phone: Sipp) -> int:
    return len(phone.received("INVITE"))


async def wait_campaign(srv, cid: int, states: set[str], timeout: float = 120.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, body = await api(srv, "GET", f"/campaigns/{cid}")
        if body["state"] in states:
            return body
        if loop.time() > deadline:
            raise AssertionError(f"campaign {cid} still {body['state']} after {timeout} s: {body}")
        await asyncio.sleep(0.3)


# ------------------------------------------------------------------------------------------ tests

async def test_campaign_calls_customers_records_answers_and_retries_by_the_rules(tmp_path):
    phones = {
        GIULIA: await customer(tmp_path, "giulia", "uas_customer_survey.xml", 2, ring=300, before=1500, gap=2500,
                               d1=4, d2=1),
        MARCO: await customer(tmp_path, "marco", "uas_customer_survey.xml", 2, ring=800, before=1500, gap=2500,
                              d1=5, d2=2),
        ANNA: await customer(tmp_path, "anna", "uas_agent_noanswer.xml", 3),
        LUCA: await customer(tmp_path, "luca", "uas_agent_busy.xml", 3),
    }
    from crm_bridge.metrics import REGISTRY

    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("contact_campaign_calls_total", {"outcome": outcome}) or 0.0

    before = {o: counted(o) for o in ("completed", "busy", "no_answer")}
    try:
        async with campaign_server(tmp_path / "srv", {n: p.port for n, p in phones.items()},
                                   tmp_path / "campaign.db") as srv:
            status, body = await api(srv, "POST", "/campaigns", {
                "name": "CSAT e2e", "survey": SURVEY_NAME, "start": True,
                "contacts": [{"phone": GIULIA}, {"phone": MARCO}, {"phone": ANNA}, {"phone": LUCA}],
                "rules": {"pacing": {"max_concurrent": 2, "calls_per_minute": 30, "ring_timeout": 5},
                          "retries": {"no_answer": {"max_attempts": 2, "delay_seconds": 2},
                                      "busy": {"max_attempts": 2, "delay_seconds": 2},
                                      "failed": {"max_attempts": 1, "delay_seconds": 0}}}})
            assert status == 201, body
            cid = body["id"]
            final = await wait_campaign(srv, cid, {"finished"})
            by_phone = contacts(srv, cid)
            tried = attempts(srv, cid)
            answers = stored_answers(srv, cid)
    finally:
        for p in phones.values():
            p.stop()
    # what each customer's phone saw
    assert invites(phones[GIULIA]) == 1 and invites(phones[MARCO]) == 1
    assert invites(phones[ANNA]) == 2 and invites(phones[LUCA]) == 2       # one retry each, by the rules
    assert all("X-Campaign-Attempt: campaign-" in inv for p in phones.values() for inv in p.received("INVITE"))
    # what the server recorded
    assert {p: (c["state"], c["attempts"], c["last_outcome"]) for p, c in by_phone.items()} == {
        GIULIA: ("completed", 1, "completed"), MARCO: ("completed", 1, "completed"),
        ANNA: ("no_answer", 2, "no_answer"), LUCA: ("busy", 2, "busy")}
    assert final["by_state"]["completed"] == 2 and final["response_rate"] == 0.5
    assert answers == {GIULIA: [("q1", "4"), ("q2", "1")], MARCO: [("q1", "5"), ("q2", "2")]}
    # pacing, read from the committed attempts: never more than 2 calls at once, retries after their delay
    events = sorted([(s, 1) for _, _, s, _, _ in tried] + [(e, -1) for _, _, _, e, _ in tried])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= 2
    for number in (ANNA, LUCA):
        (p1, a1, s1, e1, o1), (p2, a2, s2, e2, o2) = [t for t in tried if t[0] == number]
        assert (a1, a2) == (1, 2) and s2 >= e1 + 2.0 - 0.05
    assert all(o is not None for *_, o in tried)
    assert {o: counted(o) - n for o, n in before.items()} == {"completed": 2, "busy": 2, "no_answer": 2}


async def test_restart_mid_campaign_calls_nobody_twice(tmp_path):
    """One call at a time; the server is stopped while the second customer is answering the survey, then a new
    server starts on the same database and finishes the campaign."""
    numbers = [GIULIA, MARCO, ANNA, LUCA, SOFIA, PAOLO]
    # Marco presses his first key late: the stop (2 s of grace) always finds his survey unfinished
    phones = {n: await customer(tmp_path, f"c{i}", "uas_customer_survey.xml", 2, ring=200,
                                before=8000 if n == MARCO else 1500, gap=2500, d1=str(i + 1), d2=str(i + 1))
              for i, n in enumerate(numbers)}
    routes = {n: p.port for n, p in phones.items()}
    db = tmp_path / "campaign.db"
    try:
        async with campaign_server(tmp_path / "srv1", routes, db) as srv:
            status, body = await api(srv, "POST", "/campaigns", {
                "name": "restart", "survey": SURVEY_NAME, "start": True,
                "contacts": [{"phone": n} for n in numbers],
                "rules": {"pacing": {"max_concurrent": 1, "calls_per_minute": 60, "ring_timeout": 5}}})
            assert status == 201, body
            cid = body["id"]
            # stop once the second customer has answered (its first digit may or may not be in)
            await until(lambda: invites(phones[MARCO]) == 1 and
                        contacts(srv, cid)[MARCO]["state"] == "answered", timeout=60, what="Marco answering")
        # graceful stop happened: Marco's survey was cut, Giulia's completed
        async with campaign_server(tmp_path / "srv2", routes, db) as srv:
            final = await wait_campaign(srv, cid, {"finished"})
            by_phone = contacts(srv, cid)
            answers = stored_answers(srv, cid)
    finally:
        for p in phones.values():
            p.stop()
    assert {n: invites(p) for n, p in phones.items()} == {n: 1 for n in numbers}
    assert by_phone[GIULIA]["state"] == "completed"
    assert by_phone[MARCO]["state"] == "answered"          # hung up by the stop: final, never called again
    assert all(by_phone[n]["state"] == "completed" for n in numbers[2:])
    assert final["attempts"] == len(numbers)
    for i, n in enumerate(numbers):
        if n != MARCO:
            assert answers[n] == [("q1", str(i + 1)), ("q2", str(i + 1))]


async def test_pause_resume_and_opt_out_through_the_admin_api(tmp_path):
    """One call at a time. Paused while the first customer answers: nobody else is called until resume; a
    customer put on the do-not-call list meanwhile is never called."""
    numbers = [GIULIA, MARCO, ANNA]
    phones = {n: await customer(tmp_path, f"p{i}", "uas_customer_survey.xml", 2, ring=200, before=1500, gap=2500,
                                d1="3", d2="3") for i, n in enumerate(numbers)}
    try:
        async with campaign_server(tmp_path / "srv", {n: p.port for n, p in phones.items()},
                                   tmp_path / "campaign.db") as srv:
            status, body = await api(srv, "POST", "/campaigns", {
                "name": "pause", "survey": SURVEY_NAME, "start": True,
                "contacts": [{"phone": n} for n in numbers],
                "rules": {"pacing": {"max_concurrent": 1, "calls_per_minute": 60, "ring_timeout": 5}}})
            assert status == 201, body
            cid = body["id"]
            await until(lambda: contacts(srv, cid)[GIULIA]["state"] == "answered", timeout=60, what="answer")
            status, body = await api(srv, "POST", f"/campaigns/{cid}/pause")
            assert status == 200 and body["state"] == "paused"
            status, _ = await api(srv, "POST", "/opt-outs", {"phone": ANNA, "reason": "asked by e-mail"})
            assert status == 201
            await until(lambda: contacts(srv, cid)[GIULIA]["state"] == "completed", timeout=60, what="survey end")
            # the service has seen the pause (its dialer state) and has had a poll to drop Anna
            service = srv.server.extras["campaign_service"]
            await until(lambda: service.live()[cid]["state"] == "paused" and
                        contacts(srv, cid)[ANNA]["state"] == "opted_out", timeout=10, what="pause and opt-out")
            assert invites(phones[MARCO]) == 0 and contacts(srv, cid)[MARCO]["state"] == "pending"
            status, body = await api(srv, "POST", f"/campaigns/{cid}/resume")
            assert status == 200 and body["state"] == "running"
            final = await wait_campaign(srv, cid, {"finished"})
            by_phone = contacts(srv, cid)
    finally:
        for p in phones.values():
            p.stop()
    assert {n: invites(p) for n, p in phones.items()} == {GIULIA: 1, MARCO: 1, ANNA: 0}
    assert {n: c["state"] for n, c in by_phone.items()} == {GIULIA: "completed", MARCO: "completed",
                                                            ANNA: "opted_out"}
    assert final["by_state"]["opted_out"] == 1 and final["called"] == 2


async def test_outside_the_calling_window_nobody_is_called_until_it_opens(tmp_path):
    """The server's clock reads Wednesday 10:30 in Rome; the campaign may only call on Thursdays."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    phone = await customer(tmp_path, "thursday", "uas_customer_survey.xml", 1, ring=200, before=1500, gap=2500,
                           d1="1", d2="1")
    try:
        async with campaign_server(tmp_path / "srv", {GIULIA: phone.port}, tmp_path / "campaign.db") as srv:
            status, body = await api(srv, "POST", "/campaigns", {
                "name": "thursday", "survey": SURVEY_NAME, "start": True, "contacts": [{"phone": GIULIA}],
                "rules": {"window": {"timezone": "Europe/Rome", "hours": {"thu": "09:00-12:00"}}}})
            assert status == 201, body
            service = srv.server.extras["campaign_service"]
            await until(lambda: body["id"] in service.live(), timeout=10, what="campaign loaded")
            live = service.live()[body["id"]]
            assert live["state"] == "running" and live["in_flight"] == 0
            assert live["next_timer"] == datetime(2025, 3, 13, 9, 0, tzinfo=ZoneInfo("Europe/Rome")).timestamp()
            assert contacts(srv, body["id"])[GIULIA]["state"] == "pending"
    finally:
        phone.stop()
    assert invites(phone) == 0
