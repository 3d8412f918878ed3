"""Transfers and voicemail end to end on the full server: SIPp callers through the demo IVR, SIPp UAS instances
as the agents' phones (static SIP URIs), the agent desktop's HTTP API with real agent sessions, and REFER sent by
an agent's phone in the dialog of its leg.

What happened on the wire is read from each SIPp's message log, what routing decided from the engine's events
(``QueueService.history``), what was recorded from the database, and what the next agent's screen pop shows
from the pop hub.
"""

from __future__ import annotations

import contextlib
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import yaml
from sqlalchemy import select

from ivr.media.audio import load_wav_8k
from ivr.media.g711 import ulaw_decode, ulaw_encode
from routing.events import CallAnswered, CallEnded, CallTransferred, ConsultEnded, Offer
from tests.conftest import REPO
from tests.e2e.harness import SCENARIOS, SIPP, RtpSink, best_correlation, free_udp_port
from tests.e2e.server_fixture import IN_HOURS, ShiftedClock, contact_server
from tests.e2e.test_routing_sip import (GIULIA, MARCO, caller_vars, ended_record, history, queue_events, start_sipp,
                                        until, write_queues)

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(150),
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]

A, B, C, D = "2001", "2002", "2003", "2004"   # routing ids = demo agents' extensions (agent_key: extension)
LOGINS = {A: ("a.ferrari", "demo-agent-1"), B: ("l.moretti", "demo-agent-2")}
ADMIN_TOKEN = "e2e-admin-token-transfers-0123456789"
VOICE = REPO / "audio_fixtures" / "voices" / "ls-3005" / "3005-163389-0001.wav"


@contextlib.asynccontextmanager
async def server(tmp_path: Path, agents: dict[str, int], tweak=None):
    root = tmp_path / "srv"
    root.mkdir()
    path = write_queues(tmp_path, agents)
    if tweak is not None:
        cfg = yaml.safe_load(path.read_text())
        tweak(cfg)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    overrides = {"CONTACT_SERVER__IVR__QUEUES": str(path), "CONTACT_SERVER__WEB__ADMIN_TOKEN": ADMIN_TOKEN}
    async with contact_server(root, clock=ShiftedClock(IN_HOURS), overrides=overrides) as srv:
        yield srv


class Desktop:
    """An agent's desktop session over HTTP (cookie login, same-origin POSTs), as the page's script does."""

    def __init__(self, srv, agent_id: str):
        self.base = f"http://127.0.0.1:{srv.server.extras['web_port']}"
        self.login, self.password = LOGINS[agent_id]
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          headers={"Origin": self.base})

    async def __aenter__(self) -> "Desktop":
        async with self.http.post(self.base + "/login", data={"login": self.login, "password": self.password},
                                  allow_redirects=False) as r:
            assert r.status in (302, 303), await r.text()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.close()

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        async with self.http.post(self.base + path, json=body) as r:
            return r.status, await r.json()

    async def get(self, path: str) -> tuple[int, dict]:
        async with self.http.get(self.base + path, headers={"Accept": "application/json"}) as r:
            return r.status, await r.json()


def talking_call(srv, agent_id: str) -> str:
    return srv.server.extras["queue_service"].call_of_agent(agent_id)


def state(srv, agent_id: str) -> str:
    return srv.server.extras["routing_engine"].agent(agent_id).state.value


