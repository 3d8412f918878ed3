"""The post-call survey end to end on the full server: a SIPp caller through the demo IVR (RFC 4733 menu key)
into a queue whose queues.yaml entry offers the csat survey to every caller (share 1.0), a SIPp UAS agent
phone that answers and hangs up first, then the caller answers the survey with RFC 4733 keys.

What was stored is read from the database: the survey response (linked to the call id, its call record, the
agent and the ticket) and its answers, as the survey store wrote them while the caller pressed the keys.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from tests.e2e.harness import SIPP, RtpSink, best_correlation, free_udp_port
from tests.e2e.server_fixture import IN_HOURS, ShiftedClock, contact_server
from tests.e2e.test_routing_sip import GIULIA, caller_vars, ended_record, start_sipp, until, write_queues

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(150),
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]

AGENT = "2001"
# SIPp cannot see the agent hang up, so the survey keys are timed: WAIT ms after the menu key. The survey starts
# about 8.5 s after the menu key on this machine (IVR prompts and voice check, 0.3 s ring, 1.5 s talk), and keys
# typed before it starts are dropped (they were meant for the agent); typed-ahead keys during the survey are
# kept, and the first question waits ~40 s in all (intro and question ~15 s of speech, then 8 s, asked 3 times).
# 20 s sits well inside that window.
WAIT, GAP = 20000, 1500


@contextlib.asynccontextmanager
async def survey_server(tmp_path: Path, agent_port: int, share: float = 1.0):
    root = tmp_path / "srv"
    root.mkdir()
    path = write_queues(tmp_path, {AGENT: agent_port})
    cfg = yaml.safe_load(path.read_text())
    cfg["queues"]["retail_accounts"]["survey"] = {"script": "csat", "share": share}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    async with contact_server(root, clock=ShiftedClock(IN_HOURS),
                              overrides={"CONTACT_SERVER__IVR__QUEUES": str(path)}) as srv:
        yield srv


def stored_responses(srv) -> list[dict[str, Any]]:
    from crm_bridge.survey_models import SurveyResponse

    def read(s):
        return [{"survey": r.survey, "channel": r.channel.value, "status": r.status.value, "call_id": r.call_id,
                 "call_record_id": r.call_record_id, "ticket_id": r.ticket_id, "customer_id": r.customer_id,
                 "agent_id": r.agent_id, "queue": r.queue, "service": r.service, "line": r.line,
                 "phone": r.phone, "language": r.language, "ended_at": r.ended_at,
                 "answers": [(a.question_id, a.digit, a.value_int, a.value_text) for a in r.answers]}
                for r in s.scalars(select(SurveyResponse).order_by(SurveyResponse.id))]
    return srv.query(read)


async def final_response(srv, timeout: float = 30.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await loop.run_in_executor(None, lambda: stored_responses(srv))
        if len(rows) == 1 and rows[0]["status"] != "started":
            return rows[0]
        if loop.time() > deadline:
            raise AssertionError(f"no finished survey response after {timeout} s: {rows}")
        await asyncio.sleep(0.2)


def record_id(srv, call_id: str) -> int:
    from crm_bridge import models as m

    return srv.query(lambda s: s.scalars(select(m.CallRecord.id).where(m.CallRecord.call_id == call_id)).one())


def metric(name: str) -> float:
    from crm_bridge.metrics import REGISTRY

    return REGISTRY.get_sample_value(name, {"channel": "post_call"}) or 0.0


async def test_caller_answers_the_post_call_survey_after_the_agent_hangs_up(tmp_path):
    pa = free_udp_port()
    async with survey_server(tmp_path, pa) as srv:
        control = srv.server.extras["agent_control"]
        assert srv.server.extras["post_call_survey"] is srv.server.extras["queue_service"].post_call
        offered = metric("contact_surveys_offered_total")
        completed = metric("contact_surveys_completed_total")
        agent = await start_sipp(tmp_path, "agent", "uas_agent_answer_hangup.xml", port=pa,
                                 variables={"ring": 300, "hold": 1500})
        await control.login(AGENT, available=True)
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_post_call_survey.xml", remote=srv.address,
                                  variables=caller_vars(GIULIA, "1", rtp, wait=WAIT, gap=GAP, s1=4, s2=1, s3=2))
        try:
            assert await agent.wait() == 0, agent.messages()[-3000:]        # answered, then hung up first
            assert await caller.wait() == 0, caller.messages()[-3000:]      # survey over: the server's BYE
            rec = await ended_record(srv, ani=GIULIA)
            assert rec["agent_id"] == AGENT and rec["end_reason"] == "agent_hangup" and rec["ticket_id"]
            r = await final_response(srv)
            assert r["status"] == "completed" and r["channel"] == "post_call" and r["survey"] == "csat"
            assert r["call_id"] == rec["call_id"] and r["call_record_id"] == record_id(srv, rec["call_id"])
            assert r["ticket_id"] == rec["ticket_id"] and r["customer_id"] == int(srv.customer_id(GIULIA))
            assert r["agent_id"] == AGENT and r["queue"] == "retail_accounts"
            assert r["service"] == "accounts_transfers" and r["line"] == rec["dnis"] and r["phone"] == GIULIA
            assert r["language"] == "it" and r["ended_at"] is not None
            assert r["answers"] == [("q1", "4", 4, None), ("q2", "1", 1, "yes"), ("q3", "2", None, "courtesy")]
            # the caller heard the survey in Italian: its intro (at least its first second: keys may cut the
            # rest) and its closing, which keys never cut
            script = srv.server.extras["post_call_survey"].scripts("csat")
            prompts = srv.server.extras["queue_service"].prompts
            heard = rtp.audio()
            intro = np.asarray(await prompts.render_async(script.intro.ref("it")))
            closing = np.asarray(await prompts.render_async(script.closing.ref("it")))
            assert len(intro) > 8000 and len(closing) > 8000
            assert best_correlation(heard, intro[:8000]) > 0.9
            assert best_correlation(heard, closing) > 0.9
            closing_en = np.asarray(await prompts.render_async(script.closing.ref("en")))
            assert best_correlation(heard, closing_en) < 0.6          # not the English one
            assert metric("contact_surveys_offered_total") == offered + 1
            assert metric("contact_surveys_completed_total") == completed + 1
            # the agent is in wrap-up during the survey and after it, as after any call they hung up
            engine = srv.server.extras["routing_engine"]
            await until(lambda: engine.agent(AGENT).state.value == "wrap_up", what="agent in wrap-up")
            # the results the supervisors see count it
            from crm_bridge.surveys import survey_results

            res = srv.query(lambda s: survey_results(s, "csat", csat_question="q1", csat_scale=(1, 5)))
            assert res["completed"] == 1
        finally:
            rtp.close()
            for p in (agent, caller):
                p.stop()


async def test_caller_hanging_up_during_the_survey_leaves_a_partial_response(tmp_path):
    pa = free_udp_port()
    async with survey_server(tmp_path, pa) as srv:
        control = srv.server.extras["agent_control"]
        agent = await start_sipp(tmp_path, "agent", "uas_agent_answer_hangup.xml", port=pa,
                                 variables={"ring": 300, "hold": 1500})
        await control.login(AGENT, available=True)
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_post_call_survey_hangup.xml", remote=srv.address,
                                  variables=caller_vars(GIULIA, "1", rtp, wait=WAIT, gap=GAP, s1=2, s2=2))
        try:
            assert await agent.wait() == 0, agent.messages()[-3000:]
            assert await caller.wait() == 0, caller.messages()[-3000:]      # the caller's BYE got its 200
            rec = await ended_record(srv, ani=GIULIA)
            r = await final_response(srv)
            assert r["status"] == "partial" and r["call_id"] == rec["call_id"]
            assert r["agent_id"] == AGENT and r["ticket_id"] == rec["ticket_id"]
            assert r["answers"] == [("q1", "2", 2, None), ("q2", "2", 0, "no")]
        finally:
            rtp.close()
            for p in (agent, caller):
                p.stop()


async def test_agent_phone_refers_the_caller_to_the_survey(tmp_path):
    """The queue's share is 0 (nobody is offered the survey by chance); the agent's phone transfers the caller to
    ``sip:survey@server`` with REFER: NOTIFY 200 before the agent's BYE, then the caller answers the survey."""
    pa = free_udp_port()
    async with survey_server(tmp_path, pa, share=0.0) as srv:
        control = srv.server.extras["agent_control"]
        agent = await start_sipp(tmp_path, "agent", "uas_agent_refer.xml", port=pa,
                                 variables={"ring": 300, "hold": 1500, "target": "survey", "server": srv.address})
        await control.login(AGENT, available=True)
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_post_call_survey.xml", remote=srv.address,
                                  variables=caller_vars(GIULIA, "1", rtp, wait=WAIT, gap=GAP, s1=5, s2=1, s3=3))
        try:
            assert await agent.wait() == 0, agent.messages()[-3000:]
            notifies = agent.received("NOTIFY")
            assert notifies[-1].rstrip().endswith("SIP/2.0 200 OK") and len(agent.received("BYE")) == 1
            assert await caller.wait() == 0, caller.messages()[-3000:]
            rec = await ended_record(srv, ani=GIULIA)
            r = await final_response(srv)
            assert r["status"] == "completed" and r["call_id"] == rec["call_id"] and r["agent_id"] == AGENT
            assert r["queue"] == "retail_accounts" and r["ticket_id"] == rec["ticket_id"]
            assert r["answers"] == [("q1", "5", 5, None), ("q2", "1", 1, "yes"), ("q3", "3", None, "competence")]
        finally:
            rtp.close()
            for p in (agent, caller):
                p.stop()
