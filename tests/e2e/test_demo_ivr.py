"""The shipped demo IVR (config/) on the full server, driven by SIPp callers with RFC 4733 DTMF.

Every call of the module is placed once, concurrently, against one server (first the office-hours calls, then
the clock jumps to a Sunday night and the out-of-hours calls run); each test then checks one call's record in
the database: the recorded IVR path (``call_records.ivr_path``), exit, identification, service and queue.

Routing is not wired in this build (``ContactCentreServices.queue_handoff`` is None): a queued call is hung up
after the IVR, so "queued" here means the IVR handed the call to the named queue with that service and priority.
The demo customers have no voiceprint: the voice step answers ``not_enrolled`` without recording and the call
goes on as not verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from tests.e2e.harness import RtpSink, SippResult
from tests.e2e.server_fixture import (IN_HOURS, OUT_OF_HOURS, ContactServer, ShiftedClock, contact_server,
                                       run_sipp_call, sipp_call_id)

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(240)]

RETAIL, BUSINESS = "800100", "800200"
# When the digits go (ms after the previous step began; SIPp sends 400 ms of filler, then 0.2 s per digit).
# Retail: welcome (1.5 s) and greeting (about 1.5 s) are over by 4 s and the main menu prompt lasts 8.5 s, so 6 s
# falls inside it whatever the server's speed; the sub-menu prompt (6-7 s) starts at that digit.
MENU, SUBMENU, BUSINESS_MENU = 6000, 2500, 7000


@dataclass(frozen=True)
class Caller:
    """One SIPp call: who calls which line, and the DTMF steps (pause in ms before each, digits)."""

    ani: str
    dnis: str
    steps: tuple[tuple[int, str], ...] = ()
    hangup_after_ms: int | None = None  # the caller hangs up (uac_basic) instead of waiting for the server
    ivr_limit: float = 45.0  # seconds; a call still in the IVR then is ended (every path here is shorter)

    def sipp(self, rtpport: int) -> tuple[str, dict[str, Any]]:
        if self.hangup_after_ms is not None:
            return "uac_basic.xml", {"caller": self.ani, "dialed": self.dnis, "hold": self.hangup_after_ms,
                                     "rtpport": rtpport}
        assert len(self.steps) <= 3
        variables: dict[str, Any] = {"caller": self.ani, "dialed": self.dnis, "rtpport": rtpport}
        for i in range(3):
            pause, digits = self.steps[i] if i < len(self.steps) else (0, "-")
            variables[f"d{i + 1}"], variables[f"p{i + 1}"] = digits, pause
        return "uac_ivr_dtmf.xml", variables


# Demo customers (config/demo_customers.yaml) are identified by their mobile number; +39333000xxxx are unknown.
IN_HOURS_CALLS = {
    "retail_1_accounts": Caller("+393471000001", RETAIL, ((MENU, "1"),)),
    "retail_2_cards_other": Caller("+393471000002", RETAIL, ((MENU, "2"), (SUBMENU, "2"))),
    "retail_3_online_password": Caller("+393351000003", RETAIL, ((MENU, "3"), (SUBMENU, "1"))),
    "retail_4_trading": Caller("+393281000006", RETAIL, ((MENU, "4"),)),
    "retail_0_agent": Caller("+393381000009", RETAIL, ((MENU, "0"),)),
    "retail_0_agent_english": Caller("+393401000005", RETAIL, ((MENU, "0"),)),
    "retail_lost_card": Caller("+393461000012", RETAIL, ((MENU, "2"), (SUBMENU, "1"))),
    # "3" then "1" typed during the welcome: both should be kept for the two menus
    "retail_typeahead": Caller("+393661000015", RETAIL, ((500, "31"),)),
    "business_1_accounts": Caller("+393391000004", BUSINESS, ((BUSINESS_MENU, "1"),)),
    "business_critical_online": Caller("+393491000008", BUSINESS, ((BUSINESS_MENU, "3"),)),
    # unknown caller: account 10000001 during the account prompt, its demo PIN 1357, then "1" at the main menu
    "unknown_pin_ok": Caller("+393330000101", RETAIL, ((2000, "10000001"), (2500, "1357#"), (2500, "1")),
                             ivr_limit=25),
    # unknown caller, account 10000002 and a wrong PIN, three times: the CRM locks the PIN
    "unknown_pin_locked": Caller("+393330000102", RETAIL, ((2000, "100000020000#"), (3500, "100000020000#"),
                                                          (3500, "100000020000#"))),
    # the caller of the field report: not a demo customer, hangs up while asked for the account number
    "unknown_hangs_up": Caller("+393331234567", RETAIL, hangup_after_ms=4000),
}
OUT_OF_HOURS_CALLS = {
    "closed_accounts": Caller("+393201000010", RETAIL, ((MENU, "1"),)),
    "closed_lost_card": Caller("+393291000011", RETAIL, ((MENU, "2"), (SUBMENU, "1"))),
}


@dataclass
class Placed:
    caller: Caller
    sipp: SippResult
    record: dict[str, Any] | None
    heard_samples: int

    @property
    def path(self) -> list[dict[str, Any]]:
        return self.record["ivr_path"]

    @property
    def nodes(self) -> list[str]:
        return [f"{e['flow']}.{e['node']}" for e in self.path if e["event"] == "node"]

    @property
    def exit(self) -> dict[str, Any]:
        last = self.path[-1]
        assert last["event"] == "exit", last
        return last

    def results(self, what: str) -> list[str]:
        return [e["result"] for e in self.path if e["event"] == "result" and e["what"] == what]

    def check_call(self) -> dict[str, Any]:
        """The SIPp call succeeded, the caller heard prompts, and the record is complete."""
        assert self.sipp.rc == 0, self.sipp.stdout[-1500:] + self.sipp.errors[-1500:]
        assert self.heard_samples > 8000, "the caller heard less than a second of prompts"
        assert self.record is not None, "no ended call record"
        assert self.record["status"] == "ended"
        return self.record


@dataclass
class Campaign:
    open: ContactServer
    closed: ContactServer
    calls: dict[str, Placed] = field(default_factory=dict)


async def _place(srv: ContactServer, name: str, caller: Caller, tmp) -> Placed:
    sink = await RtpSink().open()
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    call_id = sipp_call_id(tag)
    try:
        scenario, variables = caller.sipp(sink.port)
        sipp = asyncio.ensure_future(run_sipp_call(srv.address, scenario, variables=variables, timeout=90, tmp=tmp,
                                                   tag=tag))
        if caller.hangup_after_ms is None:
            # the IVR part is what is under test: once it is over, end the call (with routing wired in, a
            # queued caller would wait for an agent; without it, the server has already hung up)
            with contextlib.suppress(AssertionError):
                await srv.wait_ivr_finished(timeout=caller.ivr_limit, call_id=call_id)
            srv.hang_up(call_id)
        res = await sipp
        try:
            record = await srv.wait_call_ended(timeout=15, call_id=call_id)
        except AssertionError:
            record = None
    finally:
        sink.close()
    return Placed(caller, res, record, len(sink.audio()))


async def _place_all(srv: ContactServer, calls: dict[str, Caller], tmp) -> dict[str, Placed]:
    placed = await asyncio.gather(*(_place(srv, name, c, tmp) for name, c in calls.items()))
    return dict(zip(calls, placed))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def campaign(tmp_path_factory):
    """Two demo servers, one on a working day in office hours and one on a Sunday night, every call at once."""
    async with contact_server(tmp_path_factory.mktemp("open"), clock=ShiftedClock(IN_HOURS)) as open_, \
            contact_server(tmp_path_factory.mktemp("closed"), clock=ShiftedClock(OUT_OF_HOURS)) as closed:
        out = Campaign(open_, closed)
        tmp = tmp_path_factory.mktemp("sipp")
        for batch in await asyncio.gather(_place_all(open_, IN_HOURS_CALLS, tmp),
                                          _place_all(closed, OUT_OF_HOURS_CALLS, tmp)):
            out.calls.update(batch)
        yield out


def _identified_queued(p: Placed, *, customer_ani: str, queue: str, service: str, priority: int = 0,
                       critical: bool = False) -> None:
    rec = p.check_call()
    assert rec["identified_by"] in ("ani", "pai")
    assert rec["customer_id"] is not None
    assert rec["ani"] == customer_ani
    assert rec["ivr_exit"] == "queued"
    assert rec["service"] == service
    ex = p.exit
    assert (ex["exit"], ex["queue"], ex["service"], ex["priority"], ex["critical"]) == \
        ("queued", queue, service, priority, critical)
    assert ex["identified_by"] == "ani" and ex["verified"] is False
    # no voiceprint: answered before any recording, then the not-verified branch
    assert p.results("verify_voice") == ["not_enrolled"]
    assert rec["verification"]["decision"] == "not_enrolled"
    assert p.results("lookup") == ["found"]
    i = p.nodes.index("handoff.voice")
    assert p.nodes[i + 1:i + 3] == ["handoff.not_verified", "handoff.hours"]
    assert p.nodes[-1] == "handoff.to_queue"


MENU_CHOICES = {
    "retail_1_accounts": (["1"], ["retail.accounts"], "retail_accounts", "accounts_transfers"),
    "retail_2_cards_other": (["2", "2"], ["retail.cards_menu", "retail.cards_other"], "cards", "cards"),
    "retail_3_online_password": (["3", "1"], ["retail.online_menu", "retail.online_password"], "online_banking",
                                 "online_password"),
    "retail_4_trading": (["4"], ["retail.trading"], "trading", "trading"),
    "retail_0_agent": (["0"], ["retail.agent"], "general", "general"),
}


@pytest.mark.parametrize("name", list(MENU_CHOICES))
def test_retail_top_level_branch(campaign, name):
    p = campaign.calls[name]
    digits, nodes, queue, service = MENU_CHOICES[name]
    _identified_queued(p, customer_ani=p.caller.ani, queue=queue, service=service)
    # the path: welcome, identified by number, greeted, main menu, the branch chosen by the digits pressed
    assert p.nodes[:4] == ["retail.welcome", "retail.identify", "retail.greet", "retail.main_menu"]
    i = p.nodes.index("retail.main_menu")
    assert p.nodes[i + 1:i + 1 + len(nodes)] == nodes
    assert [e["digits"] for e in p.path if e["event"] == "digits"] == digits
    assert [e["reason"] for e in p.path if e["event"] == "digits"] == ["max"] * len(digits)
    # the greeting was rendered for the customer by name
    greet = [e for e in p.path if e["event"] == "prompt" and e["node"] == "greet"]
    assert len(greet) == 1 and greet[0]["text"].startswith("Buongiorno ") and greet[0]["text"] != "Buongiorno."


def test_english_customer_asking_for_an_agent_goes_to_the_english_desk(campaign):
    p = campaign.calls["retail_0_agent_english"]
    _identified_queued(p, customer_ani=p.caller.ani, queue="english_desk", service="general")
    assert "handoff.english_desk" in p.nodes
    assert p.exit["language"] == "en"
    prompts = [e for e in p.path if e["event"] == "prompt"]
    assert prompts[0]["node"] == "welcome" and prompts[0]["language"] == "it"  # before identification
    assert [e["language"] for e in prompts[1:]] == ["en"] * (len(prompts) - 1)


def test_retail_lost_card_is_queued_critical(campaign):
    p = campaign.calls["retail_lost_card"]
    _identified_queued(p, customer_ani=p.caller.ani, queue="cards_lost_stolen", service="card_block",
                       priority=90, critical=True)
    i = p.nodes.index("retail.main_menu")
    assert p.nodes[i + 1:i + 3] == ["retail.cards_menu", "retail.lost_stolen"]
    assert "handoff.language" not in p.nodes  # card blocking goes straight to its queue
    assert [e["digits"] for e in p.path if e["event"] == "digits"] == ["2", "1"]


def test_digits_typed_ahead_during_welcome_and_greeting_are_all_kept(campaign):
    p = campaign.calls["retail_typeahead"]
    p.check_call()
    i = p.nodes.index("retail.main_menu")
    assert p.nodes[i + 1:i + 3] == ["retail.online_menu", "retail.online_password"]


def test_business_line_has_its_own_menu_and_queues(campaign):
    p = campaign.calls["business_1_accounts"]
    _identified_queued(p, customer_ani=p.caller.ani, queue="business_accounts", service="business_accounts")
    assert p.nodes[:5] == ["business.welcome", "business.identify", "business.greet", "business.priority",
                           "business.menu"]
    assert p.record["dnis"] == BUSINESS
    assert not any(n.startswith("retail.") for n in p.nodes)


def test_business_critical_customer_gets_priority(campaign):
    p = campaign.calls["business_critical_online"]
    _identified_queued(p, customer_ani=p.caller.ani, queue="business_online_banking",
                       service="business_online_banking", priority=50)
    assert "business.critical" in p.nodes


def test_unknown_caller_identified_by_account_and_pin(campaign):
    p = campaign.calls["unknown_pin_ok"]
    rec = p.check_call()
    assert p.results("lookup") == ["not_found"]
    digits = [e["digits"] for e in p.path if e["event"] == "digits"]
    assert digits[:2] == ["10000001", "****"]  # the PIN is masked in the record
    assert p.results("pin") == ["ok"], (
        "the demo PINs in config/demo_customers.yaml have 4 digits but config/ivr/retail.yaml accepts only 5 "
        f"(pin: min_length 5, max_length 5); path: {p.nodes}")
    assert rec["identified_by"] == "pin"
    assert p.exit["identified_by"] == "pin"
    assert rec["ivr_exit"] == "queued" and p.exit["queue"] == "retail_accounts"


def test_wrong_pin_three_times_locks_and_goes_to_an_agent(campaign):
    p = campaign.calls["unknown_pin_locked"]
    rec = p.check_call()
    assert rec["identified_by"] == "none" and rec["customer_id"] is None
    assert p.results("lookup") == ["not_found"]
    assert p.results("pin") == ["wrong", "wrong", "locked"]
    assert [e["digits"] for e in p.path if e["event"] == "digits"] == ["10000002", "****"] * 3
    assert p.nodes[:2] == ["retail.welcome", "retail.identify"]
    assert p.nodes[2:4] == ["retail.pin_locked", "retail.agent"]
    assert "handoff.voice" not in p.nodes  # not identified: no voice step
    assert rec["ivr_exit"] == "queued"
    assert (p.exit["queue"], p.exit["service"], p.exit["identified_by"]) == ("general", "general", None)

    # the lock is in the CRM: the account is locked for the next caller too
    from sqlalchemy import select

    from crm_bridge import models as m
    locked = campaign.open.query(lambda s: s.scalars(select(m.Customer.locked_until).where(
        m.Customer.account_number == "10000002")).one())
    assert locked is not None


def test_caller_hanging_up_in_the_ivr_is_recorded_as_such(campaign):
    """The field report: +393331234567 (no demo customer) hung up in the IVR and the record had no exit."""
    p = campaign.calls["unknown_hangs_up"]
    rec = p.check_call()
    assert rec["identified_by"] == "none"
    assert rec["end_reason"] == "bye_remote"
    assert rec["ivr_exit"] == "hung_up"  # the record's word for a caller who hung up in the IVR
    assert p.exit["exit"] == "abandoned"
    assert p.results("lookup") == ["not_found"]
    assert p.nodes == ["retail.welcome", "retail.identify"]
    assert rec["ivr_seconds"] is not None and rec["ivr_seconds"] > 0


def test_out_of_hours_message_and_hang_up(campaign):
    p = campaign.calls["closed_accounts"]
    rec = p.check_call()
    assert rec["identified_by"] == "ani"
    assert rec["end_reason"] == "bye_local"
    assert rec["ivr_exit"] == "completed"  # the IVR ended the call itself
    assert (p.exit["exit"], p.exit["detail"]) == ("hung_up", "closed")
    assert p.nodes[-2:] == ["handoff.hours", "handoff.closed"]
    closed = [e for e in p.path if e["event"] == "prompt" and e["node"] == "closed"]
    assert len(closed) == 1 and closed[0]["text"].startswith("Siamo chiusi") and not closed[0]["interrupted"]
    assert rec["service"] == "accounts_transfers"
    assert rec["queue"] is None


def test_lost_card_reaches_its_queue_out_of_hours(campaign):
    p = campaign.calls["closed_lost_card"]
    rec = p.check_call()
    assert rec["ivr_exit"] == "queued"
    assert (p.exit["queue"], p.exit["service"], p.exit["priority"], p.exit["critical"]) == \
        ("cards_lost_stolen", "card_block", 90, True)
    assert p.nodes[-2:] == ["handoff.hours", "handoff.to_queue"]
    assert "handoff.closed" not in p.nodes
