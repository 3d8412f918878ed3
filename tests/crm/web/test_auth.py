from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from .conftest import ADMIN_TOKEN, Web


async def test_login_sets_a_strict_httponly_cookie_and_logs_the_agent_into_routing(web: Web) -> None:
    resp = await web.login()
    assert resp.status == 302 and resp.headers["Location"] == "/desktop"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    me = await (await web.client.get("/desktop/me")).json()
    assert me["agent_id"] == "2001" and me["name"] == "Anna Ferrari"
    assert me["state"]["state"] == "paused"          # logged in, not yet available
    page = await web.client.get("/desktop")
    assert page.status == 200 and "Agent desktop" in await page.text()


async def test_wrong_password_is_refused_and_pages_need_a_session(web: Web) -> None:
    resp = await web.login(password="wrong-password")
    assert resp.status == 401 and "Wrong login or password" in await resp.text()
    assert (await web.client.get("/desktop/me")).status == 401
    page = await web.client.get("/desktop", allow_redirects=False)
    assert page.status == 302 and page.headers["Location"] == "/login"


async def test_forged_cookie_is_not_a_session(web: Web) -> None:
    await web.login()
    token = web.client.session.cookie_jar.filter_cookies(web.client.make_url("/"))["cs_session"].value
    body, sig = token.split(".")
    tampered = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
    web.client.session.cookie_jar.clear()
    resp = await web.client.get("/desktop/me", cookies={"cs_session": tampered})
    assert resp.status == 401


async def test_login_failures_are_rate_limited_per_address(web: Web) -> None:
    for _ in range(web.deps.login_max_failures):
        assert (await web.login(password="nope-nope")).status == 401
    blocked = await web.login()                       # even the right password waits
    assert blocked.status == 429 and int(blocked.headers["Retry-After"]) > 0


async def test_cross_site_posts_are_refused(web: Web) -> None:
    await web.login()
    for headers in ({"Origin": "https://evil.example"}, {}):
        resp = await web.client.post("/desktop/state", json={"action": "available"}, headers=headers)
        assert resp.status == 403
    assert web.control.state("2001")["state"] == "paused"
    resp = await web.client.post("/login", data={"login": "a.ferrari", "password": "demo-agent-1"},
                                 headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert resp.status == 403
    ok = await web.client.post("/desktop/state", json={"action": "available"}, headers=web.headers())
    assert ok.status == 200 and (await ok.json())["state"]["state"] == "available"


async def test_websocket_with_foreign_origin_is_refused(web: Web) -> None:
    await web.login()
    try:
        await web.client.ws_connect("/ws/agent", headers={"Origin": "https://evil.example"})
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a foreign origin opened the desktop websocket")
    ws = await web.client.ws_connect("/ws/agent", headers=web.headers())
    first = json.loads((await ws.receive(timeout=5)).data)
    assert first["type"] == "state"
    await ws.close()


async def test_websocket_needs_a_session(web: Web) -> None:
    try:
        await web.client.ws_connect("/ws/agent", headers=web.headers())
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 401
    else:
        raise AssertionError("websocket opened without a session")


async def test_an_agent_receives_only_their_own_pops(web: Web, seeded) -> None:  # type: ignore[no-untyped-def]
    c1 = web.client
    await web.login("a.ferrari", "demo-agent-1")
    ws1 = await c1.ws_connect("/ws/agent", headers=web.headers())
    await ws1.receive(timeout=5)                       # state
    c2 = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        r = await c2.post(web.client.make_url("/login"), data={"login": "l.moretti", "password": "demo-agent-2"},
                          headers=web.headers(), allow_redirects=False)
        assert r.status == 302
        ws2 = await c2.ws_connect(web.client.make_url("/ws/agent"), headers=web.headers())
        await ws2.receive(timeout=5)
        await web.hub.ringing("2002", "call-b", {"ani": "+393331234567", "service": "cards"})
        got2 = json.loads((await ws2.receive(timeout=5)).data)
        assert got2["type"] == "pop" and got2["call_id"] == "call-b"
        try:
            extra = await ws1.receive(timeout=0.5)
        except asyncio.TimeoutError:
            extra = None
        assert extra is None, f"agent 2001 received {extra}"
        await ws2.close()
    finally:
        await c2.close()
    await ws1.close()


async def test_secrets_never_reach_the_log(web: Web, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    await web.login(password="demo-agent-1")
    await web.login(password="wrong-secret-xyz")
    await web.client.post("/login/token", data={"token": "bad-token-abc"}, headers=web.headers(),
                          allow_redirects=False)
    await web.client.get("/api/v1/agents", headers={"Authorization": "Bearer wrong-bearer-123"})
    await web.client.get("/api/v1/agents", headers=web.admin())
    text = caplog.text
    for secret in ("demo-agent-1", "wrong-secret-xyz", "bad-token-abc", "wrong-bearer-123", ADMIN_TOKEN):
        assert secret not in text
    assert "a.ferrari" in text                          # the log still says who tried


async def test_admin_token_login_opens_the_supervisor_pages_only(web: Web) -> None:
    bad = await web.client.post("/login/token", data={"token": "nope"}, headers=web.headers(),
                                allow_redirects=False)
    assert bad.status == 401
    assert (await web.client.get("/supervisor/wallboard.json")).status == 401
    ok = await web.client.post("/login/token", data={"token": ADMIN_TOKEN}, headers=web.headers(),
                               allow_redirects=False)
    assert ok.status == 302 and ok.headers["Location"] == "/supervisor/wallboard"
    assert (await web.client.get("/supervisor/wallboard.json")).status == 200
    assert (await web.client.get("/desktop/me")).status == 403


async def test_plain_agents_cannot_open_supervisor_pages(web: Web) -> None:
    await web.login()
    assert (await web.client.get("/supervisor/wallboard.json")).status == 403
    assert (await web.client.get("/supervisor/calls.csv")).status == 403


async def test_logout_ends_the_session(web: Web) -> None:
    await web.login()
    token = web.client.session.cookie_jar.filter_cookies(web.client.make_url("/"))["cs_session"].value
    resp = await web.client.post("/desktop/state", json={"action": "logout"}, headers=web.headers())
    assert resp.status == 200 and (await resp.json())["state"]["state"] == "offline"
    again = await web.client.get("/desktop/me", cookies={"cs_session": token})
    assert again.status == 401                           # a copied cookie is revoked too
