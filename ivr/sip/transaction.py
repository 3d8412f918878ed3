"""RFC 3261 section 17 transaction state machines, with the RFC 6026 "Accepted" states.

Sans-IO: every transaction is given a ``send`` callable (bound by the user agent to the peer's address and
transport) and the current time on each call. Nothing here reads a clock or touches a socket, so the whole
retransmission behaviour is testable with a fake clock. A transaction exposes ``deadline`` (the earliest time
``handle_timer`` must be called, or None) and ``state``; the user agent keeps them in a timer heap.

Over a reliable transport (TCP) nothing is retransmitted and the "wait for stray retransmissions" timers
(D, I, J, K) are zero, per RFC 3261 17.1.1.2 / 17.2.1 / 17.2.2.
"""

from __future__ import annotations

import enum
import logging
from typing import Callable, Union

from ivr.sip.message import SipError, SipRequest, SipResponse, make_response
from ivr.sip.timers import DEFAULT_TIMERS, TimerValues

log = logging.getLogger(__name__)

SipMessage = Union[SipRequest, SipResponse]
Send = Callable[[SipMessage], None]

MAGIC_COOKIE = "z9hG4bK"


class TransactionError(SipError):
    """The transaction user asked for something the RFC state machine does not allow in this state."""


class TxState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


ServerKey = tuple
ClientKey = tuple[str, str]


def server_key(request: SipRequest, method: str | None = None) -> ServerKey:
    """Key matching a request to its server transaction (RFC 3261 17.2.3).

    ACK is matched to the INVITE transaction it acknowledges; pass ``method="INVITE"`` to find the INVITE a
    CANCEL refers to. Requests from RFC 2543 peers (no magic cookie) fall back to the dialog identifiers,
    CSeq number and top Via, which is what 17.2.3 asks for in substance.
    """
    via = request.top_via
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), via.port, method)
    return (
        "2543",
        request.call_id,
        request.from_.tag,
        request.cseq[0],
        via.host.lower(),
        via.port,
        branch,
        method,
    )


def client_key(message: SipMessage) -> ClientKey:
    """Key matching a response to the client transaction that sent the request (RFC 3261 17.1.3)."""
    return (message.top_via.branch or "", message.cseq[1])


class _Transaction:
    """Common timer bookkeeping: named timers, each an absolute time or None."""

    __slots__ = ("request", "reliable", "timers", "state", "_send", "_timers")

    def __init__(self, request: SipRequest, send: Send, reliable: bool, timers: TimerValues):
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self._send = send
        self._timers: dict[str, float] = {}
        self.state = TxState.TERMINATED

    @property
    def deadline(self) -> float | None:
        return min(self._timers.values()) if self._timers else None

    @property
    def terminated(self) -> bool:
        return self.state is TxState.TERMINATED

    def _start(self, name: str, at: float) -> None:
        self._timers[name] = at

    def _stop(self, name: str) -> None:
        self._timers.pop(name, None)

    def _due(self, name: str, now: float) -> bool:
        at = self._timers.get(name)
        return at is not None and at <= now

    def _terminate(self) -> None:
        self.state = TxState.TERMINATED
        self._timers.clear()


