"""What the web side needs from the rest of the server, as Protocols, and the app keys it stores them under.

The web package never imports the call layer or the routing engine: the server hands it objects that satisfy
these Protocols (``ivr.agents.EngineAgentControl`` and ``EngineWallboard`` do), so it can be tested against a
real routing engine without SIP and replaced piece by piece.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from aiohttp import web

from ..crm import CrmAdapter
from ..db import Database


@runtime_checkable
class AgentControl(Protocol):
    """Agent state changes as the desktop asks for them. Methods may be sync or async and return the agent's
    new status as a dict or an object with ``as_dict()``; a refused move raises an exception whose message says
    why (shown to the agent as is)."""

    def login(self, agent_id: str) -> Any: ...

    def set_available(self, agent_id: str) -> Any: ...

    def pause(self, agent_id: str, reason: str) -> Any: ...

    def logout(self, agent_id: str) -> Any: ...

    def wrap_up_done(self, agent_id: str, disposition: str | None = None, notes: str | None = None,
                     call_id: str | None = None) -> Any: ...

    def state(self, agent_id: str) -> Any: ...


@runtime_checkable
class WallboardSource(Protocol):
    """Live figures; sync or async. ``queues()`` items carry at least ``queue``, ``waiting``, ``longest_wait``,
    ``service_level`` (0..1 or None), ``staffed``, ``available``; ``agents()`` items ``agent_id``, ``name``,
    ``state``, ``reason``, ``since``. An optional ``snapshot()`` returning ``{"at", "queues", "agents"}`` is
    preferred: ``at`` is read on the same clock as ``since`` (the routing engine's may be monotonic)."""

    def queues(self) -> Any: ...

    def agents(self) -> Any: ...


class CallRecorderLike(Protocol):
    async def wrapped_up(self, call_id: str, disposition: str, notes: str | None = None, *,
                         agent_id: str | None = None) -> None: ...


class VoiceEnroller(Protocol):
    """``voiceauth.service.VoiceAuthService`` as the upload endpoint uses it."""

    store: Any

    async def enroll_recordings(self, customer_id: str, recordings: list[tuple[Any, int]], *, actor: str,
                                now: float) -> Any: ...


ReloadConfig = Callable[[], Awaitable[tuple[bool, list[str]]]]

PAUSE_REASONS: dict[str, str] = {
    "break": "Break", "lunch": "Lunch", "training": "Training", "meeting": "Meeting",
    "backoffice": "Back-office work", "technical": "Technical problem",
}
DISPOSITIONS: dict[str, str] = {
    "resolved": "Resolved", "info_given": "Information given", "callback_needed": "Callback needed",
    "escalated": "Escalated to back office", "card_blocked": "Card blocked", "complaint": "Complaint logged",
    "wrong_number": "Wrong number", "no_action": "No action needed",
}


@dataclass
class WebDeps:
    """Everything ``create_web_app`` needs. ``agents``/``wallboard``/``voice``/``reload_config`` may be None:
    the matching pages and endpoints then answer 503 with a message instead of failing at start.

    ``agent_key``: which column of the ``agents`` table is the routing engine's agent id (``id`` or
    ``extension``); pops, state changes and websockets are keyed by that id.
    ``allowed_origins``: origins (``scheme://host[:port]``) allowed for websockets and cookie-authenticated
    POSTs; empty means "the origin this request was addressed to" (same-origin only).
    ``session_secret``: HMAC key of the session cookie; random per process by default (a restart logs
    desktops out)."""

    db: Database
    crm: CrmAdapter
    agents: AgentControl | None = None
    wallboard: WallboardSource | None = None
    voice: VoiceEnroller | None = None
    reload_config: ReloadConfig | None = None
    recorder: CallRecorderLike | None = None
    hub: Any | None = None
    admin_token: str | None = None
    allowed_origins: frozenset[str] | set[str] | list[str] = frozenset()
    agent_key: Literal["id", "extension"] = "id"
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    session_ttl: float = 12 * 3600.0
    cookie_secure: bool = False
    pause_reasons: dict[str, str] = field(default_factory=lambda: dict(PAUSE_REASONS))
    dispositions: dict[str, str] = field(default_factory=lambda: dict(DISPOSITIONS))
    wrap_up_seconds: float = 30.0
    wallboard_interval: float = 1.0
    tz: str = "Europe/Rome"
    sl_threshold: float = 20.0
    login_max_failures: int = 5
    login_window: float = 300.0
    hasher: Any | None = None
    """argon2 ``PasswordHasher`` for passwords set through the API (None: crm_bridge.security's default)."""
    clock: Callable[[], float] | None = None
    surveys_dir: str | Path | None = None
    """Folder of the survey scripts (labels and the CSAT question on the results pages); None: the install's
    ``config/surveys``."""


DEPS = web.AppKey("deps", WebDeps)
HUB = web.AppKey("hub", Any)
SOCKETS = web.AppKey("sockets", Any)
SESSIONS = web.AppKey("sessions", Any)
LIMITER = web.AppKey("login_limiter", Any)
