"""Routing end to end: SIPp callers through the demo IVR (RFC 4733 menu digits) into queues of the full server,
SIPp UAS instances as the agents' phones (static SIP URIs in a test queues.yaml) answering, not answering,
busy and hanging up, and a SIPp UAS as the customer called back.

Who got which call is read from each phone's own SIPp message log (the INVITE it received names the caller);
what routing decided from the engine's events (``QueueService.history``); what was recorded from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from routing.events import (CallAbandoned, CallAnswered, CallbackScheduled, CallEnded, CancelOffer, Offer,
                            PlaceCallback)
from tests.conftest import REPO
from tests.e2e.harness import SCENARIOS, SIPP, RtpSink, free_udp_port
from tests.e2e.server_fixture import IN_HOURS, ShiftedClock, contact_server

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(150),
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]

RETAIL = "800100"
GIULIA = "+393471000001"        # demo customer, identified by caller number, Italian
MARCO = "+393471000002"
ELENA = "+393381000009"


@dataclass
class Sipp:
    """A SIPp process in the background (a phone or a caller) and its message log."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    async def wait(self, timeout: float = 90) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.stop()
            raise AssertionError(f"{self.name} still running after {timeout} s:\n{self.messages()[-3000:]}")

    def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    def messages(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def received(self, method: str) -> list[str]:
        """Requests of ``method`` this SIPp received (each as its text)."""
        out = []
        for block in self.messages().split("----------------------------------------------- "):
            if "message received" in block:
                body = block.split("\n", 2)[-1].lstrip()
                if body.startswith(method + " "):
                    out.append(body)
        return out


async def start_sipp(tmp: Path, name: str, scenario: str, *, remote: str | None = None, port: int | None = None,
                     variables: dict[str, Any] | None = None, calls: int = 1, timeout: int = 100) -> Sipp:
    port = port or free_udp_port()
    log = tmp / f"{name}.messages.log"
    args = [SIPP] + ([remote] if remote else []) + [
        "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port), "-mp", str(free_udp_port() & ~1),
        "-m", str(calls), "-timeout", str(timeout), "-timeout_error", "-nostdin", "-trace_msg", "-message_file",
        str(log), "-trace_err", "-error_file", str(tmp / f"{name}.errors.log")]
    for k, v in (variables or {}).items():
        args += ["-set", k, str(v)]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    return Sipp(name, proc, port, log)


def write_queues(root: Path, agents: dict[str, int]) -> Path:
    """The demo queues.yaml (the IVR names its queues) with our agents: static URIs on the SIPp phones."""
    cfg = yaml.safe_load((REPO / "config" / "queues.yaml").read_text())
    cfg["defaults"]["ring_timeout_seconds"] = 4
    cfg["defaults"]["wrap_up_seconds"] = 60
    for q in cfg["queues"].values():
        q["announcements"]["music_on_hold"] = "audio_fixtures/moh/gentle_tones.wav"
        q.pop("steps", None)
        q.pop("wrap_up_seconds", None)
    cfg["queues"]["general"]["ring_timeout_seconds"] = 60     # the abandon test hangs up while it rings
    cfg["agents"] = [{"id": aid, "name": f"Agent {aid}", "phone": {"uri": f"sip:{aid}@127.0.0.1:{port}"},
                      "skills": {"accounts": 8, "general": 8, "language_it": 10}}
                     for aid, port in agents.items()]
    path = root / "test_queues.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def routing_server(tmp_path: Path, agents: dict[str, int]):
    root = tmp_path / "srv"
    root.mkdir()
    queues = write_queues(tmp_path, agents)
    async with contact_server(root, clock=ShiftedClock(IN_HOURS),
                              overrides={"CONTACT_SERVER__IVR__QUEUES": str(queues)}) as srv:
        yield srv


def caller_vars(ani: str, digits: str, rtp: RtpSink, **more) -> dict[str, Any]:
    return {"caller": ani, "dialed": RETAIL, "rtpport": rtp.port, "digits": digits, "before": 1500, **more}


def history(srv, kind) -> list:
    return [e for e in srv.server.extras["queue_service"].history if isinstance(e, kind)]


async def until(pred, timeout: float = 30.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def ended_record(srv, timeout: float = 20.0, **where) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await loop.run_in_executor(None, lambda: srv.call_records(**where))
        if len(rows) == 1 and rows[0]["status"] == "ended":
            return rows[0]
        if loop.time() > deadline:
            raise AssertionError(f"no ended call record with {where}: {rows}")
        await asyncio.sleep(0.1)


def queue_events(srv, call_id: str) -> list[tuple[str, str | None]]:
    from sqlalchemy import select

    from crm_bridge import models as m

    return srv.query(lambda s: [(e.event, e.agent_id) for e in s.scalars(
        select(m.QueueEvent).where(m.QueueEvent.call_id == call_id).order_by(m.QueueEvent.id))])


async def test_agent_answers_then_hangs_up_and_wraps_up(tmp_path):
    pa, pb = free_udp_port(), free_udp_port()
    async with routing_server(tmp_path, {"ag_a": pa, "ag_b": pb}) as srv:
        control = srv.server.extras["agent_control"]
        a = await start_sipp(tmp_path, "ag_a", "uas_agent_answer_hangup.xml", port=pa,
                             variables={"ring": 500, "hold": 2000})
        b = await start_sipp(tmp_path, "ag_b", "uas_agent_answer.xml", port=pb, variables={"ring": 500})
        await control.login("ag_a", available=True)        # ag_a idles longest: the strategy picks it
        await control.login("ag_b", available=False, reason="break")
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_queue_wait_bye.xml", remote=srv.address,
                                  variables=caller_vars(GIULIA, "1", rtp))
        try:
            assert await caller.wait() == 0, caller.messages()[-3000:]
            assert await a.wait() == 0, a.messages()[-3000:]
            invites = a.received("INVITE")
            assert len(invites) == 1 and GIULIA in invites[0]          # the agent's phone showed the caller
            assert b.received("INVITE") == [] and b.proc.returncode is None     # paused: never rung
            engine = srv.server.extras["routing_engine"]
            await until(lambda: engine.agent("ag_a").state.value == "wrap_up", what="ag_a in wrap-up")
            answered = history(srv, CallAnswered)
            assert [(e.agent_id, e.queue) for e in answered] == [("ag_a", "retail_accounts")]
            ended = history(srv, CallEnded)
            assert [(e.agent_id, e.by) for e in ended] == [("ag_a", "agent")]
            rec = await ended_record(srv, ani=GIULIA)
            assert rec["queue"] == "retail_accounts" and rec["service"] == "accounts_transfers"
            assert rec["agent_id"] == "ag_a" and rec["answered_at"] is not None
            assert rec["wait_seconds"] is not None and rec["wait_seconds"] >= 0
            assert rec["end_reason"] == "agent_hangup"
            assert [ev for ev, _ in queue_events(srv, answered[0].call_id)] == ["queued", "answered"]
            # the desktop ends wrap-up with a disposition: the agent is available again
            status = await control.wrap_up_done("ag_a", disposition="resolved")
            assert status.state == "available"
        finally:
            rtp.close()
            for p in (a, b, caller):
                p.stop()


async def test_ring_no_answer_and_busy_go_not_ready_and_the_next_agent_gets_the_call(tmp_path):
    pn, pz, pb = free_udp_port(), free_udp_port(), free_udp_port()
    async with routing_server(tmp_path, {"ag_noanswer": pn, "ag_busy": pz, "ag_ok": pb}) as srv:
        control = srv.server.extras["agent_control"]
        engine = srv.server.extras["routing_engine"]
        n = await start_sipp(tmp_path, "ag_noanswer", "uas_agent_noanswer.xml", port=pn)
        z = await start_sipp(tmp_path, "ag_busy", "uas_agent_busy.xml", port=pz)
        b = await start_sipp(tmp_path, "ag_ok", "uas_agent_answer_hangup.xml", port=pb,
                             variables={"ring": 300, "hold": 1500})
        for aid in ("ag_noanswer", "ag_busy", "ag_ok"):             # longest idle first: this order
            await control.login(aid, available=True)
            await asyncio.sleep(0.05)
        rtp = await RtpSink().open()
        caller = await start_sipp(tmp_path, "caller", "uac_queue_wait_bye.xml", remote=srv.address,
                                  variables=caller_vars(MARCO, "1", rtp))
        try:
            assert await caller.wait() == 0, caller.messages()[-3000:]
            for p in (n, z, b):
                assert await p.wait() == 0, p.name + p.messages()[-3000:]
            assert len(n.received("INVITE")) == 1 and len(n.received("CANCEL")) == 1   # rang, then cancelled
            assert len(z.received("INVITE")) == 1
            assert len(b.received("INVITE")) == 1 and MARCO in b.received("INVITE")[0]
            offers = [e.agent_id for e in history(srv, Offer)]
            assert offers == ["ag_noanswer", "ag_busy", "ag_ok"]
            assert [(e.agent_id, e.reason) for e in history(srv, CancelOffer)] == [("ag_noanswer", "rona")]
            assert engine.agent("ag_noanswer").state.value == "not_ready"
            assert engine.agent("ag_noanswer").reason == "rona"
            assert engine.agent("ag_busy").state.value == "not_ready"
            assert engine.agent("ag_busy").reason == "busy"
            rec = await ended_record(srv, ani=MARCO)
            assert rec["agent_id"] == "ag_ok" and rec["queue"] == "retail_accounts"
            # an agent put not-ready by RONA comes back from the desktop
            assert (await control.set_available("ag_noanswer")).state == "available"
        finally:
            rtp.close()
            for p in (n, z, b, caller):
                p.stop()


async def test_caller_hanging_up_while_queued_is_an_abandon_and_the_ringing_phone_is_cancelled(tmp_path):
    pn = free_udp_port()
    async with routing_server(tmp_path, {"ag_slow": pn}) as srv:
        control = srv.server.extras["agent_control"]
        engine = srv.server.extras["routing_engine"]
        n = await start_sipp(tmp_path, "ag_slow", "uas_agent_noanswer.xml", port=pn)
        await control.login("ag_slow", available=True)
        rtp = await RtpSink().open()
        # "0": the operator queue (general), whose 60 s ring outlasts the caller's patience
        caller = await start_sipp(tmp_path, "caller", "uac_queue_hangup.xml", remote=srv.address,
                                  variables=caller_vars(ELENA, "0", rtp, hold=12000))
        try:
            assert await caller.wait() == 0, caller.messages()[-3000:]
            assert await n.wait() == 0, n.messages()[-3000:]
            assert len(n.received("INVITE")) == 1 and len(n.received("CANCEL")) == 1
            await until(lambda: history(srv, CallAbandoned), what="abandon")
            (ab,) = history(srv, CallAbandoned)
            assert ab.queue == "general" and ab.waited_seconds > 0
            assert engine.agent("ag_slow").state.value == "available"      # not the agent's fault
            rec = await ended_record(srv, ani=ELENA)
            assert rec["queue"] == "general" and rec["agent_id"] is None and rec["answered_at"] is None
            assert rec["wait_seconds"] is not None and rec["wait_seconds"] > 0
            assert [ev for ev, _ in queue_events(srv, ab.call_id)] == ["queued", "abandoned"]
        finally:
            rtp.close()
            for p in (n, caller):
                p.stop()


async def test_callback_keeps_the_place_and_connects_agent_and_customer(tmp_path):
    pa = free_udp_port()
    async with routing_server(tmp_path, {"ag_cb": pa}) as srv:
        control = srv.server.extras["agent_control"]
        engine = srv.server.extras["routing_engine"]
        agent = await start_sipp(tmp_path, "ag_cb", "uas_agent_answer.xml", port=pa, variables={"ring": 300})
        await control.login("ag_cb", available=False, reason="meeting")   # nobody to answer: EWT unknown
        rtp = await RtpSink().open()
        cport = free_udp_port()
        caller = await start_sipp(tmp_path, "caller", "uac_queue_callback.xml", remote=srv.address, port=cport,
                                  variables=caller_vars(GIULIA, "1", rtp, digits2="1", before2=9000))
        customer = None
        try:
            assert await caller.wait() == 0, caller.messages()[-3000:]      # the server said goodbye (BYE)
            (sched,) = history(srv, CallbackScheduled)
            assert sched.queue == "retail_accounts" and sched.number == GIULIA and sched.position == 1
            assert engine.waiting_calls("retail_accounts") == [sched.call_id]  # place kept, caller gone
            # the customer's phone answers on the trunk address the call came from
            customer = await start_sipp(tmp_path, "customer", "uas_agent_answer_hangup.xml", port=cport,
                                        variables={"ring": 500, "hold": 2000})
            await asyncio.sleep(0.3)
            await control.set_available("ag_cb")
            assert await customer.wait() == 0, customer.messages()[-3000:]
            assert await agent.wait() == 0, agent.messages()[-3000:]
            (placed,) = history(srv, PlaceCallback)
            assert (placed.call_id, placed.agent_id, placed.number) == (sched.call_id, "ag_cb", GIULIA)
            invites = customer.received("INVITE")
            assert len(invites) == 1 and invites[0].startswith(f"INVITE sip:{GIULIA}@127.0.0.1:{cport}")
            await until(lambda: history(srv, CallEnded), what="callback ended")
            assert [(e.agent_id, e.by) for e in history(srv, CallEnded)] == [("ag_cb", "caller")]
            assert engine.agent("ag_cb").state.value == "wrap_up"
            original = await ended_record(srv, ani=GIULIA, line=RETAIL)
            assert original["transfers"] == 1
            cb = await ended_record(srv, line="callback")
            assert cb["queue"] == "retail_accounts" and cb["agent_id"] == "ag_cb"
            assert cb["ani"] == GIULIA and cb["wait_seconds"] is not None and cb["wait_seconds"] > 0
        finally:
            rtp.close()
            for p in (agent, caller, customer):
                if p is not None:
                    p.stop()


async def test_feature_codes_from_the_agents_own_phone(tmp_path):
    pa = free_udp_port()
    async with routing_server(tmp_path, {"ag_fc": pa}) as srv:
        engine = srv.server.extras["routing_engine"]
        rtp = await RtpSink().open()
        try:
            for code, state in (("*50", "available"), ("*51", "paused"), ("*50", "available"), ("*52", "offline")):
                phone = await start_sipp(tmp_path, f"fc{code[1:]}", "uac_server_hangs_up.xml", remote=srv.address,
                                         port=pa, variables={"caller": "ag_fc", "dialed": code, "rtpport": rtp.port},
                                         timeout=30)
                assert await phone.wait() == 0, phone.messages()[-3000:]
                assert engine.agent("ag_fc").state.value == state, code
            assert engine.agent("ag_fc").state.value == "offline"
            # the same code from any other address is refused and changes nothing
            stranger = await start_sipp(tmp_path, "stranger", "uac_server_hangs_up.xml", remote=srv.address,
                                        variables={"caller": "ag_fc", "dialed": "*50", "rtpport": rtp.port},
                                        timeout=20)
            assert await stranger.wait() != 0
            assert "SIP/2.0 403" in stranger.messages()
            assert engine.agent("ag_fc").state.value == "offline"
        finally:
            rtp.close()
