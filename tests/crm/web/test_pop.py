from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import select

from crm_bridge import models as m
from crm_bridge.crm import SqlCrmAdapter
from crm_bridge.db import Database
from crm_bridge.recorder import CallRecorder
from crm_bridge.web import build_pop

from .conftest import Web


def _customer(db) -> m.Customer:  # type: ignore[no-untyped-def]
    return db.run_sync(lambda s: s.scalars(select(m.Customer).join(m.Ticket)
                                           .where(m.Ticket.status == m.TicketStatus.OPEN)).first())


class _SlowCrm:
    """A CRM that answers after ``delay`` seconds (the external CRM on a bad day)."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)

        async def slow(*a: Any, **k: Any) -> Any:
            await asyncio.sleep(self.delay)
            return await target(*a, **k)
        return slow


class _DownCrm:
    def __getattr__(self, name: str) -> Any:
        async def down(*a: Any, **k: Any) -> Any:
            raise ConnectionRefusedError("crm down")
        return down


async def test_pop_has_the_customer_tickets_contacts_and_masks_numbers(seeded) -> None:  # type: ignore[no-untyped-def]
    c = _customer(seeded)
    crm = SqlCrmAdapter(seeded)
    # a note with a card number and an IBAN, as agents sometimes type them
    seeded.run_sync(lambda s: s.add(m.Ticket(customer_id=c.id, service="cards", status=m.TicketStatus.OPEN,
                                             notes="card 4111 1111 1111 1111 iban IT60X0542811101000000123456")))
    pop = await build_pop(crm, {"call_id": "k1", "customer_id": c.id, "ani": "+393331234567",
                                "dnis": "800100100", "line": "Retail line", "service": "cards",
                                "queue": "cards", "ivr_path": ["welcome", "identify", "menu_retail"],
                                "queued_at": 1000.0, "identified_by": "ani",
                                "verification": {"decision": "accept", "score": 0.812, "threshold": 0.7,
                                                 "flags": []}}, now=1012.0)
    assert pop["crm"] == "ok" and pop["customer"]["name"] == c.name
    assert pop["verification"]["status"] == "voice" and "0.81" in pop["verification"]["label"]
    assert pop["wait_seconds"] == 12.0 and pop["ivr_path"] == ["welcome", "identify", "menu_retail"]
    assert pop["open_tickets"] and pop["customer"]["account"].endswith(c.account_number[-4:])
    assert c.account_number not in json.dumps(pop)
    text = json.dumps(pop)
    assert "4111 1111 1111 1111" not in text and "************1111" in text
    assert "IT60X0542811101000000123456" not in text


async def test_slow_or_down_crm_still_gives_a_pop_with_the_call_facts(seeded) -> None:  # type: ignore[no-untyped-def]
    c = _customer(seeded)
    info = {"call_id": "k2", "customer": {"id": str(c.id), "name": c.name, "segment": "retail"},
            "ani": "+393339999999", "service": "accounts", "identified_by": "pin", "verified": True}
    closed = Database(seeded.engine, workers=1)
    closed.close()                                      # the built-in CRM's database is gone
    for crm in (_SlowCrm(SqlCrmAdapter(seeded), 2.0), _DownCrm(), None, SqlCrmAdapter(closed)):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pop = await build_pop(crm, info, timeout=0.3)
        assert loop.time() - t0 < 1.5                   # never waits for the CRM's answer
        assert pop["crm"] == "unavailable"
        assert pop["customer"]["name"] == c.name and pop["customer"]["stale"]
        assert pop["service"] == "accounts" and pop["verification"]["status"] == "pin"


async def test_verification_badges() -> None:
    from crm_bridge.web.pop import verification_badge as vb
    assert vb({"decision": "reject", "score": 0.2, "flags": ["REPLAY"]}, "ani")["status"] == "none"
    replay = vb({"decision": "reject", "flags": ["REPLAY"]}, "ani")
    assert replay["replay"] and "reject" in replay["label"]
    assert vb({"decision": "accept", "score": 0.9, "flags": ["WATCHLIST"]}, "ani")["watchlist"]
    assert vb(None, "pin")["label"] == "Verified by PIN"
    assert vb(None, None)["label"] == "Not verified"


async def test_hub_fills_the_pop_from_the_call_record(web: Web, seeded) -> None:  # type: ignore[no-untyped-def]
    """QueueService hands the hub its offer context; the score and flags come from the call record."""
    c = _customer(seeded)
    rec = CallRecorder(seeded)
    await rec.call_arrived("k3", ani="+393331234567", dnis="800100100", line="retail")
    await rec.identified("k3", c.id, "ani")
    await rec.verified("k3", "accept", score=0.77, threshold=0.7, flags=["WATCHLIST"])
    await web.login()
    ws = await web.client.ws_connect("/ws/agent", headers=web.headers())
    await ws.receive(timeout=5)
    context = {"customer": {"id": str(c.id), "name": c.name}, "customer_id": str(c.id), "service": "cards",
               "identified_by": "ani", "verified": True, "ivr_path": ["welcome"], "ani": "+393331234567",
               "dnis": "800100100", "queued_wall": 0.0, "critical": False}
    await web.hub.ringing("2001", "k3", context)
    msg = json.loads((await ws.receive(timeout=5)).data)
    pop = msg["pop"]
    assert msg["phase"] == "ringing" and pop["customer"]["name"] == c.name
    assert pop["verification"]["score"] == 0.77 and pop["verification"]["watchlist"]
    assert pop["ticket_id"] is not None and pop["line"] == "retail"
    await ws.close()


async def test_a_reconnecting_desktop_gets_the_current_pop_at_once(web: Web, seeded) -> None:  # type: ignore[no-untyped-def]
    c = _customer(seeded)
    await web.login()
    # rings while the desktop is not connected: nothing is lost
    sent = await web.hub.ringing("2001", "k4", {"customer_id": c.id, "ani": "+393331234567", "service": "cards"})
    assert sent == 0
    ws = await web.client.ws_connect("/ws/agent", headers=web.headers())
    kinds = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
    assert [k["type"] for k in kinds] == ["state", "pop"] and kinds[1]["call_id"] == "k4"
    await web.hub.answered("2001", "k4")
    answered = json.loads((await ws.receive(timeout=5)).data)
    assert answered["phase"] == "answered" and answered["answered_at"]
    await ws.close()
    ws = await web.client.ws_connect("/ws/agent", headers=web.headers())
    again = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
    assert again[1]["phase"] == "answered" and again[1]["pop"]["customer"]["name"] == c.name
    await web.hub.ended("2001", "k4")
    ended = json.loads((await ws.receive(timeout=5)).data)
    assert ended["phase"] == "ended"
    await ws.close()


async def test_unanswered_ring_clears_the_pop(web: Web) -> None:
    await web.login()
    ws = await web.client.ws_connect("/ws/agent", headers=web.headers())
    await ws.receive(timeout=5)
    await web.hub.ringing("2001", "k5", {"ani": "+393330000000"})
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "pop"
    await web.hub.ended("2001", "k5")                   # ring-no-answer: the offer went elsewhere
    assert json.loads((await ws.receive(timeout=5)).data) == {"type": "pop_cleared", "call_id": "k5"}
    assert web.hub.current("2001") is None
    await ws.close()


async def test_wrap_up_closes_the_ticket_and_only_for_the_agents_own_call(web: Web, seeded) -> None:  # type: ignore[no-untyped-def]
    c = _customer(seeded)
    rec = CallRecorder(seeded)
    ticket = await rec.call_arrived("k6", ani="+393331234567", dnis="800100100", line="retail")
    await rec.identified("k6", c.id, "ani")
    await rec.queued("k6", "cards", service="cards")
    await rec.answered("k6", "2001")
    await web.login()
    await web.client.post("/desktop/state", json={"action": "available"}, headers=web.headers())
    await web.hub.ringing("2001", "k6", {"customer_id": c.id})
    await web.hub.answered("2001", "k6")
    await rec.ended("k6", "caller_bye")
    await web.hub.ended("2001", "k6")
    other = await web.client.post("/desktop/wrapup", headers=web.headers(),
                                  json={"call_id": "someone-elses", "disposition": "resolved"})
    assert other.status == 403
    bad = await web.client.post("/desktop/wrapup", headers=web.headers(), json={"call_id": "k6",
                                                                                "disposition": "party"})
    assert bad.status == 400
    ok = await web.client.post("/desktop/wrapup", headers=web.headers(), json={
        "call_id": "k6", "disposition": "resolved", "notes": "card 4111111111111111 blocked"})
    assert ok.status == 200, await ok.text()
    t = seeded.run_sync(lambda s: s.get(m.Ticket, ticket))
    assert t.status is m.TicketStatus.CLOSED and t.disposition == "resolved"
    assert "4111111111111111" not in t.notes and t.notes.endswith("1111 blocked")
    assert web.hub.current("2001") is None