async def test_blind_transfer_from_the_desktop_to_a_queue_reaches_the_next_agent_with_the_context(tmp_path):
    pa, pb = free_udp_port(), free_udp_port()
    async with server(tmp_path, {A: pa, B: pb}) as srv:
        control = srv.server.extras["agent_control"]
        a = await start_sipp(tmp_path, "ag_a", "uas_agent_answer.xml", port=pa, variables={"ring": 300})
        b = await start_sipp(tmp_path, "ag_b", "uas_agent_answer_hangup.xml", port=pb,
                             variables={"ring": 300, "hold": 2000})
        await control.login(A, available=True)
        await control.login(B, available=False, reason="break")
        post_calls = []

        async def post_call(call, context, agent_id):      # the survey's hook: only after the last agent
            post_calls.append((call.id, agent_id, len(context.get("transfers", []))))
        srv.server.extras["queue_service"].post_call = post_call
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_queue_info_wait_bye.xml", remote=srv.address,
                                  variables=caller_vars(GIULIA, "1", rtp))
        try:
            await until(lambda: state(srv, A) == "on_call", 60, "agent A talking")
            call_id = talking_call(srv, A)
            assert call_id is not None
            await control.set_available(B)
            async with Desktop(srv, B) as desk_b:
                # another agent can neither move A's call nor pretend to have one
                status, body = await desk_b.post("/desktop/transfer", {"call_id": call_id, "mode": "blind",
                                                                       "to_queue": "general"})
                assert status == 403, body
                status, body = await desk_b.post("/desktop/transfer", {"mode": "blind", "to_queue": "general"})
                assert status == 404, body
            async with Desktop(srv, A) as desk_a:
                status, targets = await desk_a.get("/desktop/transfer/targets")
                assert status == 200 and targets["current_call"] == call_id
                assert "general" in [q["name"] for q in targets["queues"]]
                assert [x["id"] for x in targets["agents"]] == [B]
                status, body = await desk_a.post("/desktop/transfer", {"mode": "blind", "to_queue": "nowhere"})
                assert status == 404, body
                status, body = await desk_a.post("/desktop/transfer", {"mode": "blind", "to_queue": "general",
                                                                       "to_agent": B})
                assert status == 400, body
                assert state(srv, A) == "on_call"                      # refusals change nothing
                heard_from = len(rtp.packets)
                status, body = await desk_a.post("/desktop/transfer", {
                    "mode": "blind", "to_queue": "general", "note": "asks about a mortgage"})
                assert status == 200, body
                assert body["call_id"] == call_id
            assert await a.wait() == 0, a.messages()[-3000:]          # A's leg hung up by the server
            assert len(a.received("BYE")) == 1
            assert await caller.wait() == 0, caller.messages()[-3000:]  # B hung up: the caller's BYE
            assert await b.wait() == 0, b.messages()[-3000:]
            invites = b.received("INVITE")
            assert len(invites) == 1 and GIULIA in invites[0]
            # the caller heard "please hold, we are transferring your call" (Italian: Giulia's language)
            from ivr.flow import actions as FA
            from ivr.queueing import _TEXT

            said = await srv.server.extras["queue_service"].prompts.render_async(
                FA.PromptRef(_TEXT["it"]["transferring"], None, "it"))
            heard = RtpSink(packets=rtp.packets[heard_from:]).audio()
            assert best_correlation(heard, np.asarray(said)) > 0.9
            (t,) = history(srv, CallTransferred)
            assert (t.call_id, t.from_agent, t.from_queue, t.to_queue) == (call_id, A, "retail_accounts", "general")
            assert [(e.agent_id, e.queue) for e in history(srv, CallAnswered)] == \
                [(A, "retail_accounts"), (B, "general")]
            await until(lambda: len(history(srv, CallEnded)) == 2, what="both conversations ended")
            assert [(e.agent_id, e.by) for e in history(srv, CallEnded)] == [(A, "transfer"), (B, "agent")]
            offer_b = [o for o in history(srv, Offer) if o.agent_id == B][0]
            assert offer_b.context["customer"]["name"] == "Giulia Bianchi"
            assert offer_b.context["ivr_path"] and offer_b.context["transfers"][0]["note"] == "asks about a mortgage"
            assert state(srv, A) == "wrap_up"
            await until(lambda: state(srv, B) == "wrap_up", what="B in wrap-up")
            assert post_calls == [(call_id, B, 1)]
            # B's screen pop: the customer, and where the call comes from with A's note
            pop = srv.server.extras["hub"].current(B).pop
            assert pop["call_id"] == call_id and pop["customer"]["name"] == "Giulia Bianchi"
            assert pop["transferred_from"] == {"agent": A, "queue": "retail_accounts",
                                               "note": "asks about a mortgage", "warm": False}
            assert pop["ivr_path"]
            rec = await ended_record(srv, ani=GIULIA)
            assert rec["transfers"] == 1 and rec["agent_id"] == B and rec["queue"] == "general"
            assert [ev for ev, _ in queue_events(srv, call_id)] == \
                ["queued", "answered", "transferred", "queued", "answered"]
            # A's wrap-up only adds a note; B's closes the ticket with both notes
            from crm_bridge import models as m

            ticket = lambda: srv.query(lambda s: (lambda t: (t.status, t.disposition, t.notes))(  # noqa: E731
                s.get(m.Ticket, rec["ticket_id"])))
            async with Desktop(srv, A) as desk_a:
                status, body = await desk_a.post("/desktop/wrapup", {"call_id": call_id, "disposition": "resolved",
                                                                     "notes": "sent to general for the mortgage"})
                assert status == 200, body
            st, disp, notes = ticket()
            assert st is not m.TicketStatus.CLOSED and "sent to general for the mortgage" in notes
            async with Desktop(srv, B) as desk_b:
                status, body = await desk_b.post("/desktop/wrapup", {"call_id": call_id, "disposition": "resolved",
                                                                     "notes": "appointment booked"})
                assert status == 200, body
            st, disp, notes = ticket()
            assert st is m.TicketStatus.CLOSED and disp == "resolved"
            assert "sent to general" in notes and "appointment booked" in notes
            # the KPI transfer rate counts it
            from crm_bridge.kpi import kpi_report

            report = srv.query(lambda s: kpi_report(s, datetime(2000, 1, 1, tzinfo=timezone.utc),
                                                    datetime(2100, 1, 1, tzinfo=timezone.utc)))
            overall = report[None]
            assert overall.transfers == 1 and overall.transfer_rate == 1.0
        finally:
            rtp.close()
            for p in (a, b, caller):
                p.stop()


