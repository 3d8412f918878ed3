"""``kill -9`` of ``contact-server serve`` while a campaign has one customer answering the survey and one
phone ringing: after the restart neither is dialled again (each SIPp customer counts the INVITEs it got), both
are settled in the database, and the campaign goes on with the others."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.e2e.campaign_survey import SURVEY_FILES, SURVEY_NAME, prepare_database
from tests.e2e.harness import SIPP
from tests.e2e.server_fixture import copy_config, server_environ
from tests.e2e.test_campaign_sip import ANNA, GIULIA, MARCO, customer, invites
from tests.e2e.test_routing_sip import until
from tests.e2e.test_shutdown import ServeProcess

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(240),
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]


def _contacts(server: ServeProcess) -> dict[str, tuple[str, int, str | None]]:
    return {p: (s, a, o) for p, s, a, o in server.rows(
        "select phone, state, attempts, last_outcome from campaign_contacts")}


async def test_kill9_mid_campaign_redials_nobody(tmp_path):
    from ivr.cli import main

    answering = await customer(tmp_path, "answering", "uas_customer_survey.xml", 2, ring=200, before=60000,
                               gap=1000, d1="1", d2="1")
    ringing = await customer(tmp_path, "ringing", "uas_agent_noanswer.xml", 2)
    later = await customer(tmp_path, "later", "uas_customer_survey.xml", 2, ring=200, before=1500, gap=2500,
                           d1="2", d2="3")
    routes = [{"prefix": GIULIA, "trunk": f"sip:{{number}}@127.0.0.1:{answering.port}"},
              {"prefix": MARCO, "trunk": f"sip:{{number}}@127.0.0.1:{ringing.port}"},
              {"prefix": ANNA, "trunk": f"sip:{{number}}@127.0.0.1:{later.port}"}]
    root = tmp_path / "srv"
    root.mkdir()
    copy_config(root)
    for rel, text in SURVEY_FILES.items():
        (root / "config" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "config" / rel).write_text(text)
    server = ServeProcess(root)
    from voiceauth.crypto import generate_key
    server._env = dict(os.environ) | server_environ(root) | {
        "VOICEAUTH_KEY": generate_key(), "PYTHONUNBUFFERED": "1",
        "CONTACT_SERVER__OUTBOUND__TRUNK": "sip:{number}@127.0.0.1:9",
        "CONTACT_SERVER__OUTBOUND__ROUTES": json.dumps(routes),
        "CONTACT_SERVER__OUTBOUND__POLL_SECONDS": "0.5"}
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"phone\n{GIULIA}\n{MARCO}\n{ANNA}\n")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"window": {"timezone": "UTC", "hours": {"mon-sun": "00:00-24:00"}},
                                 "pacing": {"max_concurrent": 2, "calls_per_minute": 60, "ring_timeout": 60}}))
    db_url = f"sqlite:///{server.db_path}"
    prepare_database(server.db_path)
    assert main(["campaign", "--db", db_url, "create", "--name", "kill", "--survey", SURVEY_NAME, "--csv",
                 str(csv_path), "--rules", str(rules), "--start"]) == 0
    try:
        await server.start()
        await until(lambda: _contacts(server).get(GIULIA, ("",))[0] == "answered" and
                    _contacts(server).get(MARCO, ("",))[0] == "dialing", timeout=60, what="one answering, one ringing")
        assert invites(answering) == 1 and invites(ringing) == 1 and invites(later) == 0
        server.kill9()
        assert await server.wait_exit(10) == -signal.SIGKILL
        await server.start(seed_demo=False)
        await until(lambda: server.rows("select state from campaigns") == [("finished",)], timeout=90,
                    what="campaign finished after the restart")
        assert "not dialled again" in server.log
    finally:
        await server.stop()
        for p in (answering, ringing, later):
            p.stop()
    assert (invites(answering), invites(ringing), invites(later)) == (1, 1, 1)
    assert _contacts(server) == {GIULIA: ("answered", 1, "hung_up"), MARCO: ("failed", 1, "interrupted"),
                                 ANNA: ("completed", 1, "completed")}
    outcomes = sorted(o for (o,) in server.rows("select outcome from campaign_attempts"))
    assert outcomes == ["completed", "interrupted", "interrupted"]
