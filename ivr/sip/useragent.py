"""Sans-IO SIP user agent core: transactions + dialogs + the decisions a back-to-back contact server makes.

Feed it what arrives (``receive``) and the time (``handle_timer`` when ``get_timer`` says so); read what it
decided from ``next_event()`` (for the application) and ``pop_outgoing()`` (bytes for the transport shell).
Commands (``answer``, ``hangup``, ``invite`` ...) take an optional ``now``; without it the last time the core
was given is used, so a shell should pass ``loop.time()`` to keep retransmission timers exact.

Everything the RFCs make a UA answer by itself is answered here (OPTIONS, CANCEL, BYE, INFO, unknown dialogs,
unsupported methods and extensions), so the application only sees call-level events.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from ivr.sip.dialog import Dialog, DialogError, DialogState
from ivr.sip.events import (
    Address,
    CallAcked,
    CallCancelled,
    CallEnded,
    CallHandle,
    EndReason,
    Event,
    IncomingCall,
    InfoReceived,
    Outgoing,
    OutgoingAnswered,
    OutgoingFailed,
    OutgoingProgress,
    ReferReceived,
    ReInviteCompleted,
    ReInviteReceived,
    Transport,
)
from ivr.sip.message import (
    Headers,
    NameAddr,
    RemoteProtocolError,
    SipError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    make_response,
    reason_phrase,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from ivr.sip.timers import DEFAULT_TIMERS, TimerValues
from ivr.sip.transaction import (
    AnswerRetransmitter,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    TxState,
    client_key,
    server_key,
)

log = logging.getLogger(__name__)

DEFAULT_ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "REFER")
REFER_EXPIRES = 60


class CallStateError(SipError):
    """A command does not fit the call's state (answering twice, re-INVITE before answer, unknown handle)."""


class RegistrarLike(Protocol):
    def handle(self, request: SipRequest, source: Address, transport: Transport, now: float) -> SipResponse: ...


@dataclass(slots=True)
class UaConfig:
    host: str = "127.0.0.1"
    """Advertised address for Via and Contact (the public one when behind a static NAT)."""
    port: int = 5060
    user_agent: str = "contact-server"
    allow: tuple[str, ...] = DEFAULT_ALLOW
    supported: tuple[str, ...] = ()
    """Option tags we implement; a Require naming anything else gets 420 (RFC 3261 8.2.2.3)."""
    registrar: RegistrarLike | None = None
    max_message_size: int = 65535
    contact_user: str | None = None
    timers: TimerValues = DEFAULT_TIMERS
    max_dialogs: int = 10_000
    """Calls (early or confirmed dialogs, both directions) held at once; a new INVITE beyond it gets 503 with
    Retry-After before the application sees it, so a flood of INVITEs cannot exhaust memory."""
    domains: tuple[str, ...] = ()
    """Hosts this server answers for in the Request-URI (besides ``host``). Empty: any. When set, an
    out-of-dialog request for any other host is dropped without an answer: scanners probing for an open relay
    learn nothing."""


@dataclass(slots=True)
class UaStats:
    received: int = 0
    malformed: int = 0
    dropped: int = 0
    oversized: int = 0
    foreign_domain: int = 0
    """Out-of-dialog requests for a host not in ``UaConfig.domains``, dropped."""
    rejected_dialogs: int = 0
    """New INVITEs answered 503 because ``max_dialogs`` calls were held."""
    retransmissions: int = 0
    """Requests, responses and ACKs recognised as retransmissions and absorbed."""
    sent: int = 0
    timeouts: int = 0
    internal_errors: int = 0


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