async def test_warm_transfer_consults_then_completes(tmp_path):
    pa, pb = free_udp_port(), free_udp_port()
    async with server(tmp_path, {A: pa, B: pb}) as srv:
        control = srv.server.extras["agent_control"]
        a = await start_sipp(tmp_path, "ag_a", "uas_agent_answer.xml", port=pa, variables={"ring": 300})
        b = await start_sipp(tmp_path, "ag_b", "uas_agent_answer_hangup.xml", port=pb,
                             variables={"ring": 300, "hold": 5000})
        await control.login(A, available=True)
        await control.login(B, available=False, reason="break")
        rtp = await RtpSink().open()
        # digits by INFO: the caller sends no RTP, so what the server plays reaches the caller's port
        caller = await start_sipp(tmp_path, "caller", "uac_queue_info_wait_bye.xml", remote=srv.address,
                                  variables=caller_vars(MARCO, "1", rtp))
        try:
            await until(lambda: state(srv, A) == "on_call", 60, "agent A talking")
            call_id = talking_call(srv, A)
            await control.set_available(B)
            async with Desktop(srv, A) as desk:
                status, body = await desk.post("/desktop/transfer/complete", {})
                assert status == 409, body                               # nothing to complete yet
                status, body = await desk.post("/desktop/transfer", {"mode": "consult", "to_agent": B,
                                                                     "note": "card dispute, already verified"})
                assert status == 200 and body["state"] == "ringing", body
                await until(lambda: state(srv, B) == "on_call", 20, "B answered the consultation")
                assert state(srv, A) == "on_call"                          # A still has the caller
                # meanwhile the caller hears the queue's music on hold
                held_from = len(rtp.packets)
                await until(lambda: len(rtp.packets) - held_from >= 40, 10, "music on hold")
                heard = RtpSink(packets=rtp.packets[held_from:]).audio()
                moh = load_wav_8k(REPO / "audio_fixtures" / "moh" / "gentle_tones.wav")
                assert best_correlation(moh, heard[:4000]) > 0.9
                pop_b = srv.server.extras["hub"].current(B).pop
                assert pop_b["call_id"] == call_id
                assert pop_b["consult_from"]["agent"] == A and pop_b["consult_from"]["note"].startswith("card")
                status, body = await desk.post("/desktop/transfer", {"mode": "blind", "to_queue": "general"})
                assert status == 409, body                               # one thing at a time
                status, body = await desk.post("/desktop/transfer/complete", {})
                assert status == 200 and body["to_agent"] == B, body
            assert await a.wait() == 0, a.messages()[-3000:]            # A's leg ends at the hand-over
            assert state(srv, A) == "wrap_up" and state(srv, B) == "on_call"
            assert await caller.wait() == 0, caller.messages()[-3000:]  # B hangs up after talking
            assert await b.wait() == 0, b.messages()[-3000:]
            assert len(b.received("INVITE")) == 1
            (t,) = history(srv, CallTransferred)
            assert (t.from_agent, t.to_agent) == (A, B)
            await until(lambda: state(srv, B) == "wrap_up", what="B in wrap-up")
            rec = await ended_record(srv, ani=MARCO)
            assert rec["transfers"] == 1 and rec["agent_id"] == B and rec["end_reason"] == "agent_hangup"
        finally:
            rtp.close()
            for p in (a, b, caller):
                p.stop()


