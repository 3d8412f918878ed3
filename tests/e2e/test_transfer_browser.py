"""The desktop's transfer controls in a real headless Chromium (1366x768) on the full server: agent A takes a
SIPp caller from the demo IVR, picks the queue "general" in the transfer panel, writes a note and clicks
"Blind transfer"; A's phone gets the server's BYE, agent B's phone rings and answers, and B's desktop (a second
page) shows the customer with "Transferred from 2001 / retail_accounts: <note>". Screenshots go to
``$WEB_SCREENSHOT_DIR`` when set, else to the test's temporary folder."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.crm.web.conftest import chromium_or_fail
from tests.e2e.harness import SIPP, RtpSink, free_udp_port
from tests.e2e.server_fixture import IN_HOURS, ShiftedClock, contact_server
from tests.e2e.test_routing_sip import GIULIA, caller_vars, ended_record, start_sipp, until, write_queues

pytestmark = [pytest.mark.browser, pytest.mark.sipp, pytest.mark.timeout(150),
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
A, B = "2001", "2002"
NOTE = "wants to open a mortgage"


async def _login(browser, base: str, login: str, password: str):
    from playwright.async_api import expect

    page = await (await browser.new_context(viewport={"width": 1366, "height": 768})).new_page()
    await page.goto(base + "/login")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", password)
    await page.click("#login-btn")
    await page.wait_for_url(base + "/desktop")
    await expect(page.locator("#conn")).to_have_text("connected")
    await page.click("#btn-available")
    await expect(page.locator("#state")).to_have_text("available")
    return page


async def test_blind_transfer_from_the_desktop_panel_and_the_next_agents_pop(tmp_path: Path) -> None:
    chromium = chromium_or_fail()
    from playwright.async_api import async_playwright, expect

    shots = Path(os.environ.get("WEB_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    pa, pb = free_udp_port(), free_udp_port()
    root = tmp_path / "srv"
    root.mkdir()
    queues = write_queues(tmp_path, {A: pa, B: pb})
    async with contact_server(root, clock=ShiftedClock(IN_HOURS),
                              overrides={"CONTACT_SERVER__IVR__QUEUES": str(queues)}) as srv:
        base = f"http://127.0.0.1:{srv.server.extras['web_port']}"
        engine = srv.server.extras["routing_engine"]
        phone_a = await start_sipp(tmp_path, "phone_a", "uas_agent_answer.xml", port=pa, variables={"ring": 500})
        phone_b = await start_sipp(tmp_path, "phone_b", "uas_agent_answer_hangup.xml", port=pb,
                                   variables={"ring": 500, "hold": 4000})
        rtp = await RtpSink().open()
        caller = None
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
            try:
                page_a = await _login(browser, base, "a.ferrari", "demo-agent-1")
                await asyncio.sleep(0.2)                     # A idles longest: the first call goes to A
                page_b = await _login(browser, base, "l.moretti", "demo-agent-2")
                await expect(page_a.locator("#xfer-blind")).to_be_disabled()
                caller = await start_sipp(tmp_path, "caller", "uac_queue_wait_bye.xml", remote=srv.address,
                                          variables=caller_vars(GIULIA, "1", rtp))
                await expect(page_a.locator("#phase")).to_have_text("answered", timeout=30_000)
                await expect(page_a.locator("#xfer-status")).to_contain_text("Call in progress", timeout=10_000)
                await page_a.select_option("#xfer-kind", "queue")
                await page_a.select_option("#xfer-target", "general")
                await page_a.fill("#xfer-note", NOTE)
                box = await page_a.locator("#transfer-panel").bounding_box()
                assert box is not None and box["y"] + box["height"] <= 768      # usable without scrolling
                await page_a.screenshot(path=str(shots / "e2e_transfer_panel.png"))
                await expect(page_a.locator("#xfer-blind")).to_be_enabled()
                await page_a.click("#xfer-blind")
                await expect(page_a.locator("#xfer-status")).to_contain_text("Transferred to general")
                await expect(page_a.locator("#phase")).to_have_text("ended", timeout=10_000)
                assert await phone_a.wait(30) == 0, phone_a.messages()[-3000:]     # server BYE to A
                # B's phone rings with the same caller; B's desktop shows where the call comes from
                await expect(page_b.locator("#cust-name")).to_have_text("Giulia Bianchi", timeout=30_000)
                await expect(page_b.locator("#xfer-origin")).to_have_text(
                    f"Transferred from {A} / retail_accounts: {NOTE}")
                await expect(page_b.locator("#f-queue")).to_have_text("general")
                await page_b.screenshot(path=str(shots / "e2e_transferred_pop.png"))
                assert await caller.wait(60) == 0, caller.messages()[-3000:]
                assert await phone_b.wait(30) == 0, phone_b.messages()[-3000:]
                await until(lambda: engine.agent(A).state.value == "wrap_up", what="A in wrap-up")
                rec = await ended_record(srv, ani=GIULIA)
                assert rec["transfers"] == 1 and rec["agent_id"] == B and rec["queue"] == "general"
            finally:
                await browser.close()
                rtp.close()
                for p in (phone_a, phone_b, caller):
                    if p is not None:
                        p.stop()
