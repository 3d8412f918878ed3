"""The agent desktop: login/logout, state control, the pop websocket and the wrap-up form.

Every agent action is scoped to the session's own agent id: the websocket registers under it, the wrap-up is
refused for a call that is not the agent's, and no endpoint takes an agent id from the request.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web
from sqlalchemy import select

from .. import metrics
from .. import models as m
from ..errors import CallRecordError, CrmError
from ..masking import redact_text
from ..recorder import CallRecorder
from ..security import verify_secret
from .app import STATIC_DIR, get_session, json_error, now_of, require_session
from .auth import COOKIE, origin_allowed
from .deps import DEPS, HUB, LIMITER, SESSIONS, SOCKETS, WebDeps
from .pages import html_response, login_page
from .pop import _plain
from .supervisor import mark_dirty

log = logging.getLogger(__name__)

MAX_NOTES = 4000


async def call_control(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run an AgentControl method (sync or async) and return its status as a plain dict."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return _plain(result) if result is not None else {}


async def agent_state(deps: WebDeps, agent_id: str) -> dict[str, Any] | None:
    if deps.agents is None:
        return None
    try:
        return await call_control(deps.agents.state, agent_id)
    except Exception as exc:
        log.info("state of agent %s unavailable: %s", agent_id, exc)
        return None


def _routing_id(deps: WebDeps, row: m.Agent) -> str:
    return (row.extension or row.id) if deps.agent_key == "extension" else row.id


async def login_form(request: web.Request) -> web.Response:
    if get_session(request) is not None:
        raise web.HTTPFound("/desktop")
    return html_response(login_page())


def _too_many(wait: float) -> web.Response:
    resp = html_response(login_page(f"Too many failed logins from your address: try again in {int(wait) + 1} s."),
                         status=429)
    resp.headers["Retry-After"] = str(int(wait) + 1)
    return resp


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def login_post(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    limiter = request.app[LIMITER]
    ip, now = _client(request), now_of(request)
    wait = limiter.retry_after(ip, now)
    if wait > 0:
        return _too_many(wait)
    form = await request.post()
    login = str(form.get("login", "")).strip()[:64]
    password = str(form.get("password", ""))[:256]

    def find(s: Any) -> tuple[str, str, str | None, str, bool] | None:
        row = s.scalars(select(m.Agent).where(m.Agent.login == login, m.Agent.active.is_(True))).first()
        return None if row is None else (row.id, row.name, _routing_id(deps, row), row.password_hash,
                                         bool(row.supervisor))

    found = await deps.db.read(find) if login and password else None
    ok = found is not None and await asyncio.get_running_loop().run_in_executor(
        None, verify_secret, found[3], password)
    if not ok or found is None:
        limiter.failed(ip, now)
        metrics.LOGIN_FAILURES.inc()
        log.info("desktop login refused for %r from %s", login, ip)
        return html_response(login_page("Wrong login or password.", login), status=401)
    db_id, name, agent_id, _, supervisor = found
    session, token = request.app[SESSIONS].issue(role="supervisor" if supervisor else "agent", agent_id=agent_id,
                                                 db_agent_id=db_id, name=name, now=now, ttl=deps.session_ttl)
    if deps.agents is not None:
        try:
            await call_control(deps.agents.login, agent_id)
        except Exception as exc:                  # already logged in from another desktop, or from the phone
            log.info("agent %s: routing login not changed (%s)", agent_id, exc)
    log.info("agent %s logged in from %s", agent_id, ip)
    resp = web.HTTPFound("/desktop")
    _set_cookie(resp, deps, token)
    raise resp


def _set_cookie(resp: web.StreamResponse, deps: WebDeps, token: str) -> None:
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=deps.cookie_secure, path="/",
                    max_age=int(deps.session_ttl))


async def login_token(request: web.Request) -> web.Response:
    """Supervisor access with the admin token (no agent desktop)."""
    from .auth import tokens_equal

    deps = request.app[DEPS]
    limiter = request.app[LIMITER]
    ip, now = _client(request), now_of(request)
    wait = limiter.retry_after(ip, now)
    if wait > 0:
        return _too_many(wait)
    form = await request.post()
    if not tokens_equal(str(form.get("token", ""))[:512], deps.admin_token):
        limiter.failed(ip, now)
        metrics.LOGIN_FAILURES.inc()
        log.info("admin-token login refused from %s", ip)
        return html_response(login_page("Wrong admin token."), status=401)
    _, token = request.app[SESSIONS].issue(role="admin", agent_id=None, db_agent_id=None, name="admin", now=now,
                                           ttl=deps.session_ttl)
    resp = web.HTTPFound("/supervisor/wallboard")
    _set_cookie(resp, deps, token)
    raise resp


async def logout(request: web.Request) -> web.Response:
    session = get_session(request)
    if session is not None:
        request.app[SESSIONS].revoke(session, now_of(request))
    resp = web.HTTPFound("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def desktop_page(request: web.Request) -> web.FileResponse:
    require_session(request, agent=True)
    return web.FileResponse(STATIC_DIR / "desktop.html", headers={"Content-Type": "text/html; charset=utf-8"})


async def me(request: web.Request) -> web.Response:
    session = require_session(request, agent=True)
    deps = request.app[DEPS]
    assert session.agent_id is not None
    return web.json_response({
        "agent_id": session.agent_id, "name": session.name, "role": session.role,
        "supervisor": session.supervisor, "pause_reasons": deps.pause_reasons, "dispositions": deps.dispositions,
        "wrap_up_seconds": deps.wrap_up_seconds, "state": await agent_state(deps, session.agent_id),
        "routing": deps.agents is not None})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "send a JSON object"}), content_type="application/json")
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "send a JSON object"}), content_type="application/json")
    return body


async def set_state(request: web.Request) -> web.Response:
    session = require_session(request, agent=True)
    deps = request.app[DEPS]
    agent_id = session.agent_id
    assert agent_id is not None
    if deps.agents is None:
        return json_error(503, "routing is not running: agent states cannot change now")
    body = await _json_body(request)
    action = body.get("action")
    try:
        if action == "available":
            state = await call_control(deps.agents.set_available, agent_id)
        elif action == "pause":
            reason = str(body.get("reason") or "")
            if reason not in deps.pause_reasons:
                return json_error(400, f"pause reason must be one of {sorted(deps.pause_reasons)}")
            state = await call_control(deps.agents.pause, agent_id, reason)
        elif action == "logout":
            state = await call_control(deps.agents.logout, agent_id)
        else:
            return json_error(400, "action must be available, pause or logout")
    except Exception as exc:
        log.info("agent %s: %s refused: %s", agent_id, action, exc)
        return json_error(409, str(exc) or type(exc).__name__)
    hub = request.app[HUB]
    await hub.agent_state(agent_id, state)
    if action == "logout":
        request.app[SESSIONS].revoke(session, now_of(request))
        resp = web.json_response({"state": state, "logged_out": True})
        resp.del_cookie(COOKIE, path="/")
        return resp
    return web.json_response({"state": state})


async def _call_owner(deps: WebDeps, call_id: str) -> str | None:
    def q(s: Any) -> str | None:
        return s.scalars(select(m.CallRecord.agent_id).where(m.CallRecord.call_id == call_id)).first()
    return await deps.db.read(q)


async def wrap_up(request: web.Request) -> web.Response:
    session = require_session(request, agent=True)
    deps = request.app[DEPS]
    hub = request.app[HUB]
    agent_id = session.agent_id
    assert agent_id is not None
    body = await _json_body(request)
    call_id = str(body.get("call_id") or "")
    disposition = str(body.get("disposition") or "")
    notes = body.get("notes")
    if disposition not in deps.dispositions:
        return json_error(400, f"disposition must be one of {sorted(deps.dispositions)}")
    if notes is not None and (not isinstance(notes, str) or len(notes) > MAX_NOTES):
        return json_error(400, f"notes must be text of at most {MAX_NOTES} characters")
    notes = redact_text(notes.strip()) if notes else None
    current = hub.current(agent_id)
    mine = current is not None and current.call_id == call_id
    if not call_id or (not mine and await _call_owner(deps, call_id) != agent_id):
        return json_error(403, "this call is not yours to wrap up")
    recorder = deps.recorder or CallRecorder(deps.db)
    try:
        await recorder.wrapped_up(call_id, disposition, notes, agent_id=agent_id)
    except CallRecordError:
        ticket = current.pop.get("ticket_id") if current is not None else None
        if ticket is None:
            return json_error(404, f"call {call_id} has no call record or ticket to close")
        try:
            await deps.crm.close_ticket(ticket, disposition, notes)
        except CrmError as exc:
            return json_error(502, f"the CRM did not close ticket {ticket}: {exc}")
    state = None
    if deps.agents is not None:
        try:
            state = await call_control(deps.agents.wrap_up_done, agent_id, call_id=call_id)
        except Exception as exc:
            log.info("agent %s: wrap-up end not applied (%s)", agent_id, exc)
            state = await agent_state(deps, agent_id)
    await hub.clear(agent_id, call_id)
    mark_dirty(request.app)
    if state:
        await hub.agent_state(agent_id, state)
    log.info("agent %s wrapped up call %s: %s", agent_id, call_id, disposition)
    return web.json_response({"ok": True, "call_id": call_id, "disposition": disposition, "state": state})


async def agent_ws(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    if not origin_allowed(request, frozenset(deps.allowed_origins)):
        log.warning("desktop websocket refused: origin %r", request.headers.get("Origin"))
        return json_error(403, "websocket origin not allowed")
    session = require_session(request, agent=True)
    agent_id = session.agent_id
    assert agent_id is not None
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    registry = request.app[SOCKETS]
    registry.add_agent(agent_id, ws)
    try:
        await request.app[HUB].greet(agent_id, ws, await agent_state(deps, agent_id))
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and msg.data == '{"type":"ping"}':
                await ws.send_str('{"type":"pong"}')
            elif msg.type is WSMsgType.ERROR:
                break
    except (ConnectionError, RuntimeError) as exc:
        log.info("desktop socket of %s closed: %s", agent_id, exc)
    finally:
        registry.remove_agent(agent_id, ws)
    return ws


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/", home)
    r.add_get("/login", login_form)
    r.add_post("/login", login_post)
    r.add_post("/login/token", login_token)
    r.add_post("/logout", logout)
    r.add_get("/desktop", desktop_page)
    r.add_get("/desktop/me", me)
    r.add_post("/desktop/state", set_state)
    r.add_post("/desktop/wrapup", wrap_up)
    r.add_get("/ws/agent", agent_ws)


async def home(request: web.Request) -> web.Response:
    session = get_session(request)
    raise web.HTTPFound("/supervisor/wallboard" if session is not None and session.agent_id is None
                        else "/desktop")