async def test_warm_transfer_no_answer_cancel_and_hang_up_bring_the_agent_back_to_the_caller(tmp_path):
    pa, pb, pc, pd = free_udp_port(), free_udp_port(), free_udp_port(), free_udp_port()
    async with server(tmp_path, {A: pa, B: pb, C: pc, D: pd}) as srv:
        control = srv.server.extras["agent_control"]
        a = await start_sipp(tmp_path, "ag_a", "uas_agent_answer_hangup.xml", port=pa,
                             variables={"ring": 300, "hold": 24000})
        b = await start_sipp(tmp_path, "ag_b", "uas_agent_answer.xml", port=pb, variables={"ring": 300})
        c = await start_sipp(tmp_path, "ag_c", "uas_agent_noanswer.xml", port=pc)
        d = await start_sipp(tmp_path, "ag_d", "uas_agent_answer_hangup.xml", port=pd,
                             variables={"ring": 300, "hold": 1000})
        await control.login(A, available=True)
        for x in (B, C, D):
            await control.login(x, available=False, reason="break")
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_queue_wait_bye.xml", remote=srv.address,
                                  variables=caller_vars(GIULIA, "1", rtp))
        try:
            await until(lambda: state(srv, A) == "on_call", 60, "agent A talking")
            call_id = talking_call(srv, A)
            qs = srv.server.extras["queue_service"]
            await control.set_available(C)
            await control.set_available(B)
            # C's phone does not answer: the engine's ring timeout ends the consultation, A keeps the caller
            await qs.consult(None, A, to_agent=C)
            await until(lambda: history(srv, ConsultEnded), 20, "consultation with C over")
            (ended,) = history(srv, ConsultEnded)
            assert (ended.call_id, ended.agent_id, ended.reason) == (call_id, C, "rona")
            assert state(srv, C) == "not_ready" and state(srv, A) == "on_call"
            await until(lambda: srv.server.extras["hub"].current(C) is None, what="C's pop cleared")
            assert await c.wait() == 0 and len(c.received("CANCEL")) == 1
            # B answers, then A cancels: B's leg is hung up, B is free again, A talks with the caller again
            async with Desktop(srv, A) as desk:
                status, body = await desk.post("/desktop/transfer", {"mode": "consult", "to_agent": B})
                assert status == 200, body
                await until(lambda: state(srv, B) == "on_call", 20, "B answered the consultation")
                status, body = await desk.post("/desktop/transfer/cancel", {})
                assert status == 200 and body["state"] == "cancelled", body
            assert await b.wait() == 0, b.messages()[-3000:]            # the server's BYE
            await until(lambda: state(srv, B) == "available", what="B free again")
            await until(lambda: srv.server.extras["hub"].current(B) is None, what="B's pop cleared")
            assert state(srv, A) == "on_call" and talking_call(srv, A) == call_id
            assert [e.reason for e in history(srv, ConsultEnded)] == ["rona", "cancelled"]
            # D answers and hangs up on A: the consultation ends, A is with the caller again
            await control.set_available(D)
            await qs.consult(None, A, to_agent=D)
            assert await d.wait() == 0, d.messages()[-3000:]
            await until(lambda: len(history(srv, ConsultEnded)) == 3, 20, "consultation with D over")
            assert history(srv, ConsultEnded)[-1].reason == "hangup"
            assert state(srv, A) == "on_call" and talking_call(srv, A) == call_id
            assert state(srv, D) == "available"
            assert await caller.wait() == 0, caller.messages()[-3000:]  # A hangs up at the end of its talk
            assert await a.wait() == 0, a.messages()[-3000:]
            assert history(srv, CallTransferred) == []
            rec = await ended_record(srv, ani=GIULIA)
            assert rec["transfers"] == 0 and rec["agent_id"] == A
            assert state(srv, A) == "wrap_up"
        finally:
            rtp.close()
            for p in (a, b, c, d, caller):
                p.stop()


