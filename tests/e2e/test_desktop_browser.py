"""The agent desktop on the full server, end to end, in a real headless Chromium: the agent logs in and goes
available, a SIPp caller (a demo customer, identified by number, no voice sent) comes through the demo IVR into
a queue, the agent's phone (a SIPp UAS on a static SIP URI) rings, answers and hangs up, the pop shows the
customer and "not verified", the agent wraps up on the page, the ticket is closed in the database, and the
wallboard counts the call.

Nothing is faked: ``ivr.app.build_server`` wires the IVR, routing, the screen-pop hub and the web app as
``serve`` does. Screenshots (1366x768) go to ``$WEB_SCREENSHOT_DIR`` when set, else to the test's temporary
folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.crm.web.conftest import chromium_or_fail
from tests.e2e.harness import SIPP, RtpSink, free_udp_port
from tests.e2e.server_fixture import IN_HOURS, ShiftedClock, contact_server
from tests.e2e.test_routing_sip import GIULIA, caller_vars, ended_record, start_sipp, until, write_queues

pytestmark = [pytest.mark.browser, pytest.mark.sipp, pytest.mark.timeout(120),
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
AGENT = "2001"                  # extension of the demo agent a.ferrari: the desktop's agent id (agent_key)
GIULIA_NAME = "Giulia Bianchi"  # config/demo_customers.yaml, phone +393471000001
QUEUE = "retail_accounts"       # retail line, main menu digit 1


async def test_browser_agent_takes_a_demo_ivr_call_wraps_up_and_the_wallboard_counts_it(tmp_path: Path) -> None:
    chromium = chromium_or_fail()
    from playwright.async_api import async_playwright, expect

    from crm_bridge import models as m

    shots = Path(os.environ.get("WEB_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    phone_port = free_udp_port()
    root = tmp_path / "srv"
    root.mkdir()
    queues = write_queues(tmp_path, {AGENT: phone_port})
    overrides = {"CONTACT_SERVER__IVR__QUEUES": str(queues), "CONTACT_SERVER__WEB__ADMIN_TOKEN": ADMIN_TOKEN}
    async with contact_server(root, clock=ShiftedClock(IN_HOURS), overrides=overrides) as srv:
        base = f"http://127.0.0.1:{srv.server.extras['web_port']}"
        engine = srv.server.extras["routing_engine"]
        phone = await start_sipp(tmp_path, "phone_2001", "uas_agent_answer_hangup.xml", port=phone_port,
                                 variables={"ring": 1000, "hold": 4000})
        rtp = await RtpSink().open()
        caller = None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
            try:
                page = await (await browser.new_context(viewport={"width": 1366, "height": 768})).new_page()
                await page.goto(base + "/login")
                await page.fill("input[name=login]", "a.ferrari")
                await page.fill("input[name=password]", "demo-agent-1")
                await page.click("#login-btn")
                await page.wait_for_url(base + "/desktop")
                await expect(page.locator("#conn")).to_have_text("connected")
                await page.click("#btn-available")
                await expect(page.locator("#state")).to_have_text("available")
                assert engine.agent(AGENT).state.value == "available"

                # Giulia calls the retail line and keys 1 (accounts): the IVR queues her, 2001's phone rings
                caller = await start_sipp(tmp_path, "caller", "uac_queue_wait_bye.xml", remote=srv.address,
                                          variables=caller_vars(GIULIA, "1", rtp))
                await expect(page.locator("#cust-name")).to_have_text(GIULIA_NAME, timeout=30_000)
                await expect(page.locator("#badge")).to_have_text("Not verified (voice: not enrolled)")
                await expect(page.locator("#badge")).to_have_attribute("data-status", "none")
                await expect(page.locator("#f-service")).to_have_text("accounts_transfers")
                await expect(page.locator("#cust-phone")).to_contain_text(GIULIA)
                await expect(page.locator("#phase")).to_have_text("answered", timeout=10_000)
                await expect(page.locator("#f-path")).to_contain_text("handoff.not_verified")
                await page.screenshot(path=str(shots / "e2e_desktop_pop.png"))

                # the agent's phone hangs up: the server ends the caller's leg, the desktop offers the wrap-up
                await expect(page.locator("#phase")).to_have_text("ended", timeout=15_000)
                await expect(page.locator("#wrap-timer")).to_be_visible()
                await until(lambda: engine.agent(AGENT).state.value == "wrap_up", what="2001 in wrap-up")
                await page.select_option("#disposition", "resolved")
                await page.fill("#notes", "Balance explained, IBAN IT60X0542811101000000123456 confirmed")
                await page.click("#wrap-submit")
                await expect(page.locator("#message")).to_contain_text("Ticket closed")
                await expect(page.locator("#idle")).to_be_visible()
                await expect(page.locator("#state")).to_have_text("available")
                await page.screenshot(path=str(shots / "e2e_desktop_after_wrapup.png"))

                assert await caller.wait(30) == 0, caller.messages()[-3000:]
                assert await phone.wait(30) == 0, phone.messages()[-3000:]
                invites = phone.received("INVITE")
                assert len(invites) == 1 and GIULIA in invites[0]

                rec = await ended_record(srv, ani=GIULIA)
                assert rec["agent_id"] == AGENT and rec["queue"] == QUEUE
                assert rec["answered_at"] is not None and rec["end_reason"] == "agent_hangup"
                assert str(rec["customer_id"]) == srv.customer_id(GIULIA)
                assert rec["verification"]["decision"] != "accept"
                status, disposition, call_id, notes = srv.query(lambda s: tuple(s.execute(
                    select(m.Ticket.status, m.Ticket.disposition, m.Ticket.call_id, m.Ticket.notes)
                    .where(m.Ticket.id == rec["ticket_id"])).one()))
                assert status is m.TicketStatus.CLOSED and disposition == "resolved"
                assert call_id == rec["call_id"]
                assert "0542811101000000" not in (notes or "")      # IBAN middle digits masked

                board = await (await browser.new_context(viewport={"width": 1366, "height": 768})).new_page()
                await board.goto(base + "/login")
                await board.click("details summary")
                await board.fill("input[name=token]", ADMIN_TOKEN)
                await board.click("text=Open the wallboard")
                await board.wait_for_url(base + "/supervisor/wallboard")
                row = board.locator(f"tr.q-{QUEUE} td")
                await expect(row.nth(4)).to_have_text("1")       # calls today
                await expect(row.nth(5)).to_have_text("1")       # answered today
                await expect(board.locator("#t-answered")).to_have_text("1")
                await expect(row.nth(3)).to_have_text("100 %")   # service level today
                await expect(board.locator("#t-agents")).to_have_text("1")
                agent_row = board.locator("#agents tbody tr", has_text=f"({AGENT})")
                await expect(agent_row).to_contain_text("available")
                await expect(agent_row.locator("td").last).to_have_text("1")     # calls
                await board.screenshot(path=str(shots / "e2e_wallboard.png"))
            finally:
                await browser.close()
                rtp.close()
                for p in (phone, caller):
                    if p is not None:
                        p.stop()
