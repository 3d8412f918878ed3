"""What the SIP user agent reports to the application, and what it asks the transport shell to send.

Every call handle sees exactly one :class:`CallEnded`, always as its last event, whichever side or timer ended
the call, so the application can free its per-call resources in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

from ivr.sip.message import SipRequest, SipResponse


class Transport(str, enum.Enum):
    UDP = "udp"
    TCP = "tcp"

    @property
    def reliable(self) -> bool:
        return self is Transport.TCP


Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CallHandle:
    """Opaque, hashable reference to one call (one INVITE dialog usage) of the user agent."""

    call_id: str
    local_tag: str
    outgoing: bool = False

    def __str__(self) -> str:
        return f"{'out' if self.outgoing else 'in'}:{self.call_id}"


class EndReason(enum.Enum):
    BYE_REMOTE = "bye_remote"
    BYE_LOCAL = "bye_local"
    NO_ACK = "no_ack"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes to send. Over TCP use ``connection_id`` when that connection is still open, otherwise connect to
    ``destination``."""

    data: bytes
    destination: Address
    transport: Transport
    connection_id: int | None = None


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE; 100 Trying was already sent. Answer with ring/answer/reject."""

    handle: CallHandle
    request: SipRequest
    source: Address
    transport: Transport


@dataclass(frozen=True, slots=True)
class CallAcked:
    """The caller acknowledged our 2xx: media may flow both ways. ``ack`` carries the SDP answer when the
    INVITE had no offer."""

    handle: CallHandle
    ack: SipRequest | None = None


@dataclass(frozen=True, slots=True)
class CallCancelled:
    """The caller cancelled before answer; CANCEL got 200 and the INVITE 487. CallEnded(CANCELLED) follows."""

    handle: CallHandle


@dataclass(frozen=True, slots=True)
class CallEnded:
    handle: CallHandle
    reason: EndReason
    status: int | None = None


@dataclass(frozen=True, slots=True)
class ReInviteReceived:
    """An in-dialog INVITE (hold, resume, new SDP). Answer with answer_reinvite or reject_reinvite."""

    handle: CallHandle
    request: SipRequest


@dataclass(frozen=True, slots=True)
class ReInviteCompleted:
    """Outcome of our own re-INVITE (we already sent the ACK for a 2xx); ``response`` is None on timeout."""

    handle: CallHandle
    status: int
    response: SipResponse | None


@dataclass(frozen=True, slots=True)
class InfoReceived:
    """An in-dialog INFO (e.g. application/dtmf-relay); the user agent already answered 200."""

    handle: CallHandle
    request: SipRequest


@dataclass(frozen=True, slots=True)
class ReferReceived:
    """An in-dialog REFER (RFC 3515), already answered 202 Accepted with a first NOTIFY "100 Trying".
    ``refer_to`` is the Refer-To URI as text, ``user``/``host`` its parts. The application reports the outcome
    with ``notify_refer(handle, status)``; a final status (>= 200) ends the implicit subscription."""

    handle: CallHandle
    request: SipRequest
    refer_to: str
    user: str | None
    host: str


@dataclass(frozen=True, slots=True)
class OutgoingProgress:
    handle: CallHandle
    status: int
    response: SipResponse


@dataclass(frozen=True, slots=True)
class OutgoingAnswered:
    """The callee answered; the user agent already sent the ACK."""

    handle: CallHandle
    response: SipResponse


@dataclass(frozen=True, slots=True)
class OutgoingFailed:
    """Our INVITE got a final error response (or 408 on timeout). CallEnded follows."""

    handle: CallHandle
    status: int
    reason: str


Event = Union[
    IncomingCall,
    CallAcked,
    CallCancelled,
    CallEnded,
    ReInviteReceived,
    ReInviteCompleted,
    InfoReceived,
    OutgoingProgress,
    OutgoingAnswered,
    OutgoingFailed,
]