@pytest.mark.parametrize("target", [B, "general"], ids=["agent_extension", "queue"])
async def test_refer_from_the_agents_phone_moves_the_caller_to_another_agent(tmp_path, target):
    pa, pb = free_udp_port(), free_udp_port()
    async with server(tmp_path, {A: pa, B: pb}) as srv:
        control = srv.server.extras["agent_control"]
        a = await start_sipp(tmp_path, "ag_a", "uas_agent_refer.xml", port=pa,
                             variables={"ring": 300, "hold": 1500, "target": target, "server": srv.address})
        b = await start_sipp(tmp_path, "ag_b", "uas_agent_answer_hangup.xml", port=pb,
                             variables={"ring": 300, "hold": 1500})
        await control.login(A, available=True)
        await control.login(B, available=False, reason="break")
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_queue_wait_bye.xml", remote=srv.address,
                                  variables=caller_vars(GIULIA, "1", rtp))
        try:
            await until(lambda: state(srv, A) == "on_call", 60, "agent A talking")
            await control.set_available(B)
            assert await a.wait() == 0, a.messages()[-3000:]
            assert "SIP/2.0 202 Accepted" in a.messages()
            notifies = a.received("NOTIFY")
            assert len(notifies) == 2
            assert "Event: refer" in notifies[0] and "message/sipfrag" in notifies[0]
            assert notifies[0].rstrip().endswith("SIP/2.0 100 Trying")
            assert notifies[1].rstrip().endswith("SIP/2.0 200 OK")
            assert "Subscription-State: terminated" in notifies[1]
            assert len(a.received("BYE")) == 1                       # the server hung up A's leg
            assert await caller.wait() == 0, caller.messages()[-3000:]
            assert await b.wait() == 0, b.messages()[-3000:]
            assert len(b.received("INVITE")) == 1 and GIULIA in b.received("INVITE")[0]
            (t,) = history(srv, CallTransferred)
            assert (t.from_agent, t.to_agent, t.to_queue) == \
                ((A, B, None) if target == B else (A, None, "general"))
            rec = await ended_record(srv, ani=GIULIA)
            assert rec["transfers"] == 1 and rec["agent_id"] == B
            assert rec["queue"] == ("general" if target == "general" else "retail_accounts")
        finally:
            rtp.close()
            for p in (a, b, caller):
                p.stop()


async def test_refer_to_an_unknown_target_gets_sipfrag_404_and_the_call_stays(tmp_path):
    pa = free_udp_port()
    async with server(tmp_path, {A: pa}) as srv:
        control = srv.server.extras["agent_control"]
        a = await start_sipp(tmp_path, "ag_a", "uas_agent_refer.xml", port=pa,
                             variables={"ring": 300, "hold": 1000, "target": "nosuchqueue",
                                        "server": srv.address})
        await control.login(A, available=True)
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_queue_wait_bye.xml", remote=srv.address,
                                  variables=caller_vars(MARCO, "1", rtp))
        try:
            assert await a.wait() == 0, a.messages()[-3000:]
            notifies = a.received("NOTIFY")
            assert len(notifies) == 2 and notifies[1].rstrip().endswith("SIP/2.0 404 Not Found")
            assert a.received("BYE") == []                           # the agent hung up itself
            assert await caller.wait() == 0, caller.messages()[-3000:]
            assert history(srv, CallTransferred) == []
            rec = await ended_record(srv, ani=MARCO)
            assert rec["transfers"] == 0 and rec["agent_id"] == A and rec["end_reason"] == "agent_hangup"
        finally:
            rtp.close()
            for p in (a, caller):
                p.stop()


def _phone_line(x: np.ndarray) -> np.ndarray:
    return ulaw_decode(ulaw_encode(x)).astype(np.float64)


