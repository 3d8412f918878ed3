"""SIP dialogs (RFC 3261 section 12): identifiers, sequence numbers, remote target and route set.

A Dialog is pure state plus request builders; it never sends anything. The user agent decides when a dialog is
created (a 1xx/2xx with a To tag), confirmed and terminated, and adds the Via of each request it builds, since
the Via (branch, advertised address) belongs to the transport layer.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass, field
from typing import Iterable

from ivr.sip.message import Headers, NameAddr, SipError, SipRequest, SipResponse, SipUri


class DialogError(SipError):
    """A dialog could not be built from the given messages (for example a 2xx without Contact)."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Role(enum.Enum):
    UAS = "uas"
    UAC = "uac"


DialogId = tuple[str, str, str]


def _contact_uri(message: SipRequest | SipResponse) -> SipUri:
    contacts = message.headers.get_all("Contact")
    if not contacts:
        raise DialogError("the message that creates a dialog must carry a Contact header (RFC 3261 12.1)")
    return NameAddr.parse(contacts[0]).uri


def _with_tag(addr: NameAddr, tag: str | None) -> NameAddr:
    addr = copy.deepcopy(addr)
    if tag:
        addr.params["tag"] = tag
    else:
        addr.params.pop("tag", None)
    return addr


@dataclass(slots=True)
class Dialog:
    role: Role
    call_id: str
    local_tag: str
    remote_tag: str
    local_addr: NameAddr
    """Our From (UAC) / To (UAS) header, without tag; the tag is added when requests are built."""
    remote_addr: NameAddr
    local_seq: int
    remote_seq: int | None
    remote_target: SipUri
    route_set: list[str] = field(default_factory=list)
    local_contact: str = ""
    state: DialogState = DialogState.EARLY
    secure: bool = False

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(
        cls, request: SipRequest, local_tag: str, local_contact: str, state: DialogState = DialogState.EARLY
    ) -> "Dialog":
        """Dialog state created by sending a 1xx/2xx with To tag ``local_tag`` (RFC 3261 12.1.1)."""
        return cls(
            role=Role.UAS,
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_addr=_with_tag(request.to, None),
            remote_addr=_with_tag(request.from_, None),
            local_seq=0,
            remote_seq=request.cseq[0],
            remote_target=_contact_uri(request),
            route_set=list(request.headers.get_all("Record-Route")),
            local_contact=local_contact,
            state=state,
            secure=request.uri.scheme == "sips",
        )

    @classmethod
    def as_uac(cls, request: SipRequest, response: SipResponse, local_contact: str) -> "Dialog":
        """Dialog state created by a 1xx/2xx with To tag to our INVITE (RFC 3261 12.1.2)."""
        remote_tag = response.to.tag
        if not remote_tag:
            raise DialogError("a response without To tag cannot create a dialog")
        return cls(
            role=Role.UAC,
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=remote_tag,
            local_addr=_with_tag(request.from_, None),
            remote_addr=_with_tag(response.to, None),
            local_seq=request.cseq[0],
            remote_seq=None,
            remote_target=_contact_uri(response),
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_contact=local_contact,
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
            secure=request.uri.scheme == "sips",
        )

    def update_from_uac_response(self, response: SipResponse) -> None:
        """A 2xx confirming an early dialog refreshes the route set and target (RFC 3261 12.1.2/13.2.2.4)."""
        if self.role is Role.UAC and self.state is DialogState.EARLY:
            self.route_set = list(reversed(response.headers.get_all("Record-Route")))
        self.refresh_target(response)
        if 200 <= response.status < 300:
            self.state = DialogState.CONFIRMED

    def refresh_target(self, message: SipRequest | SipResponse) -> None:
        """Target refresh (re-INVITE and its 2xx, RFC 3261 12.2): a new Contact replaces the remote target."""
        if message.headers.get_all("Contact"):
            self.remote_target = _contact_uri(message)

    def accept_remote_cseq(self, request: SipRequest) -> bool:
        """Check and record the remote CSeq (RFC 3261 12.2.2); False means answer 500, out of order."""
        if request.method in ("ACK", "CANCEL"):
            return True
        seq = request.cseq[0]
        if self.remote_seq is not None and seq < self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def next_hop(self) -> SipUri:
        """Where an in-dialog request goes first: the top route, or the remote target."""
        if self.route_set:
            return NameAddr.parse(self.route_set[0]).uri
        return self.remote_target

    def _request_uri_and_routes(self) -> tuple[SipUri, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0])
        if "lr" in first.uri.params:
            return self.remote_target, list(self.route_set)
        # Strict router (RFC 3261 12.2.1.1): its URI becomes the Request-URI, the target the last Route.
        uri = copy.deepcopy(first.uri)
        uri.headers = {}
        return uri, list(self.route_set[1:]) + [f"<{self.remote_target}>"]

    def create_request(
        self,
        method: str,
        via: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> SipRequest:
        """Build an in-dialog request. A new CSeq is taken unless ``cseq`` is given (ACK and CANCEL reuse
        the INVITE's number). ``headers`` are added as given (Content-Type, Authorization, ...)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri, routes = self._request_uri_and_routes()
        h = Headers()
        h.add("Via", via)
        h.add("Max-Forwards", "70")
        for route in routes:
            h.add("Route", route)
        h.add("From", str(_with_tag(self.local_addr, self.local_tag)))
        h.add("To", str(_with_tag(self.remote_addr, self.remote_tag)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if self.local_contact and method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            h.add("Contact", self.local_contact)
        for name, value in headers:
            h.add(name, value)
        return SipRequest(method, copy.deepcopy(uri), h, body)

    def create_ack(
        self, invite_cseq: int, via: str, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> SipRequest:
        """The end-to-end ACK for a 2xx: same CSeq number as the INVITE (RFC 3261 13.2.2.4)."""
        return self.create_request("ACK", via, headers=headers, body=body, cseq=invite_cseq)

    def matches_request(self, request: SipRequest, tolerate_to_tag: bool = False) -> bool:
        """True when an incoming request belongs to this dialog. ``tolerate_to_tag`` accepts a wrong local
        tag, for peers (pyVoIP) that put a tag of their own in the To of their ACK."""
        if request.call_id != self.call_id or (request.from_.tag or "") != self.remote_tag:
            return False
        return tolerate_to_tag or (request.to.tag or "") == self.local_tag