class InviteServerTransaction(_Transaction):
    """RFC 3261 17.2.1 with RFC 6026: after a 2xx the transaction sits in ACCEPTED for timer L, absorbing
    INVITE retransmissions and handing matching ACKs to the TU. The 2xx itself is retransmitted by the TU
    (see :class:`AnswerRetransmitter`), because the ACK for a 2xx is end-to-end."""

    __slots__ = ("last_response", "_g_interval")

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        reliable: bool,
        now: float,
        timers: TimerValues = DEFAULT_TIMERS,
        send_trying: bool = True,
    ):
        super().__init__(request, send, reliable, timers)
        self.state = TxState.PROCEEDING
        self.last_response: SipResponse | None = None
        self._g_interval = timers.t1
        if send_trying:
            self.respond(make_response(request, 100, "Trying"), now)

    def receive_request(self, request: SipRequest, now: float) -> None:
        """A retransmission of the INVITE: resend the last response (none in ACCEPTED: RFC 6026 absorbs)."""
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED) and self.last_response is not None:
            self._send(self.last_response)

    def respond(self, response: SipResponse, now: float) -> None:
        status = response.status
        if self.state is TxState.ACCEPTED and 200 <= status < 300:
            self._send(response)  # TU-driven 2xx retransmission (RFC 6026 7.1)
            return
        if self.state is not TxState.PROCEEDING:
            raise TransactionError(f"cannot send {status} on an INVITE transaction in state {self.state.value}")
        self.last_response = response
        self._send(response)
        if status < 200:
            return
        if status < 300:
            self.state = TxState.ACCEPTED
            self._start("L", now + self.timers.transaction_timeout)
            return
        self.state = TxState.COMPLETED
        if not self.reliable:
            self._start("G", now + self._g_interval)
        self._start("H", now + self.timers.transaction_timeout)

    def receive_ack(self, now: float) -> bool:
        """Return True when the ACK belongs to the TU (it acknowledges a 2xx)."""
        if self.state is TxState.ACCEPTED:
            return True
        if self.state is TxState.COMPLETED:
            self._stop("G")
            self._stop("H")
            if self.reliable:
                self._terminate()
            else:
                self.state = TxState.CONFIRMED
                self._start("I", now + self.timers.t4)
        return False

    def handle_timer(self, now: float) -> bool:
        """Return True when timer H fired: the ACK for our 3xx-6xx never came."""
        if self.state is TxState.COMPLETED:
            if self._due("H", now):
                self._terminate()
                return True
            if self._due("G", now) and self.last_response is not None:
                self._send(self.last_response)
                at = self._timers["G"]
                self._g_interval = self.timers.next_interval(self._g_interval)
                self._start("G", at + self._g_interval)
        elif self.state is TxState.CONFIRMED and self._due("I", now):
            self._terminate()
        elif self.state is TxState.ACCEPTED and self._due("L", now):
            self._terminate()
        return False


class NonInviteServerTransaction(_Transaction):
    """RFC 3261 17.2.2: absorbs request retransmissions, resends the last response, timer J."""

    __slots__ = ("last_response",)

    def __init__(
        self, request: SipRequest, send: Send, reliable: bool, now: float, timers: TimerValues = DEFAULT_TIMERS
    ):
        super().__init__(request, send, reliable, timers)
        self.state = TxState.TRYING
        self.last_response: SipResponse | None = None

    def receive_request(self, request: SipRequest, now: float) -> None:
        if self.last_response is not None and self.state in (TxState.PROCEEDING, TxState.COMPLETED):
            self._send(self.last_response)

    def respond(self, response: SipResponse, now: float) -> None:
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            raise TransactionError(
                f"cannot send {response.status} on a {self.request.method} transaction in state {self.state.value}"
            )
        self.last_response = response
        self._send(response)
        if response.status < 200:
            self.state = TxState.PROCEEDING
        elif self.reliable:
            self._terminate()
        else:
            self.state = TxState.COMPLETED
            self._start("J", now + self.timers.transaction_timeout)

    def handle_timer(self, now: float) -> bool:
        if self.state is TxState.COMPLETED and self._due("J", now):
            self._terminate()
        return False