def best_match(stored: np.ndarray, sent: np.ndarray) -> float:
    """Highest normalised correlation of the stored message's middle second against the sent voice."""
    mid = len(stored) // 2
    chunk = stored[mid - 4000: mid + 4000].astype(np.float64)
    chunk -= chunk.mean()
    best = 0.0
    n = len(chunk)
    for off in range(0, len(sent) - n, 4):
        seg = sent[off: off + n]
        den = np.linalg.norm(seg - seg.mean()) * np.linalg.norm(chunk)
        if den > 0:
            best = max(best, float(np.dot(seg - seg.mean(), chunk) / den))
    return best


async def test_voicemail_at_max_wait_stores_the_callers_message_and_notes_it_in_the_crm(tmp_path):
    from crm_bridge import models as m

    pa = free_udp_port()

    def tweak(cfg):
        cfg["queues"]["online_banking"]["max_wait"] = {"seconds": 2, "action": "voicemail",
                                                       "target": "mailbox:online", "max_message_seconds": 20}
        cfg["agents"][0]["skills"]["online_banking"] = 8

    voice = tmp_path / "voice.ulaw"
    subprocess.run(["sox", str(VOICE), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(voice),
                    "pad", "1.0", "4.0"], check=True, capture_output=True)
    scenario = tmp_path / "uac_voicemail.xml"
    scenario.write_text((SCENARIOS / "uac_voicemail.xml").read_text().replace("VOICE_FILE", str(voice)))
    async with server(tmp_path, {A: pa}, tweak) as srv:
        control = srv.server.extras["agent_control"]
        # the only agent with the skill does not answer: RONA, then the max wait sends the caller to voicemail
        n = await start_sipp(tmp_path, "ag_a", "uas_agent_noanswer.xml", port=pa)
        await control.login(A, available=True)
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", str(scenario), remote=srv.address,
                                  variables=caller_vars(GIULIA, "3", rtp, digits2="1", before2=3000,
                                                        speak_after=1000))
        try:
            assert await caller.wait(120) == 0, caller.messages()[-3000:]   # the server's BYE after the message
            box = srv.server.extras["queue_service"].voicemail
            await until(lambda: box.list(), 10, "voicemail stored")
            (vm,) = box.list()
            assert vm.queue == "online_banking" and vm.mailbox == "mailbox:online" and vm.ani == GIULIA
            path = box.wav_path(vm.id)
            assert path.parent == srv.server.cfg.base_dir / "var" / "voicemail"
            stored = load_wav_8k(path)
            assert 1.0 < len(stored) / 8000 < 20.0 and abs(vm.seconds - len(stored) / 8000) < 0.05
            sent = _phone_line(load_wav_8k(VOICE))
            assert best_match(stored, sent) > 0.9                    # the stored WAV is what the caller said
            # the CRM: a note on the call's ticket and an interaction on Giulia's history
            rec = await ended_record(srv, ani=GIULIA)
            assert rec["queue"] == "online_banking" and rec["agent_id"] is None and rec["transfers"] == 0
            notes, summaries = srv.query(lambda s: (
                s.get(m.Ticket, vm.ticket_id).notes,
                [i.summary for i in s.scalars(select(m.Interaction).where(
                    m.Interaction.call_id == vm.call_id, m.Interaction.channel == "voicemail"))]))
            assert f"Voicemail {vm.seconds:.1f} s" in notes and vm.call_id in notes
            assert len(summaries) == 1 and vm.id in summaries[0]
            # supervisors list and play it; agents and strangers cannot
            base = f"http://127.0.0.1:{srv.server.extras['web_port']}"
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/supervisor/voicemail.json", headers=auth) as r:
                    assert r.status == 200
                    items = (await r.json())["items"]
                assert [i["id"] for i in items] == [vm.id]
                async with http.get(base + items[0]["audio_url"], headers=auth) as r:
                    assert r.status == 200 and r.content_type == "audio/wav"
                    assert await r.read() == path.read_bytes()
                async with http.get(base + items[0]["record_url"], headers=auth) as r:
                    detail = await r.json()
                    assert detail["call_record"]["call_id"] == vm.call_id
                async with http.get(base + "/supervisor/voicemail/..%2Fx.wav", headers=auth) as r:
                    assert r.status == 404
                async with http.get(base + "/supervisor/voicemail.json",
                                    headers={"Accept": "application/json"}) as r:
                    assert r.status == 401
                async with http.get(base + items[0]["audio_url"], allow_redirects=False) as r:
                    assert r.status in (302, 401)
            async with Desktop(srv, A) as desk:
                async with desk.http.get(desk.base + "/supervisor/voicemail.json") as r:
                    assert r.status == 403
            assert await n.wait() == 0
        finally:
            rtp.close()
            for p in (n, caller):
                p.stop()


