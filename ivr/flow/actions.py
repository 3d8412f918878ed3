"""What the interpreter asks the call layer to do (actions) and what the call layer tells it back (events).

Protocol, one step at a time: every list returned by :meth:`FlowRun.start` / :meth:`FlowRun.handle` ends with
either exactly one *awaiting* action (``Play``, ``CollectDigits``, ``LookupCaller``, ``VerifyPin``,
``VerifyVoice``, ``EnrollVoice``), whose answer is the matching event below, or with a terminal action
(``Queue``, ``Transfer``, ``Hangup``) followed by ``Finished``. ``CallerHungUp`` may arrive at any moment.

=================  =========================
awaiting action    answer event
=================  =========================
Play               PlayFinished
CollectDigits      DigitsCollected
LookupCaller       CallerLookedUp
VerifyPin          PinResult
VerifyVoice        VoiceResult
EnrollVoice        VoiceResult
=================  =========================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


# ---------------------------------------------------------------- actions

@dataclass(frozen=True, slots=True)
class PromptRef:
    """One prompt to play. ``wav`` (absolute path) wins when given; ``text`` is final (templates already
    filled) and ``template`` keeps the unfilled text so a renderer without TTS can fall back to a bundled
    rendering of its fixed part. ``language`` picks the TTS voice."""

    text: str | None
    wav: str | None
    language: str
    template: str | None = None


@dataclass(frozen=True, slots=True)
class Play:
    prompts: tuple[PromptRef, ...]
    barge_in: bool = False


@dataclass(frozen=True, slots=True)
class CollectDigits:
    """Map onto media ``collect_digits``: the media layer owns the timers (see ``FlowRun`` docstring).
    ``secret`` digits (PINs) must not be logged."""

    max_digits: int
    first_timeout: float
    inter_digit_timeout: float
    terminator: str | None = None
    secret: bool = False


@dataclass(frozen=True, slots=True)
class LookupCaller:
    ani: str


@dataclass(frozen=True, slots=True)
class VerifyPin:
    account: str
    pin: str

    def __repr__(self) -> str:  # PINs never reach logs
        return f"VerifyPin(account={self.account!r}, pin='***')"


@dataclass(frozen=True, slots=True)
class VerifyVoice:
    customer_id: str
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class EnrollVoice:
    customer_id: str
    take: int = 1
    takes: int = 1


@dataclass(frozen=True, slots=True)
class Queue:
    queue: str
    service: str | None
    skills: tuple[str, ...]
    priority: int
    variables: dict[str, Any] = field(default_factory=dict)
    customer_id: str | None = None
    language: str | None = None
    identified_by: str | None = None
    verified: bool = False


@dataclass(frozen=True, slots=True)
class Transfer:
    uri: str


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str


class IvrExit(StrEnum):
    QUEUED = "queued"
    TRANSFERRED = "transferred"
    HUNG_UP = "hung_up"          # the IVR hung up (end of flow, closed, too many errors)
    ABANDONED = "abandoned"      # the caller hung up while in the IVR
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Finished:
    outcome: IvrExit
    detail: str = ""


Action = Play | CollectDigits | LookupCaller | VerifyPin | VerifyVoice | EnrollVoice | Queue | Transfer | Hangup \
    | Finished


# ---------------------------------------------------------------- events

@dataclass(frozen=True, slots=True)
class PlayFinished:
    interrupted_digit: str | None = None


class CollectEnd(StrEnum):
    """Same values as ``ivr.media.collect.CollectReason``: pass ``result.reason.value`` straight through."""

    MAX_DIGITS = "max"
    TERMINATOR = "terminator"    # the terminator itself is not in ``digits``
    TIMEOUT = "timeout"          # first-digit or inter-digit timeout; no input when ``digits`` is empty
    CLOSED = "closed"            # media stopped (call ending): treated as no input


@dataclass(frozen=True, slots=True)
class DigitsCollected:
    digits: str
    reason: CollectEnd | str = CollectEnd.MAX_DIGITS


@dataclass(frozen=True, slots=True)
class CallerLookedUp:
    """``customer``: dict with at least ``id``; ``name``, ``first_name``, ``segment``, ``language`` optional."""

    customer: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class PinResult:
    ok: bool
    locked: bool = False
    customer: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class VoiceResult:
    """``decision``: accept / reject / not_enough_speech / not_enrolled / locked_out / error."""

    decision: str
    score: float | None = None
    threshold: float | None = None
    model: str | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    pass


Event = PlayFinished | DigitsCollected | CallerLookedUp | PinResult | VoiceResult | CallerHungUp

AWAITING: dict[type, tuple[type, ...]] = {
    Play: (PlayFinished,),
    CollectDigits: (DigitsCollected,),
    LookupCaller: (CallerLookedUp,),
    VerifyPin: (PinResult,),
    VerifyVoice: (VoiceResult,),
    EnrollVoice: (VoiceResult,),
}
