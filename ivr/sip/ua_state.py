"""What the user agent keeps per flow, call and deadline (the state its parts share)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ivr.sip.dialog import Dialog
from ivr.sip.events import Address, CallHandle, Transport
from ivr.sip.message import SipError, SipRequest, SipUri
from ivr.sip.transaction import AnswerRetransmitter, InviteClientTransaction, InviteServerTransaction


class CallStateError(SipError):
    """A command does not fit the call's state (answering twice, re-INVITE before answer, unknown handle)."""


@dataclass(slots=True, frozen=True)
class _Flow:
    """Where and how to send: address, transport and (TCP) the connection a request came on."""

    address: Address
    transport: Transport
    connection_id: int | None = None


@dataclass(slots=True)
class _Deadline:
    """A one-shot UA-level timer in the same heap as the transactions."""

    at: float | None

    @property
    def deadline(self) -> float | None:
        return self.at

    @property
    def terminated(self) -> bool:
        return self.at is None

    def handle_timer(self, now: float) -> bool:
        if self.at is not None and now >= self.at:
            self.at = None
            return True
        return False


@dataclass(slots=True)
class _Call:
    handle: CallHandle
    invite: SipRequest
    flow: _Flow
    remote_tag: str = ""
    dialog: Dialog | None = None
    server_tx: InviteServerTransaction | None = None
    client_tx: InviteClientTransaction | None = None
    answer: AnswerRetransmitter | None = None
    acked: bool = False
    ended: bool = False
    bye_sent: bool = False
    pending_bye: bool = False
    cancel_pending: bool = False
    cancel_sent: bool = False
    got_provisional: bool = False
    ack: SipRequest | None = None
    credentials: tuple[str, str] | None = None
    auth_tried: bool = False
    auth_headers: list[tuple[str, str]] = field(default_factory=list)
    reinvite_server_tx: InviteServerTransaction | None = None
    reinvite_answer: AnswerRetransmitter | None = None
    reinvite_client_tx: InviteClientTransaction | None = None
    reinvite_ack: SipRequest | None = None
    refer_id: int | None = None          # CSeq of the REFER whose implicit subscription is still active


@dataclass(slots=True)
class _Timed:
    obj: Any
    on_fire: Callable[[bool, float], None] | None
    cleanup: Callable[[], None] | None
    armed: float | None = None


def _uri_address(uri: SipUri) -> Address:
    default = 5061 if uri.scheme == "sips" else 5060
    host = uri.params.get("maddr") or uri.host
    return (host, uri.port or default)


def _uri_transport(uri: SipUri, fallback: Transport) -> Transport:
    value = (uri.params.get("transport") or "").lower()
    if value == "tcp":
        return Transport.TCP
    if value == "udp":
        return Transport.UDP
    return fallback