class SipUserAgent:
    def __init__(self, config: UaConfig | None = None):
        self.config = config or UaConfig()
        self.stats = UaStats()
        self.set_registrar(self.config.registrar)
        self._events: deque[Event] = deque()
        self._outgoing: list[Outgoing] = []
        self._server_txs: dict[tuple, InviteServerTransaction | NonInviteServerTransaction] = {}
        self._client_txs: dict[tuple, tuple[Any, Callable[[SipResponse | None, float], None]]] = {}
        self._calls: dict[CallHandle, _Call] = {}
        self._domains = (frozenset(d.lower() for d in (*config.domains, config.host)) if config.domains
                         else frozenset())
        self._calls_by_callid: dict[str, list[_Call]] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._timed: dict[int, _Timed] = {}
        self._seq = itertools.count()
        self._now = 0.0

    # ----------------------------------------------------------------- application interface

    def set_registrar(self, registrar: RegistrarLike | None) -> None:
        """Install the registrar (also after start-up, once routing has loaded the phones); REGISTER is
        allowed and advertised only while one is set."""
        self.config.registrar = registrar
        allow = list(self.config.allow)
        if registrar is not None and "REGISTER" not in allow:
            allow.append("REGISTER")
        self._allowed = frozenset(m.upper() for m in allow)
        self._allow_header = ", ".join(allow)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def pop_outgoing(self) -> list[Outgoing]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        """The earliest time ``handle_timer`` must be called, or None when nothing is pending."""
        heap = self._heap
        while heap:
            at, _, oid = heap[0]
            rec = self._timed.get(oid)
            if rec is not None and rec.armed == at:
                return at
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        self._now = max(self._now, now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, oid = heapq.heappop(heap)
            rec = self._timed.get(oid)
            if rec is None or rec.armed != at:
                continue
            rec.armed = None
            try:
                fired = rec.obj.handle_timer(now)
                if fired:
                    self.stats.timeouts += 1
                if rec.on_fire is not None:
                    rec.on_fire(fired, now)
            except Exception:
                self.stats.internal_errors += 1
                log.exception("SIP timer handler failed")
            self._touch(rec.obj)

    def active_calls(self) -> int:
        return len(self._calls)

    def get_dialog(self, handle: CallHandle) -> Dialog | None:
        call = self._calls.get(handle)
        return call.dialog if call else None

    # ----------------------------------------------------------------- input

    def receive(
        self,
        data: bytes,
        source: Address,
        transport: Transport | str,
        now: float,
        connection_id: int | None = None,
    ) -> None:
        """Process one datagram or one framed stream message. Never raises on bad input."""
        self._now = max(self._now, now)
        self.stats.received += 1
        transport = Transport(transport)
        if len(data) > self.config.max_message_size:
            self.stats.oversized += 1
        if not data.strip(b"\r\n\t "):
            return  # RFC 5626 keep-alive
        flow = _Flow((source[0], source[1]), transport, connection_id)
        try:
            message = parse_message(data, max_size=self.config.max_message_size)
        except RemoteProtocolError as exc:
            self.stats.malformed += 1
            self._answer_malformed(exc, flow, now)
            return
        except Exception:
            self.stats.malformed += 1
            log.exception("SIP parser failed on a message from %s", source)
            return
        try:
            if isinstance(message, SipRequest):
                self._on_request(message, flow, now)
            else:
                self._on_response(message, now)
        except (RemoteProtocolError, DialogError) as exc:
            self.stats.malformed += 1
            log.info("bad SIP message from %s: %s", source, exc)
            if isinstance(message, SipRequest) and message.method != "ACK":
                self._try_stateless(message, flow, getattr(exc, "status", None) or 400, getattr(exc, "reason", None) or "Bad Request")
        except Exception:
            self.stats.internal_errors += 1
            log.exception("SIP user agent failed on a message from %s", source)
            if isinstance(message, SipRequest) and message.method != "ACK":
                self._try_stateless(message, flow, 500, "Server Internal Error")

    # ----------------------------------------------------------------- plumbing

    def _send(self, message: SipRequest | SipResponse, flow: _Flow) -> None:
        self.stats.sent += 1
        self._outgoing.append(Outgoing(bytes(message), flow.address, flow.transport, flow.connection_id))

    def _sender(self, flow: _Flow) -> Callable[[SipRequest | SipResponse], None]:
        return lambda message: self._send(message, flow)

    def _track(self, obj: Any, on_fire: Callable[[bool, float], None] | None = None, cleanup: Callable[[], None] | None = None) -> None:
        self._timed[id(obj)] = _Timed(obj, on_fire, cleanup)
        self._touch(obj)

    def _touch(self, obj: Any) -> None:
        """Re-arm an object's timer after anything that may have changed it; forget it once finished."""
        rec = self._timed.get(id(obj))
        if rec is None:
            return
        if getattr(obj, "terminated", False) or getattr(obj, "done", False):
            del self._timed[id(obj)]
            if rec.cleanup is not None:
                rec.cleanup()
            return
        at = obj.deadline
        if at is not None and at != rec.armed:
            rec.armed = at
            heapq.heappush(self._heap, (at, next(self._seq), id(obj)))

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _now_or(self, now: float | None) -> float:
        if now is not None:
            self._now = max(self._now, now)
            return now
        return self._now

    def _response_flow(self, request: SipRequest, flow: _Flow) -> _Flow:
        """RFC 3261 18.2.2 / RFC 3581: received/rport of the top Via, same connection over TCP."""
        if flow.transport is Transport.TCP:
            return flow
        try:
            via = request.top_via
        except Exception:
            return flow
        host = via.received or via.host
        rport = via.rport
        port = rport if isinstance(rport, int) and not isinstance(rport, bool) else (via.port or 5060)
        return _Flow((host, port), flow.transport, flow.connection_id)

    def _stamp_via(self, request: SipRequest, flow: _Flow) -> None:
        """Add received= and rport= to the top Via (RFC 3261 18.2.1, RFC 3581 4)."""
        vias = request.headers.get_all("Via")
        if not vias:
            raise RemoteProtocolError("Missing Via header")
        top = Via.parse(vias[0])
        source_host, source_port = flow.address
        changed = False
        if "rport" in top.params and top.params["rport"] is None:
            top.params["rport"] = str(source_port)
            top.params["received"] = source_host
            changed = True
        elif top.host != source_host:
            top.params["received"] = source_host
            changed = True
        if changed:
            request.headers.remove("Via")
            for value in reversed([str(top)] + vias[1:]):
                request.headers.add("Via", value, first=True)

    def _response(
        self,
        request: SipRequest,
        status: int,
        reason: str | None = None,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        if to_tag is None and status > 100 and not request.to.tag:
            to_tag = new_tag()
        response = make_response(request, status, reason, to_tag=to_tag, headers=tuple(headers))
        response.headers.add("Server", self.config.user_agent)
        if body:
            response.body = body
        return response

    def _answer_malformed(self, exc: RemoteProtocolError, flow: _Flow, now: float) -> None:
        partial = exc.request
        if exc.status is None or not isinstance(partial, SipRequest) or partial.method == "ACK":
            self.stats.dropped += 1
            return
        self._try_stateless(partial, flow, exc.status, exc.reason)

    def _try_stateless(self, request: SipRequest, flow: _Flow, status: int, reason: str) -> None:
        try:
            response = make_response(request, status, reason)
            response.headers.add("Server", self.config.user_agent)
            self._send(response, self._response_flow(request, flow))
        except Exception as exc:  # the partial request may lack what a response needs
            self.stats.dropped += 1
            log.info("cannot answer a malformed request from %s: %s", flow.address, exc)

    def _via(self, transport: Transport) -> str:
        return f"SIP/2.0/{transport.value.upper()} {self.config.host}:{self.config.port};branch={new_branch()};rport"

    def _contact(self, transport: Transport) -> str:
        user = f"{self.config.contact_user}@" if self.config.contact_user else ""
        suffix = ";transport=tcp" if transport is Transport.TCP else ""
        return f"<sip:{user}{self.config.host}:{self.config.port}{suffix}>"

    def _capabilities(self) -> list[tuple[str, str]]:
        headers = [("Allow", self._allow_header), ("Accept", "application/sdp")]
        if self.config.supported:
            headers.append(("Supported", ", ".join(self.config.supported)))
        return headers

    # server transactions

    def _new_server_tx(self, request: SipRequest, flow: _Flow, now: float, invite: bool) -> Any:
        reply_flow = self._response_flow(request, flow)
        key = server_key(request)
        reliable = flow.transport.reliable
        if invite:
            tx: Any = InviteServerTransaction(request, self._sender(reply_flow), reliable, now, self.config.timers)
        else:
            tx = NonInviteServerTransaction(request, self._sender(reply_flow), reliable, now, self.config.timers)
        self._server_txs[key] = tx

        def forget() -> None:
            if self._server_txs.get(key) is tx:
                del self._server_txs[key]

        self._track(tx, None, forget)
        return tx

    def _respond(self, tx: Any, response: SipResponse, now: float) -> None:
        tx.respond(response, now)
        self._touch(tx)

    def _reply(self, request: SipRequest, flow: _Flow, now: float, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer a non-INVITE request through its own server transaction (absorbs retransmissions)."""
        tx = self._new_server_tx(request, flow, now, invite=False)
        self._respond(tx, self._response(request, status, reason, headers=headers), now)

    # client transactions

    def _new_client_tx(self, request: SipRequest, flow: _Flow, now: float, handler: Callable[[SipResponse | None, float], None]) -> Any:
        request.headers.add("User-Agent", self.config.user_agent)
        reliable = flow.transport.reliable
        if request.method == "INVITE":
            tx: Any = InviteClientTransaction(request, self._sender(flow), reliable, now, self.config.timers)
        else:
            tx = NonInviteClientTransaction(request, self._sender(flow), reliable, now, self.config.timers)
        key = client_key(request)
        self._client_txs[key] = (tx, handler)

        def on_fire(fired: bool, at: float) -> None:
            if fired:
                handler(None, at)

        def forget() -> None:
            entry = self._client_txs.get(key)
            if entry is not None and entry[0] is tx:
                del self._client_txs[key]

        self._track(tx, on_fire, forget)
        return tx

    # calls

    def _add_call(self, call: _Call) -> None:
        self._calls[call.handle] = call
        self._calls_by_callid.setdefault(call.handle.call_id, []).append(call)

    def _remove_call(self, call: _Call) -> None:
        self._calls.pop(call.handle, None)
        calls = self._calls_by_callid.get(call.handle.call_id)
        if calls is not None:
            if call in calls:
                calls.remove(call)
            if not calls:
                del self._calls_by_callid[call.handle.call_id]
        for obj in (call.answer, call.reinvite_answer):
            if obj is not None:
                obj.stop()
                self._touch(obj)
        tx = call.reinvite_server_tx
        if tx is not None and tx.state is TxState.PROCEEDING:
            self._respond(tx, self._response(tx.request, 487, "Request Terminated", call.handle.local_tag), self._now)

    def _end(self, call: _Call, reason: EndReason, status: int | None = None) -> None:
        """Report the end once; internal cleanup may come later (a BYE or CANCEL in flight)."""
        if not call.ended:
            call.ended = True
            self._emit(CallEnded(call.handle, reason, status))
        if call.dialog is not None:
            call.dialog.state = DialogState.TERMINATED

    def _find_call(self, request: SipRequest, tolerate_to_tag: bool = False) -> _Call | None:
        from_tag = request.from_.tag or ""
        to_tag = request.to.tag or ""
        for call in self._calls_by_callid.get(request.call_id, ()):
            if call.remote_tag == from_tag and (tolerate_to_tag or call.handle.local_tag == to_tag):
                return call
        return None

    def _call(self, handle: CallHandle) -> _Call:
        call = self._calls.get(handle)
        if call is None:
            raise CallStateError(f"unknown or finished call {handle}; wait for events before sending commands")
        return call

    def _dialog_flow(self, call: _Call) -> _Flow:
        assert call.dialog is not None
        hop = call.dialog.next_hop()
        transport = _uri_transport(hop, call.flow.transport)
        conn = call.flow.connection_id if transport is call.flow.transport else None
        return _Flow(_uri_address(hop), transport, conn)

    def _send_in_dialog(
        self,
        call: _Call,
        method: str,
        now: float,
        handler: Callable[[SipResponse | None, float], None],
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Any:
        assert call.dialog is not None
        flow = self._dialog_flow(call)
        request = call.dialog.create_request(method, self._via(flow.transport), headers=headers, body=body)
        return self._new_client_tx(request, flow, now, handler)

    def _send_bye(self, call: _Call, now: float) -> None:
        if call.bye_sent or call.dialog is None:
            return
        call.bye_sent = True
        self._send_in_dialog(call, "BYE", now, lambda response, at: None)
        self._remove_call(call)

    # ----------------------------------------------------------------- incoming requests

    def _on_request(self, request: SipRequest, flow: _Flow, now: float) -> None:
        self._stamp_via(request, flow)
        if request.cseq[1] != request.method:
            raise RemoteProtocolError("CSeq method does not match the request method")
        method = request.method
        if method == "ACK":
            self._on_ack(request, now)
            return
        tx = self._server_txs.get(server_key(request))
        if tx is not None:
            self.stats.retransmissions += 1
            tx.receive_request(request, now)
            self._touch(tx)
            return
        if method == "CANCEL":
            self._on_cancel(request, flow, now)
            return
        if not request.to.tag and self._domains and request.uri.host.lower() not in self._domains:
            self.stats.foreign_domain += 1
            log.debug("dropped %s for foreign host %s from %s", method, request.uri.host, flow.address)
            return
        if method not in self._allowed:
            self._reply_or_reject_invite(request, flow, now, 405, "Method Not Allowed", [("Allow", self._allow_header)])
            return
        unsupported = [tag for tag in request.headers.get_all("Require") if tag not in self.config.supported]
        if unsupported:
            self._reply_or_reject_invite(request, flow, now, 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])
            return
        if request.to.tag:
            self._on_in_dialog(request, flow, now)
            return
        if method == "INVITE":
            if len(self._calls) >= self.config.max_dialogs:
                self.stats.rejected_dialogs += 1
                self._reply_or_reject_invite(request, flow, now, 503, "Service Unavailable", [("Retry-After", "5")])
                return
            self._on_invite(request, flow, now)
        elif method == "OPTIONS":
            self._reply(request, flow, now, 200, "OK", self._capabilities())
        elif method == "REGISTER":
            self._on_register(request, flow, now)
        else:
            self._reply(request, flow, now, 481, "Call/Transaction Does Not Exist")

    def _reply_or_reject_invite(self, request: SipRequest, flow: _Flow, now: float, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        if request.method == "INVITE":
            tx = self._new_server_tx(request, flow, now, invite=True)
            self._respond(tx, self._response(request, status, reason, headers=headers), now)
        else:
            self._reply(request, flow, now, status, reason, headers)

    def _on_register(self, request: SipRequest, flow: _Flow, now: float) -> None:
        registrar = self.config.registrar
        if registrar is None:
            self._reply(request, flow, now, 405, "Method Not Allowed", [("Allow", self._allow_header)])
            return
        tx = self._new_server_tx(request, flow, now, invite=False)
        try:
            response = registrar.handle(request, flow.address, flow.transport, now)
        except Exception:
            self.stats.internal_errors += 1
            log.exception("registrar failed on REGISTER from %s", flow.address)
            response = self._response(request, 500, "Server Internal Error")
        if "Server" not in response.headers:
            response.headers.add("Server", self.config.user_agent)
        self._respond(tx, response, now)

    def _on_invite(self, request: SipRequest, flow: _Flow, now: float) -> None:
        from_tag = request.from_.tag or ""
        for other in self._calls_by_callid.get(request.call_id, ()):
            if not other.handle.outgoing and other.remote_tag == from_tag and other.invite.cseq[0] == request.cseq[0]:
                # Same request arriving by another path (RFC 3261 8.2.2.2).
                self._reply_or_reject_invite(request, flow, now, 482, "Loop Detected", [])
                return
        tx = self._new_server_tx(request, flow, now, invite=True)
        if not request.headers.get_all("Contact"):
            self._respond(tx, self._response(request, 400, "Missing Contact header"), now)
            return
        NameAddr.parse(request.headers.get_all("Contact")[0])
        handle = CallHandle(request.call_id, new_tag(), outgoing=False)
        call = _Call(handle=handle, invite=request, flow=flow, remote_tag=from_tag, server_tx=tx)
        self._add_call(call)
        self._emit(IncomingCall(handle, request, flow.address, flow.transport))

    def _on_ack(self, request: SipRequest, now: float) -> None:
        tx = self._server_txs.get(server_key(request))
        if isinstance(tx, InviteServerTransaction):
            to_tu = tx.receive_ack(now)
            self._touch(tx)
            if not to_tu:
                return  # ACK for our 3xx-6xx: the transaction absorbs it
        call = self._find_call(request, tolerate_to_tag=True)
        if call is None:
            self.stats.dropped += 1
            return
        seq = request.cseq[0]
        if call.answer is not None and not call.answer.done and seq == call.invite.cseq[0]:
            call.answer.stop()
            self._touch(call.answer)
            call.acked = True
            if call.pending_bye:
                self._send_bye(call, now)
            elif not call.ended:
                self._emit(CallAcked(call.handle, request))
            return
        if call.reinvite_answer is not None and not call.reinvite_answer.done and call.reinvite_server_tx is not None and seq == call.reinvite_server_tx.request.cseq[0]:
            call.reinvite_answer.stop()
            self._touch(call.reinvite_answer)
            return
        self.stats.retransmissions += 1  # one ACK per 2xx retransmission (pyVoIP does this)

    def _on_cancel(self, request: SipRequest, flow: _Flow, now: float) -> None:
        invite_tx = self._server_txs.get(server_key(request, method="INVITE"))
        if not isinstance(invite_tx, InviteServerTransaction):
            self._reply(request, flow, now, 481, "Call/Transaction Does Not Exist")
            return
        call = next((c for c in self._calls_by_callid.get(request.call_id, ()) if c.server_tx is invite_tx), None)
        to_tag = call.handle.local_tag if call is not None else None
        self._reply(request, flow, now, 200, "OK")
        if invite_tx.state is not TxState.PROCEEDING:
            return
        self._respond(invite_tx, self._response(invite_tx.request, 487, "Request Terminated", to_tag=to_tag), now)
        if call is not None:
            self._remove_call(call)
            if not call.ended:
                self._emit(CallCancelled(call.handle))
            self._end(call, EndReason.CANCELLED, 487)

    def _on_in_dialog(self, request: SipRequest, flow: _Flow, now: float) -> None:
        call = self._find_call(request)
        if call is None or call.dialog is None or call.ended and request.method != "BYE":
            self._reply_or_reject_invite(request, flow, now, 481, "Call/Transaction Does Not Exist", [])
            return
        dialog = call.dialog
        if not dialog.accept_remote_cseq(request):
            self._reply_or_reject_invite(request, flow, now, 500, "CSeq Out of Order", [])
            return
        method = request.method
        if method == "BYE":
            self._reply(request, flow, now, 200, "OK")
            if call.server_tx is not None and call.server_tx.state is TxState.PROCEEDING:
                self._respond(call.server_tx, self._response(call.invite, 487, "Request Terminated", to_tag=call.handle.local_tag), now)
            self._remove_call(call)
            self._end(call, EndReason.BYE_REMOTE)
        elif method == "INFO":
            self._reply(request, flow, now, 200, "OK")
            self._emit(InfoReceived(call.handle, request))
        elif method == "OPTIONS":
            self._reply(request, flow, now, 200, "OK", self._capabilities())
        elif method == "INVITE":
            self._on_reinvite(call, request, flow, now)
        elif method == "REFER":
            self._on_refer(call, request, flow, now)
        else:
            self._reply(request, flow, now, 405, "Method Not Allowed", [("Allow", self._allow_header)])

    def _on_refer(self, call: _Call, request: SipRequest, flow: _Flow, now: float) -> None:
        """RFC 3515: 202 Accepted, then at once a NOTIFY with "SIP/2.0 100 Trying"; the application sends the
        final NOTIFY through ``notify_refer``. One REFER at a time per dialog (491 while one is pending)."""
        values = request.headers.raw_values("Refer-To")
        if len(values) != 1:
            self._reply(request, flow, now, 400, "Bad Request", [("Warning", '399 - "REFER needs exactly one Refer-To"')])
            return
        try:
            target = NameAddr.parse(values[0])
        except RemoteProtocolError:
            self._reply(request, flow, now, 400, "Bad Request", [("Warning", '399 - "malformed Refer-To"')])
            return
        if call.dialog is None or call.dialog.state is not DialogState.CONFIRMED or call.bye_sent:
            self._reply(request, flow, now, 481, "Call/Transaction Does Not Exist")
            return
        if call.refer_id is not None:
            self._reply(request, flow, now, 491, "Request Pending")
            return
        self._reply(request, flow, now, 202, "Accepted")
        call.refer_id = request.cseq[0]
        uri = target.uri
        self._emit(ReferReceived(call.handle, request, str(uri), getattr(uri, "user", None), getattr(uri, "host", "")))
        self._send_notify(call, 100, "Trying", now)

    def _send_notify(self, call: _Call, status: int, reason: str | None, now: float) -> None:
        assert call.refer_id is not None
        final = status >= 200
        state = "terminated;reason=noresource" if final else f"active;expires={REFER_EXPIRES}"
        headers = [("Event", f"refer;id={call.refer_id}"), ("Subscription-State", state),
                   ("Content-Type", "message/sipfrag;version=2.0")]
        body = f"SIP/2.0 {status} {reason or reason_phrase(status)}\r\n".encode()
        if final:
            call.refer_id = None

        def on_response(response: SipResponse | None, at: float) -> None:
            if response is None or response.status >= 300:
                log.info("NOTIFY for REFER on %s not accepted (%s)", call.handle,
                         "timeout" if response is None else response.status)

        self._send_in_dialog(call, "NOTIFY", now, on_response, headers, body)

    def _on_reinvite(self, call: _Call, request: SipRequest, flow: _Flow, now: float) -> None:
        tx = self._new_server_tx(request, flow, now, invite=True)
        busy_server = call.reinvite_server_tx is not None and call.reinvite_server_tx.state is TxState.PROCEEDING
        if busy_server or (call.server_tx is not None and call.server_tx.state is TxState.PROCEEDING):
            self._respond(tx, self._response(request, 500, "Server Internal Error", headers=[("Retry-After", "1")]), now)
            return
        if call.reinvite_client_tx is not None and call.reinvite_client_tx.state in (TxState.CALLING, TxState.PROCEEDING):
            self._respond(tx, self._response(request, 491, "Request Pending"), now)
            return
        assert call.dialog is not None
        call.dialog.refresh_target(request)
        call.reinvite_server_tx = tx
        self._emit(ReInviteReceived(call.handle, request))

    # ----------------------------------------------------------------- incoming responses

    def _on_response(self, response: SipResponse, now: float) -> None:
        entry = self._client_txs.get(client_key(response))
        if entry is None:
            self.stats.dropped += 1
            return
        tx, handler = entry
        passed = tx.receive_response(response, now)
        self._touch(tx)
        if passed is None:
            self.stats.retransmissions += 1
            return
        handler(passed, now)

    # ----------------------------------------------------------------- commands: incoming calls

    def ring(self, handle: CallHandle, *, now: float | None = None) -> None:
        """Send 180 Ringing (creates the early dialog)."""
        self._provisional(handle, 180, "Ringing", self._now_or(now))

    def progress(self, handle: CallHandle, sdp: bytes, *, now: float | None = None) -> None:
        """Send 183 Session Progress with early media SDP."""
        self._provisional(handle, 183, "Session Progress", self._now_or(now), sdp)

    def _provisional(self, handle: CallHandle, status: int, reason: str, now: float, sdp: bytes = b"") -> None:
        call = self._call(handle)
        tx = call.server_tx
        if tx is None or tx.state is not TxState.PROCEEDING:
            raise CallStateError(f"call {handle} is not an unanswered incoming call")
        contact = self._contact(call.flow.transport)
        if call.dialog is None:
            call.dialog = Dialog.as_uas(call.invite, handle.local_tag, contact)
        headers = [("Contact", contact)]
        if sdp:
            headers.append(("Content-Type", "application/sdp"))
        self._respond(tx, self._response(call.invite, status, reason, handle.local_tag, headers, sdp), now)

    def answer(self, handle: CallHandle, sdp: bytes, extra_headers: Iterable[tuple[str, str]] = (), *, now: float | None = None) -> None:
        """Send 200 OK with our Contact and SDP; it is retransmitted until the ACK (CallAcked) arrives."""
        now = self._now_or(now)
        call = self._call(handle)
        tx = call.server_tx
        if tx is None or tx.state is not TxState.PROCEEDING or call.ended:
            raise CallStateError(f"call {handle} cannot be answered: it is not an unanswered incoming call")
        contact = self._contact(call.flow.transport)
        if call.dialog is None:
            call.dialog = Dialog.as_uas(call.invite, handle.local_tag, contact)
        call.dialog.state = DialogState.CONFIRMED
        headers = [("Contact", contact), *self._capabilities()]
        if sdp:
            headers.append(("Content-Type", "application/sdp"))
        headers.extend(extra_headers)
        response = self._response(call.invite, 200, "OK", handle.local_tag, headers, sdp)
        self._respond(tx, response, now)
        call.answer = AnswerRetransmitter(response, self._sender(self._response_flow(call.invite, call.flow)), call.flow.transport.reliable, now, self.config.timers)

        def on_fire(gave_up: bool, at: float) -> None:
            if gave_up:
                self._end(call, EndReason.NO_ACK)
                self._send_bye(call, at)

        self._track(call.answer, on_fire)

    def reject(self, handle: CallHandle, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = (), *, now: float | None = None) -> None:
        """Answer an unanswered incoming call with a 3xx-6xx; CallEnded(REJECTED, status) follows."""
        if not 300 <= status < 700:
            raise CallStateError(f"reject needs a 3xx-6xx status, not {status}")
        now = self._now_or(now)
        call = self._call(handle)
        tx = call.server_tx
        if tx is None or tx.state is not TxState.PROCEEDING:
            raise CallStateError(f"call {handle} cannot be rejected: it was already answered")
        self._respond(tx, self._response(call.invite, status, reason, handle.local_tag, headers), now)
        self._remove_call(call)
        self._end(call, EndReason.REJECTED, status)

    def hangup(self, handle: CallHandle, *, now: float | None = None) -> None:
        """End a call in whatever state it is: BYE, CANCEL, or 603 for an unanswered incoming call.

        Idempotent: hanging up a call that already ended does nothing."""
        now = self._now_or(now)
        call = self._calls.get(handle)
        if call is None or call.ended:
            return
        if not handle.outgoing:
            tx = call.server_tx
            if tx is not None and tx.state is TxState.PROCEEDING:
                self.reject(handle, 603, "Decline", now=now)
                return
            self._end(call, EndReason.BYE_LOCAL)
            if call.answer is not None and not call.acked and not call.answer.done:
                call.pending_bye = True  # RFC 3261 15: no BYE before the ACK (or its timeout)
            else:
                self._send_bye(call, now)
            return
        if call.dialog is not None and call.dialog.state is DialogState.CONFIRMED:
            self._end(call, EndReason.BYE_LOCAL)
            self._send_bye(call, now)
            return
        self._end(call, EndReason.CANCELLED)
        if call.got_provisional:
            self._send_cancel(call, now)
        else:
            call.cancel_pending = True  # RFC 3261 9.1: CANCEL only after a provisional response

    # ----------------------------------------------------------------- commands: outgoing calls

    def invite(
        self,
        target: str,
        from_uri: str,
        sdp: bytes,
        headers: Iterable[tuple[str, str]] = (),
        credentials: tuple[str, str] | None = None,
        destination: Address | None = None,
        *,
        transport: Transport | str | None = None,
        now: float | None = None,
    ) -> CallHandle:
        """Start an outgoing call. ``destination`` overrides where the INVITE goes (an outbound proxy);
        otherwise the target URI's host and port (an IP address: the core does no DNS)."""
        now = self._now_or(now)
        uri = SipUri.parse(target.strip().strip("<>"))
        chosen = Transport(transport) if transport is not None else _uri_transport(uri, Transport.UDP)
        from_addr = NameAddr.parse(from_uri if "<" in from_uri or from_uri.startswith('"') else f"<{from_uri}>")
        local_tag = new_tag()
        from_addr.params["tag"] = local_tag
        call_id = new_call_id(self.config.host)
        contact = self._contact(chosen)
        h = Headers()
        h.add("Via", self._via(chosen))
        h.add("Max-Forwards", "70")
        h.add("From", str(from_addr))
        h.add("To", str(NameAddr(None, uri)))
        h.add("Call-ID", call_id)
        h.add("CSeq", "1 INVITE")
        h.add("Contact", contact)
        for name, value in self._capabilities():
            h.add(name, value)
        if sdp:
            h.add("Content-Type", "application/sdp")
        for name, value in headers:
            h.add(name, value)
        request = SipRequest("INVITE", uri, h, sdp)
        flow = _Flow(destination or _uri_address(uri), chosen)
        handle = CallHandle(call_id, local_tag, outgoing=True)
        call = _Call(handle=handle, invite=request, flow=flow, credentials=credentials)
        self._add_call(call)
        self._start_invite(call, request, now)
        return handle

    def _start_invite(self, call: _Call, request: SipRequest, now: float) -> None:
        call.invite = request
        call.client_tx = self._new_client_tx(request, call.flow, now, lambda response, at: self._on_invite_response(call, response, at))

    def _on_invite_response(self, call: _Call, response: SipResponse | None, now: float) -> None:
        if response is None:
            self._remove_call(call)
            if not call.ended:
                self._emit(OutgoingFailed(call.handle, 408, "Request Timeout"))
            self._end(call, EndReason.TIMEOUT, 408)
            return
        status = response.status
        contact = self._contact(call.flow.transport)
        if status < 200:
            call.got_provisional = True
            if response.to.tag and response.headers.get_all("Contact") and call.dialog is None:
                call.dialog = Dialog.as_uac(call.invite, response, contact)
                call.remote_tag = call.dialog.remote_tag
            if call.cancel_pending:
                self._send_cancel(call, now)
            elif status > 100 and not call.ended:
                self._emit(OutgoingProgress(call.handle, status, response))
            return
        if status < 300:
            self._on_invite_2xx(call, response, now, contact)
            return
        if status in (401, 407) and call.credentials and not call.auth_tried and not call.ended:
            if self._retry_with_auth(call, response, now):
                return
        self._remove_call(call)
        if not call.ended:
            self._emit(OutgoingFailed(call.handle, status, response.reason))
        self._end(call, EndReason.REJECTED, status)

    def _on_invite_2xx(self, call: _Call, response: SipResponse, now: float, contact: str) -> None:
        tag = response.to.tag or ""
        if call.dialog is not None and call.dialog.state is DialogState.CONFIRMED:
            if tag == call.dialog.remote_tag and call.ack is not None:
                self.stats.retransmissions += 1
                self._send(call.ack, self._dialog_flow(call))
                return
            # A second fork answered: acknowledge and release it (RFC 3261 13.2.2.4).
            fork = Dialog.as_uac(call.invite, response, contact)
            self._ack_and_bye(fork, call, now)
            return
        if call.dialog is not None and call.dialog.remote_tag == tag:
            call.dialog.update_from_uac_response(response)
        else:
            call.dialog = Dialog.as_uac(call.invite, response, contact)
        call.remote_tag = call.dialog.remote_tag
        flow = self._dialog_flow(call)
        call.ack = call.dialog.create_ack(call.invite.cseq[0], self._via(flow.transport), headers=call.auth_headers)
        call.ack.headers.add("User-Agent", self.config.user_agent)
        self._send(call.ack, flow)
        if call.ended:
            self._send_bye(call, now)  # we hung up while the answer was on its way
            return
        self._emit(OutgoingAnswered(call.handle, response))

    def _ack_and_bye(self, dialog: Dialog, call: _Call, now: float) -> None:
        temp = _Call(handle=CallHandle(dialog.call_id, dialog.local_tag, True), invite=call.invite, flow=call.flow, dialog=dialog)
        flow = self._dialog_flow(temp)
        self._send(dialog.create_ack(call.invite.cseq[0], self._via(flow.transport)), flow)
        temp.ended = True
        self._send_bye(temp, now)

    def _retry_with_auth(self, call: _Call, challenge: SipResponse, now: float) -> bool:
        from ivr.sip.digest import digest_response

        assert call.credentials is not None
        proxy = challenge.status == 407
        user, password = call.credentials
        old = call.invite
        authorization = None
        # One challenge per algorithm may be offered, strongest first: answer the first we can.
        for value in challenge.headers.raw_values("Proxy-Authenticate" if proxy else "WWW-Authenticate"):
            try:
                authorization = digest_response(value, "INVITE", str(old.uri), user, password, body=old.body)
                break
            except (SipError, ValueError) as exc:
                log.info("cannot answer the challenge %r for %s: %s", value[:60], call.handle, exc)
        if authorization is None:
            return False
        call.auth_tried = True
        header = "Proxy-Authorization" if proxy else "Authorization"
        call.auth_headers = [(header, authorization)]
        h = old.headers.copy()
        h.remove("Via")
        h.add("Via", self._via(call.flow.transport), first=True)
        h.set("CSeq", f"{old.cseq[0] + 1} INVITE")
        h.remove("User-Agent")
        h.add(header, authorization)
        self._start_invite(call, SipRequest("INVITE", old.uri, h, old.body), now)
        return True

    def _send_cancel(self, call: _Call, now: float) -> None:
        if call.cancel_sent:
            return
        call.cancel_sent = True
        call.cancel_pending = False
        invite = call.invite
        h = Headers()
        h.add("Via", str(invite.top_via))
        h.add("Max-Forwards", "70")
        for route in invite.headers.get_all("Route"):
            h.add("Route", route)
        h.add("From", invite.headers.get("From") or "")
        h.add("To", invite.headers.get("To") or "")
        h.add("Call-ID", invite.call_id)
        h.add("CSeq", f"{invite.cseq[0]} CANCEL")
        self._new_client_tx(SipRequest("CANCEL", invite.uri, h), call.flow, now, lambda response, at: None)
        # RFC 3261 9.1: without a final response to the INVITE in 64*T1, consider it cancelled.
        give_up = _Deadline(now + self.config.timers.transaction_timeout)
        self._track(give_up, lambda fired, at: self._remove_call(call) if fired else None)

    # ----------------------------------------------------------------- commands: in-dialog

    def _confirmed(self, handle: CallHandle) -> _Call:
        call = self._call(handle)
        if call.ended or call.dialog is None or call.dialog.state is not DialogState.CONFIRMED:
            raise CallStateError(f"call {handle} is not established")
        return call

    def reinvite(self, handle: CallHandle, sdp: bytes, *, now: float | None = None) -> None:
        """Send a re-INVITE (hold/resume); ReInviteCompleted reports the outcome."""
        now = self._now_or(now)
        call = self._confirmed(handle)
        if (call.reinvite_client_tx is not None and call.reinvite_client_tx.state in (TxState.CALLING, TxState.PROCEEDING)) or (
            call.reinvite_server_tx is not None and call.reinvite_server_tx.state is TxState.PROCEEDING
        ):
            raise CallStateError(f"call {handle} already has a re-INVITE in progress; wait for its outcome")
        headers = [*call.auth_headers, *self._capabilities()]
        if sdp:
            headers.append(("Content-Type", "application/sdp"))
        call.reinvite_ack = None
        call.reinvite_client_tx = self._send_in_dialog(call, "INVITE", now, lambda response, at: self._on_reinvite_response(call, response, at), headers, sdp)

    def _on_reinvite_response(self, call: _Call, response: SipResponse | None, now: float) -> None:
        if response is not None and response.status < 200:
            return
        if response is not None and response.status < 300:
            if call.reinvite_ack is not None:
                self.stats.retransmissions += 1
                self._send(call.reinvite_ack, self._dialog_flow(call))
                return
            assert call.dialog is not None and call.reinvite_client_tx is not None
            call.dialog.refresh_target(response)
            flow = self._dialog_flow(call)
            call.reinvite_ack = call.dialog.create_ack(call.reinvite_client_tx.request.cseq[0], self._via(flow.transport))
            self._send(call.reinvite_ack, flow)
            if call.bye_sent:
                return
        status = 408 if response is None else response.status
        if call.ended:
            return
        self._emit(ReInviteCompleted(call.handle, status, response))
        self._dialog_failure(call, status, now)

    def _dialog_failure(self, call: _Call, status: int, now: float) -> None:
        """RFC 3261 12.2.1.2: a 481 or 408 to an in-dialog request ends the dialog."""
        if status == 481:
            self._remove_call(call)
            self._end(call, EndReason.FAILED, 481)
        elif status == 408:
            self._end(call, EndReason.TIMEOUT, 408)
            self._send_bye(call, now)

    def answer_reinvite(self, handle: CallHandle, sdp: bytes, *, now: float | None = None) -> None:
        """Accept the pending ReInviteReceived with our SDP (retransmitted until ACK)."""
        now = self._now_or(now)
        call = self._call(handle)
        tx = call.reinvite_server_tx
        if tx is None or tx.state is not TxState.PROCEEDING:
            raise CallStateError(f"call {handle} has no re-INVITE waiting for an answer")
        headers = [("Contact", self._contact(call.flow.transport)), *self._capabilities()]
        if sdp:
            headers.append(("Content-Type", "application/sdp"))
        response = self._response(tx.request, 200, "OK", handle.local_tag, headers, sdp)
        self._respond(tx, response, now)
        call.reinvite_answer = AnswerRetransmitter(response, self._sender(self._response_flow(tx.request, call.flow)), call.flow.transport.reliable, now, self.config.timers)

        def on_fire(gave_up: bool, at: float) -> None:
            if gave_up and not call.ended:
                self._end(call, EndReason.NO_ACK)
                self._send_bye(call, at)

        self._track(call.reinvite_answer, on_fire)

    def reject_reinvite(self, handle: CallHandle, status: int = 488, reason: str | None = None, *, now: float | None = None) -> None:
        """Refuse the pending re-INVITE (488 Not Acceptable Here by default); the call goes on unchanged."""
        now = self._now_or(now)
        call = self._call(handle)
        tx = call.reinvite_server_tx
        if tx is None or tx.state is not TxState.PROCEEDING:
            raise CallStateError(f"call {handle} has no re-INVITE waiting for an answer")
        self._respond(tx, self._response(tx.request, status, reason, handle.local_tag), now)

    def notify_refer(self, handle: CallHandle, status: int, reason: str | None = None, *,
                     now: float | None = None) -> None:
        """Report the progress (1xx) or outcome (>= 200, ends the subscription) of the REFER received on
        ``handle`` as a NOTIFY with a message/sipfrag body (RFC 3515 2.4.5)."""
        now = self._now_or(now)
        if not 100 <= status <= 699:
            raise ValueError(f"sipfrag status must be 100..699, not {status}")
        call = self._confirmed(handle)
        if call.refer_id is None:
            raise CallStateError(f"call {handle} has no REFER waiting for a NOTIFY")
        self._send_notify(call, status, reason, now)

    def send_info(self, handle: CallHandle, content_type: str, body: bytes, *, now: float | None = None) -> None:
        """Send an in-dialog INFO; a 481 or timeout ends the call (CallEnded FAILED/TIMEOUT)."""
        now = self._now_or(now)
        call = self._confirmed(handle)

        def on_response(response: SipResponse | None, at: float) -> None:
            status = 408 if response is None else response.status
            if status >= 300 and not call.ended:
                self._dialog_failure(call, status, at)

        self._send_in_dialog(call, "INFO", now, on_response, [("Content-Type", content_type)], body)
