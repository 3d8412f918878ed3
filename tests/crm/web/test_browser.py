"""The agent desktop and the wallboard in a real headless Chromium: log in, go available, a call rings with a
real customer (driven through the routing engine and ScreenPopHub as QueueService does), the pop shows the
customer and the voice badge, the agent wraps up, the ticket is closed in the database, the wallboard counts it.

Screenshots (1366x768) go to ``$WEB_SCREENSHOT_DIR`` when set, else to the test's temporary folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from crm_bridge import models as m
from crm_bridge.recorder import CallRecorder
from routing.events import Offer

from .conftest import ADMIN_TOKEN, Web, chromium_or_fail

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def test_agent_desktop_pop_wrap_up_and_wallboard(web: Web, seeded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    chromium = chromium_or_fail()
    from playwright.async_api import async_playwright, expect

    shots = Path(os.environ.get("WEB_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    customer = seeded.run_sync(lambda s: s.scalars(select(m.Customer).join(m.PhoneNumber)
                                                   .order_by(m.Customer.id)).first())
    phone = seeded.run_sync(lambda s: s.scalars(select(m.PhoneNumber.e164)
                                                .where(m.PhoneNumber.customer_id == customer.id)).first())
    base = web.origin
    rec = CallRecorder(seeded)

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
            await expect(page.locator("#state")).to_have_text("paused (login)")
            await page.click("#btn-available")
            await expect(page.locator("#state")).to_have_text("available")
            assert web.control.state("2001")["state"] == "available"

            # the call: IVR identified the caller by number and verified the voice, then queued it
            call_id = "browser-call-1"
            ticket_id = await rec.call_arrived(call_id, ani=phone, dnis="800100100", line="retail")
            await rec.identified(call_id, customer.id, "ani")
            await rec.verified(call_id, "accept", score=0.834, threshold=0.7, model="resemblyzer")
            await rec.service_selected(call_id, "cards")
            await rec.ivr_finished(call_id, [{"event": "node", "node": "welcome"},
                                             {"event": "digits", "node": "menu", "digits": "2"},
                                             {"event": "node", "node": "cards_menu"},
                                             {"event": "exit", "queue": "cards", "exit": "queued"}], "queued")
            await rec.queued(call_id, "cards", service="cards")
            context = {"customer": {"id": str(customer.id), "name": customer.name, "segment": "retail"},
                       "customer_id": str(customer.id), "service": "cards", "identified_by": "ani",
                       "verified": True, "ivr_path": [], "ani": phone, "dnis": "800100100",
                       "queued_wall": time.time() - 7, "critical": False}
            acts = web.control.engine.enqueue(call_id, "cards", now=time.time(), context=context)
            offer = next(a for a in acts if isinstance(a, Offer))
            assert offer.agent_id == "2001"
            await web.hub.ringing(offer.agent_id, offer.call_id, dict(offer.context))

            await expect(page.locator("#cust-name")).to_have_text(customer.name)
            await expect(page.locator("#badge")).to_have_text("Voice verified (score 0.83)")
            await expect(page.locator("#phase")).to_have_text("ringing")
            await expect(page.locator("#f-service")).to_have_text("cards")
            await expect(page.locator("#f-path")).to_contain_text("welcome")
            assert await page.locator("#wrap-submit").is_disabled()

            web.control.engine.offer_answered(call_id, "2001", now=time.time())
            await rec.answered(call_id, "2001")
            await web.hub.answered("2001", call_id)
            await expect(page.locator("#phase")).to_have_text("answered")
            await page.screenshot(path=str(shots / "desktop_pop.png"))

            web.control.engine.call_ended(call_id, now=time.time())
            await rec.ended(call_id, "caller_bye")
            await web.hub.ended("2001", call_id)
            await expect(page.locator("#phase")).to_have_text("ended")
            await expect(page.locator("#wrap-timer")).to_be_visible()
            assert web.control.state("2001")["state"] == "wrap_up"
            await page.select_option("#disposition", "card_blocked")
            await page.fill("#notes", "Card 4111 1111 1111 1111 blocked, new card sent")
            await page.screenshot(path=str(shots / "desktop_wrapup.png"))
            await page.click("#wrap-submit")
            await expect(page.locator("#message")).to_contain_text("Ticket closed")
            await expect(page.locator("#idle")).to_be_visible()
            await expect(page.locator("#state")).to_have_text("available")

            ticket = seeded.run_sync(lambda s: s.get(m.Ticket, ticket_id))
            assert ticket.status is m.TicketStatus.CLOSED and ticket.disposition == "card_blocked"
            assert "4111 1111 1111 1111" not in (ticket.notes or "")

            board = await (await browser.new_context(viewport={"width": 1366, "height": 768})).new_page()
            await board.goto(base + "/login")
            await board.click("details summary")
            await board.fill("input[name=token]", ADMIN_TOKEN)
            await board.click("text=Open the wallboard")
            await board.wait_for_url(base + "/supervisor/wallboard")
            row = board.locator("tr.q-cards td")
            await expect(row.nth(5)).to_have_text("1")       # answered today
            await expect(row.nth(3)).to_have_text("100 %")   # service level today
            await expect(board.locator("#t-answered")).to_have_text("1")
            await expect(board.locator("#t-agents")).to_have_text("1")
            await board.screenshot(path=str(shots / "wallboard.png"))
            await board.goto(base + "/supervisor/kpi?group_by=queue")
            await expect(board.locator("#kpi-table")).to_contain_text("cards")
            await board.screenshot(path=str(shots / "kpi.png"), full_page=False)
        finally:
            await browser.close()
