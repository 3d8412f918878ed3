"""Sans-IO SIP user agent core: transactions + dialogs + the decisions a back-to-back contact server makes.

Feed it what arrives (``receive``) and the time (``handle_timer`` when ``get_timer`` says so); read what it
decided from ``next_event()`` (for the application) and ``pop_outgoing()`` (bytes for the transport shell).
Commands (``answer``, ``hangup``, ``invite`` ...) take an optional ``now``; without it the last time the core
was given is used, so a shell should pass ``loop.time()`` to keep retransmission timers exact.

Everything the RFCs make a UA answer by itself is answered here (OPTIONS, CANCEL, BYE, INFO, unknown dialogs,
unsupported methods and extensions), so the application only sees call-level events.

Its parts: ``ua_incoming`` (incoming calls), ``ua_outgoing`` (outgoing calls), ``ua_indialog`` (requests inside
a dialog), ``ua_state`` (what they share); this module holds the plumbing, transactions and dispatch.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from ivr.sip.dialog import Dialog, DialogError, DialogState
from ivr.sip.events import Address, CallEnded, CallHandle, EndReason, Event, Outgoing, Transport
from ivr.sip.message import (RemoteProtocolError, SipRequest, SipResponse, Via, make_response, new_branch, new_tag,
                             parse_message)
from ivr.sip.timers import DEFAULT_TIMERS, TimerValues
from ivr.sip.transaction import (InviteClientTransaction, InviteServerTransaction, NonInviteClientTransaction,
                                 NonInviteServerTransaction, TxState, client_key,
                                 server_key)

from .ua_state import CallStateError, _Call, _Flow, _Timed, _uri_address, _uri_transport
from .ua_incoming import IncomingCallsMixin
from .ua_indialog import InDialogMixin
from .ua_outgoing import OutgoingCallsMixin

log = logging.getLogger(__name__)

DEFAULT_ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "REFER")


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


class SipUserAgent(IncomingCallsMixin, OutgoingCallsMixin, InDialogMixin):
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
