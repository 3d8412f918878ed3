"""Actions and events the routing engine emits (frozen dataclasses, every one stamped with ``at``).

Actions ask the call layer to do something (``Offer``, ``CancelOffer``, ``Announce``, ``Overflow``,
``PlaceCallback``); events report what happened (``AgentStateChanged``, ``CallQueued`` ...), for the KPIs, the
agent desktop and the wallboard. Both come out of the same lists, in the order they happened.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping


class AnnouncementKind(str, enum.Enum):
    POSITION = "position"
    EWT = "ewt"
    COMFORT = "comfort"


class OverflowKind(str, enum.Enum):
    QUEUE = "queue"
    VOICEMAIL = "voicemail"
    CALLBACK = "callback"
    HANGUP = "hangup"


class OfferFailure(str, enum.Enum):
    RONA = "rona"        # ring, no answer
    BUSY = "busy"
    FAILED = "failed"    # 4xx/5xx/6xx, unreachable phone


class CallEndedBy(str, enum.Enum):
    CALLER = "caller"
    AGENT = "agent"
    SYSTEM = "system"
    TRANSFER = "transfer"


@dataclass(frozen=True, slots=True)
class RoutingEvent:
    at: float


# ---- actions for the call layer ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Offer(RoutingEvent):
    """Ring the agent's phone with this call; report back with offer_answered / offer_failed."""

    call_id: str
    agent_id: str
    phone: str
    ring_timeout: float
    queue: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CancelOffer(RoutingEvent):
    """Stop ringing the agent (ring timeout owned by the engine, or the caller left)."""

    call_id: str
    agent_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class PlaceCallback(RoutingEvent):
    """A callback reached the head of the line: ring the agent, then dial ``number`` and bridge them."""

    call_id: str
    number: str
    agent_id: str
    phone: str
    ring_timeout: float
    queue: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Announce(RoutingEvent):
    call_id: str
    kind: AnnouncementKind
    position: int
    ewt_seconds: float
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class Overflow(RoutingEvent):
    """Max wait reached: the call goes to another queue (already done here) or leaves to voicemail/callback/
    hangup (the call layer plays ``prompt`` and does it). For CALLBACK the call keeps its place until the caller
    leaves a number (request_callback) or hangs up."""

    call_id: str
    from_queue: str
    kind: OverflowKind
    target: str | None = None
    prompt: str | None = None


# ---- events -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AgentStateChanged(RoutingEvent):
    agent_id: str
    old: str
    new: str
    reason: str | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallQueued(RoutingEvent):
    call_id: str
    queue: str
    priority: float
    position: int
    ewt_seconds: float
    music_on_hold: str | None = None


@dataclass(frozen=True, slots=True)
class CallRequeued(RoutingEvent):
    """The offer failed; the call is back at its original place in line."""

    call_id: str
    queue: str
    agent_id: str
    reason: str
    position: int


@dataclass(frozen=True, slots=True)
class CallAnswered(RoutingEvent):
    call_id: str
    queue: str
    agent_id: str
    waited_seconds: float
    within_service_level: bool


@dataclass(frozen=True, slots=True)
class CallEnded(RoutingEvent):
    call_id: str
    queue: str
    agent_id: str
    by: str
    handle_seconds: float


@dataclass(frozen=True, slots=True)
class CallAbandoned(RoutingEvent):
    call_id: str
    queue: str
    waited_seconds: float
    reason: str = "caller_hangup"


@dataclass(frozen=True, slots=True)
class CallTransferred(RoutingEvent):
    call_id: str
    from_queue: str
    from_agent: str | None
    to_queue: str | None
    to_agent: str | None


@dataclass(frozen=True, slots=True)
class ConsultEnded(RoutingEvent):
    """A warm-transfer consultation ended without completing: cancelled, or the consulted agent did not answer
    (``reason`` is then the offer failure). The caller stays with ``from_agent``."""

    call_id: str
    consult_id: str
    agent_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RoutingStepApplied(RoutingEvent):
    call_id: str
    queue: str
    step: int


@dataclass(frozen=True, slots=True)
class CallbackScheduled(RoutingEvent):
    call_id: str
    queue: str
    number: str
    position: int


@dataclass(frozen=True, slots=True)
class CallLeftQueue(RoutingEvent):
    """The call left routing without an agent (overflow to voicemail/hangup, reconciliation of a dead dialog)."""

    call_id: str
    queue: str
    waited_seconds: float
    reason: str


Action = RoutingEvent
