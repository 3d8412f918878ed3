from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from crm_bridge import metrics
from crm_bridge.recorder import CallRecorder

from .conftest import ADMIN_TOKEN, Web


def _value(text: str, name: str, **labels: str) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


async def test_metrics_endpoint_exposes_the_documented_names(web: Web) -> None:
    metrics.CALLS.labels(outcome="answered").inc()
    metrics.SIP_MALFORMED.inc()
    metrics.RTP_ERRORS.labels(kind="malformed").inc(3)
    metrics.VERIFICATIONS.labels(decision="accept").inc()
    before = metrics.SCREEN_POP_LATENCY._sum.get()  # type: ignore[attr-defined]
    await web.login()
    ws = await web.client.ws_connect("/ws/agent", headers=web.headers())
    await ws.receive(timeout=5)
    await web.hub.ringing("2001", "m1", {"ani": "+393331112222"})
    await ws.receive(timeout=5)
    text = await (await web.client.get("/metrics")).text()
    for name in ("contact_calls_total", "contact_active_calls", "contact_verification_total",
                 "contact_rtp_errors_total", "contact_sip_malformed_total",
                 "contact_screen_pop_latency_seconds_count", "contact_desktop_websockets"):
        assert name in text, name
    assert _value(text, "contact_calls_total", outcome="answered") >= 1
    assert _value(text, "contact_rtp_errors_total", kind="malformed") >= 3
    assert _value(text, "contact_desktop_websockets", kind="agent") >= 1
    assert metrics.SCREEN_POP_LATENCY._sum.get() > before  # type: ignore[attr-defined]
    await ws.close()


async def test_queue_sizes_follow_the_routing_engine(web: Web) -> None:
    import time
    web.control.engine.enqueue("q1", "cards", now=time.time())
    await web.client.post("/login/token", data={"token": ADMIN_TOKEN}, headers=web.headers())
    snap = await (await web.client.get("/supervisor/wallboard.json")).json()
    cards = next(q for q in snap["queues"] if q["queue"] == "cards")
    assert cards["waiting"] == 1 and snap["totals"]["waiting"] == 1
    text = await (await web.client.get("/metrics")).text()
    assert _value(text, "contact_queue_size", queue="cards") == 1


async def test_wallboard_websocket_counts_todays_calls(web: Web, seeded) -> None:  # type: ignore[no-untyped-def]
    rec = CallRecorder(seeded)
    await rec.call_arrived("w1", ani="+393331112222", dnis="800", line="retail")
    await rec.queued("w1", "cards", service="cards")
    await rec.answered("w1", "2001")
    await rec.ended("w1", "caller_bye")
    await web.client.post("/login/token", data={"token": ADMIN_TOKEN}, headers=web.headers())
    ws = await web.client.ws_connect("/ws/wallboard", headers=web.headers())
    snap = json.loads((await ws.receive(timeout=5)).data)
    cards = next(q for q in snap["queues"] if q["queue"] == "cards")
    assert cards["today_answered"] == 1 and cards["service_level_today"] == 1.0
    assert {"2001", "2002", "2003"} <= {a["agent_id"] for a in snap["agents"]}
    assert all(a["for_seconds"] is None for a in snap["agents"])     # nobody has logged in yet
    pushed = json.loads((await ws.receive(timeout=5)).data)     # live updates keep coming
    assert pushed["type"] == "wallboard"
    await ws.close()


async def test_kpi_page_shows_formulas_and_charts_and_csv_export(web: Web, seeded) -> None:  # type: ignore[no-untyped-def]
    rec = CallRecorder(seeded)
    await rec.call_arrived("w2", ani="+393331112222", dnis="800", line="retail")
    await rec.queued("w2", "cards", service="cards")
    await rec.ended("w2", "caller_bye")
    await web.client.post("/login/token", data={"token": ADMIN_TOKEN}, headers=web.headers())
    page = await web.client.get("/supervisor/kpi", params={"group_by": "queue"})
    html = await page.text()
    assert page.status == 200
    assert "Service level</b>" not in html and "**Service level** = answered with" in html
    assert html.count("<svg") == 2 and "abandoned cards: 1" in html
    bad = await web.client.get("/supervisor/kpi", params={"group_by": "planet"})
    assert bad.status == 400
    csv_resp = await web.client.get("/supervisor/calls.csv")
    assert csv_resp.status == 200 and "w2" in await csv_resp.text()
    assert csv_resp.headers["Content-Disposition"].startswith("attachment")
    listing = await web.client.get("/supervisor/calls")
    assert "1 calls" in await listing.text()
    # the same export with the admin token (scripts), without a session
    web.client.session.cookie_jar.clear()
    anon = await web.client.get("/supervisor/calls.csv", allow_redirects=False)
    assert anon.status == 302 and anon.headers["Location"] == "/login"
    assert (await web.client.get("/supervisor/calls.csv",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).status == 200


async def test_security_headers(web: Web) -> None:
    resp = await web.client.get("/login")
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