async def test_voicemail_key_while_waiting_leaves_the_line_for_voicemail(tmp_path):
    from routing.events import CallAbandoned, CallLeftQueue

    pa = free_udp_port()

    def tweak(cfg):
        cfg["queues"]["online_banking"]["max_wait"] = {"seconds": 600, "action": "voicemail",
                                                       "target": "mailbox:online", "voicemail_key": "2"}
        cfg["agents"][0]["skills"]["online_banking"] = 8

    voice = tmp_path / "voice.ulaw"
    subprocess.run(["sox", str(VOICE), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(voice),
                    "pad", "1.0", "4.0"], check=True, capture_output=True)
    scenario = tmp_path / "uac_voicemail_key.xml"
    scenario.write_text((SCENARIOS / "uac_voicemail_key.xml").read_text().replace("VOICE_FILE", str(voice)))
    async with server(tmp_path, {A: pa}, tweak) as srv:
        control = srv.server.extras["agent_control"]
        n = await start_sipp(tmp_path, "ag_a", "uas_agent_noanswer.xml", port=pa)
        await control.login(A, available=True)
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", str(scenario), remote=srv.address,
                                  variables=caller_vars(GIULIA, "3", rtp, digits2="1", before2=3000, before3=5000,
                                                        key="2", speak_after=1000))
        try:
            assert await caller.wait(120) == 0, caller.messages()[-3000:]
            (left,) = history(srv, CallLeftQueue)
            assert (left.queue, left.reason) == ("online_banking", "voicemail_key")
            assert history(srv, CallAbandoned) == []
            box = srv.server.extras["queue_service"].voicemail
            await until(lambda: box.list(), 10, "voicemail stored")
            (vm,) = box.list()
            assert vm.queue == "online_banking" and vm.ani == GIULIA
            stored = load_wav_8k(box.wav_path(vm.id))
            assert best_match(stored, _phone_line(load_wav_8k(VOICE))) > 0.9
            assert await n.wait() == 0
        finally:
            rtp.close()
            for p in (n, caller):
                p.stop()


async def test_nobody_logged_in_sends_the_caller_to_voicemail_and_hanging_up_keeps_the_message(tmp_path):
    from routing.events import CallAbandoned, CallLeftQueue

    voice = tmp_path / "voice.ulaw"       # speech without pauses: only the caller's hang-up ends the message
    subprocess.run(["sox", str(VOICE), "-t", "raw", "-e", "mu-law", "-r", "8000", "-c", "1", str(voice),
                    "pad", "0.3", "0.1"], check=True, capture_output=True)
    scenario = tmp_path / "uac_voicemail_hangup.xml"
    scenario.write_text((SCENARIOS / "uac_voicemail_hangup.xml").read_text().replace("VOICE_FILE", str(voice)))
    async with server(tmp_path, {A: free_udp_port()}) as srv:         # A stays logged out
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", str(scenario), remote=srv.address,
                                  variables=caller_vars(GIULIA, "3", rtp, digits2="1", before2=3000,
                                                        speak_after=1000, hold=30000))
        try:
            assert await caller.wait(120) == 0, caller.messages()[-3000:]      # the caller's own BYE
            (left,) = history(srv, CallLeftQueue)
            assert (left.queue, left.reason) == ("online_banking", "voicemail_no_agents")
            assert history(srv, CallAbandoned) == []
            box = srv.server.extras["queue_service"].voicemail
            await until(lambda: box.list(), 10, "voicemail stored")
            (vm,) = box.list()
            stored = load_wav_8k(box.wav_path(vm.id))
            assert len(stored) / 8000 > 2.0
            assert best_match(stored, _phone_line(load_wav_8k(VOICE))) > 0.9
            rec = await ended_record(srv, ani=GIULIA)
            assert rec["end_reason"] == "bye_remote" and rec["queue"] == "online_banking"
        finally:
            rtp.close()
            caller.stop()