def ack_for_non_2xx(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The hop-by-hop ACK the INVITE client transaction sends for a 3xx-6xx (RFC 3261 17.1.1.3)."""
    from ivr.sip.message import Headers

    headers = Headers()
    headers.add("Via", str(invite.top_via))
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq[0]} ACK")
    return SipRequest("ACK", invite.uri, headers)


class InviteClientTransaction(_Transaction):
    """RFC 3261 17.1.1 with RFC 6026's ACCEPTED state (timer M) so 2xx retransmissions and forked 2xx
    still reach the TU, which ACKs each of them."""

    __slots__ = ("_a_interval", "ack")

    def __init__(
        self, request: SipRequest, send: Send, reliable: bool, now: float, timers: TimerValues = DEFAULT_TIMERS
    ):
        super().__init__(request, send, reliable, timers)
        self.state = TxState.CALLING
        self._a_interval = timers.t1
        self.ack: SipRequest | None = None
        self._send(request)
        if not reliable:
            self._start("A", now + self._a_interval)
        self._start("B", now + timers.transaction_timeout)

    def receive_response(self, response: SipResponse, now: float) -> SipResponse | None:
        """Return the response when the TU must see it, None when it was an absorbed retransmission."""
        status = response.status
        if self.state in (TxState.CALLING, TxState.PROCEEDING):
            if status < 200:
                self.state = TxState.PROCEEDING
                self._stop("A")
                self._stop("B")
                return response
            self._timers.clear()
            if status < 300:
                self.state = TxState.ACCEPTED
                self._start("M", now + self.timers.transaction_timeout)
                return response
            self.ack = ack_for_non_2xx(self.request, response)
            self._send(self.ack)
            if self.reliable:
                self._terminate()
            else:
                self.state = TxState.COMPLETED
                self._start("D", now + self.timers.timer_d)
            return response
        if self.state is TxState.ACCEPTED and 200 <= status < 300:
            return response
        if self.state is TxState.COMPLETED and status >= 300 and self.ack is not None:
            self._send(self.ack)
        return None

    def handle_timer(self, now: float) -> bool:
        """Return True when timer B fired (no response at all): the TU reports 408."""
        if self.state is TxState.CALLING:
            if self._due("B", now):
                self._terminate()
                return True
            if self._due("A", now):
                self._send(self.request)
                at = self._timers["A"]
                self._a_interval = self.timers.next_interval(self._a_interval, cap=False)
                self._start("A", at + self._a_interval)
        elif self.state is TxState.COMPLETED and self._due("D", now):
            self._terminate()
        elif self.state is TxState.ACCEPTED and self._due("M", now):
            self._terminate()
        return False


class NonInviteClientTransaction(_Transaction):
    """RFC 3261 17.1.2: timers E (retransmit, capped at T2), F (timeout) and K."""

    __slots__ = ("_e_interval",)

    def __init__(
        self, request: SipRequest, send: Send, reliable: bool, now: float, timers: TimerValues = DEFAULT_TIMERS
    ):
        super().__init__(request, send, reliable, timers)
        self.state = TxState.TRYING
        self._e_interval = timers.t1
        self._send(request)
        if not reliable:
            self._start("E", now + self._e_interval)
        self._start("F", now + timers.transaction_timeout)

    def receive_response(self, response: SipResponse, now: float) -> SipResponse | None:
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            return None
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return response
        self._timers.clear()
        if self.reliable:
            self._terminate()
        else:
            self.state = TxState.COMPLETED
            self._start("K", now + self.timers.t4)
        return response

    def handle_timer(self, now: float) -> bool:
        """Return True when timer F fired: the TU treats it as a 408."""
        if self.state in (TxState.TRYING, TxState.PROCEEDING):
            if self._due("F", now):
                self._terminate()
                return True
            if self._due("E", now):
                self._send(self.request)
                at = self._timers["E"]
                if self.state is TxState.TRYING:
                    self._e_interval = self.timers.next_interval(self._e_interval)
                else:
                    self._e_interval = self.timers.t2
                self._start("E", at + self._e_interval)
        elif self.state is TxState.COMPLETED and self._due("K", now):
            self._terminate()
        return False


class AnswerRetransmitter:
    """The UAS core's 2xx retransmission (RFC 3261 13.3.1.4): resend at T1, 2*T1, ... capped at T2 until
    the ACK arrives, give up after 64*T1. Over a reliable transport only the give-up timer runs."""

    __slots__ = ("response", "reliable", "timers", "_send", "_next", "_interval", "_give_up", "done", "retransmissions")

    def __init__(
        self, response: SipResponse, send: Send, reliable: bool, now: float, timers: TimerValues = DEFAULT_TIMERS
    ):
        self.response = response
        self.reliable = reliable
        self.timers = timers
        self._send = send
        self._interval = timers.t1
        self._next: float | None = None if reliable else now + self._interval
        self._give_up = now + timers.transaction_timeout
        self.done = False
        self.retransmissions = 0

    @property
    def deadline(self) -> float | None:
        if self.done:
            return None
        return self._give_up if self._next is None else min(self._next, self._give_up)

    def stop(self) -> None:
        self.done = True

    def handle_timer(self, now: float) -> bool:
        """Return True when 64*T1 passed without an ACK."""
        if self.done:
            return False
        if now >= self._give_up:
            self.done = True
            return True
        if self._next is not None and now >= self._next:
            self._send(self.response)
            self.retransmissions += 1
            self._interval = self.timers.next_interval(self._interval)
            self._next += self._interval
        return False


ServerTransaction = Union[InviteServerTransaction, NonInviteServerTransaction]
ClientTransaction = Union[InviteClientTransaction, NonInviteClientTransaction]
