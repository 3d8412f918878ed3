"""What the queue service keeps per caller while it waits, talks and is transferred."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ivr.calls import Call, Leg
from ivr.errors import IvrError
from ivr.media.bridge import Bridge


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


@dataclass(slots=True)
class _Connected:
    leg: Leg
    agent_id: str


@dataclass(slots=True)
class _Leave:
    reason: str
    prompt: str | None = None          # key of _TEXT or a wav path


class TransferRefused(IvrError):
    """A transfer or consultation the agent asked for cannot be done; ``status`` is the HTTP answer and
    ``sip_status`` the sipfrag status reported to a phone that sent REFER."""

    def __init__(self, status: int, message: str, sip_status: int = 403):
        super().__init__(message)
        self.status = status
        self.sip_status = sip_status


@dataclass(slots=True)
class _VoicemailKey:
    """The caller pressed the queue's voicemail key while waiting."""


@dataclass(slots=True)
class _Consult:
    target: dict
    agent_id: str | None = None
    leg: Leg | None = None
    bridge: Bridge | None = None


@dataclass(slots=True)
class _Talk:
    """The conversation of one caller: the agent on the line, and a consultation while the caller holds."""

    conn: _Connected
    consult: _Consult | None = None
    moh: asyncio.Task | None = None


@dataclass
class _Waiter:
    """One caller held in line by ``QueueService.queue``."""

    call: Call
    queue: str
    language: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    ewt: float = 0.0
    callback_offered: bool = False
    connected: _Connected | None = None
    context: dict = field(default_factory=dict)
    commands: asyncio.Queue = field(default_factory=asyncio.Queue)   # transfer steps for the talk loop
    talk: _Talk | None = None


@dataclass
class _OfferTask:
    call_id: str
    agent_id: str
    task: asyncio.Task | None = None
    cancelled_by_engine: bool = False

