"""``create_web_app``: the agent desktop, the supervisor pages, the admin API and ``/metrics`` in one aiohttp
application that runs in the server's event loop.

Security shape: pages and desktop calls use the signed session cookie (HttpOnly, SameSite=Strict) and every
unsafe request carrying that cookie must come from an allowed Origin (CSRF); the admin API uses
``Authorization: Bearer``, which browsers never attach on their own, so it needs no origin check. Websockets
check Origin too (a foreign page could otherwise open one with the agent's cookie).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import metrics
from .auth import COOKIE, LoginLimiter, Session, SessionSigner, bearer_token, origin_allowed, tokens_equal
from .deps import DEPS, HUB, LIMITER, SESSIONS, SOCKETS, WebDeps
from .pop import ScreenPopHub
from .sockets import SocketRegistry

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class WebError(Exception):
    """Base of the web package's errors."""


def now_of(request: web.Request) -> float:
    clock = request.app[DEPS].clock
    return clock() if clock is not None else time.time()


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def wants_json(request: web.Request) -> bool:
    return request.path.startswith(("/api/", "/desktop/", "/ws/", "/supervisor/wallboard.json")) or \
        "application/json" in request.headers.get("Accept", "")


_SESSION_KEY: Any = web.RequestKey("session", object) if hasattr(web, "RequestKey") else "session"


def get_session(request: web.Request) -> Session | None:
    cached = request.get(_SESSION_KEY, False)
    if cached is not False:
        return cached  # type: ignore[return-value]
    session = request.app[SESSIONS].verify(request.cookies.get(COOKIE), now_of(request))
    request[_SESSION_KEY] = session
    return session


def require_session(request: web.Request, *, supervisor: bool = False, agent: bool = False) -> Session:
    """The caller's session; pages redirect to the login page, JSON endpoints answer 401/403."""
    session = get_session(request)
    if session is None:
        if wants_json(request) or request.method != "GET":
            raise web.HTTPUnauthorized(text=json.dumps({"error": "log in first"}), content_type="application/json")
        raise web.HTTPFound("/login")
    if supervisor and not session.supervisor:
        raise web.HTTPForbidden(text=json.dumps({"error": "supervisors only"}), content_type="application/json")
    if agent and session.agent_id is None:
        if request.method == "GET" and not wants_json(request):
            raise web.HTTPFound("/supervisor/wallboard")
        raise web.HTTPForbidden(text=json.dumps({"error": "an admin session has no agent desktop"}),
                                content_type="application/json")
    return session


def require_admin(request: web.Request) -> None:
    deps = request.app[DEPS]
    if not deps.admin_token:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": "the admin API is off: set web.admin_token (CONTACT_SERVER_ADMIN_TOKEN)"}),
            content_type="application/json")
    if not tokens_equal(bearer_token(request), deps.admin_token):
        raise web.HTTPUnauthorized(text=json.dumps({"error": "send Authorization: Bearer <admin token>"}),
                                   content_type="application/json", headers={"WWW-Authenticate": "Bearer"})


def require_supervisor_or_admin(request: web.Request) -> None:
    """Supervisor pages and exports: a supervisor session, or the admin bearer token (scripts, curl)."""
    if bearer_token(request) is not None:
        require_admin(request)
        return
    require_session(request, supervisor=True)


@web.middleware
async def security_middleware(request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    deps = request.app[DEPS]
    if request.method in UNSAFE and bearer_token(request) is None and \
            not origin_allowed(request, frozenset(deps.allowed_origins)):
        log.warning("refused %s %s from origin %r", request.method, request.path, request.headers.get("Origin"))
        return json_error(403, "cross-site request refused: wrong or missing Origin header")
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _harden(exc)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        response = json_error(500, "internal error; the server log has the details")
    _harden(response)
    return response


def _harden(response: web.StreamResponse) -> None:
    if response.prepared:
        return
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("Cache-Control", "no-store")


async def metrics_handler(request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _sockets_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SOCKETS].close_all()


def create_web_app(deps: WebDeps) -> web.Application:
    """The whole web side; ``deps.hub`` may be a ``ScreenPopHub`` the call layer already holds (one is made
    otherwise, reachable as ``app[crm_bridge.web.HUB]``)."""
    from . import api, campaigns, desktop, supervisor, surveys, transfer, voicemail

    app = web.Application(middlewares=[security_middleware], client_max_size=64 * 1024 * 1024)
    hub = deps.hub if deps.hub is not None else ScreenPopHub(deps.crm, db=deps.db,
                                                             clock=deps.clock or time.time)
    deps.hub = hub
    app[DEPS] = deps
    app[HUB] = hub
    app[SOCKETS] = getattr(hub, "sockets", None) or SocketRegistry()
    app[SESSIONS] = SessionSigner(deps.session_secret)
    app[LIMITER] = LoginLimiter(deps.login_max_failures, deps.login_window)
    app.cleanup_ctx.append(_sockets_ctx)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    desktop.setup(app)
    supervisor.setup(app)
    api.setup(app)
    transfer.setup(app)
    voicemail.setup(app)
    campaigns.setup(app)
    surveys.setup(app)
    app.router.add_static("/static/", STATIC_DIR, show_index=False, append_version=False)
    return app


async def start_web(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Convenience for the server and the benchmark: run ``app`` on host:port; ``await runner.cleanup()``
    stops it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner

