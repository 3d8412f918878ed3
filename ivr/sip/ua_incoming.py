"""Incoming calls: REGISTER, INVITE, ACK and CANCEL as they arrive, and the application's ring / progress /
answer / reject / hangup commands for them."""

from __future__ import annotations

import logging
from typing import Iterable

from ivr.sip.dialog import Dialog, DialogState
from ivr.sip.events import CallAcked, CallCancelled, CallHandle, EndReason, IncomingCall
from ivr.sip.message import NameAddr, SipRequest, new_tag
from ivr.sip.transaction import AnswerRetransmitter, InviteServerTransaction, TxState, server_key

from .ua_state import CallStateError, _Call, _Flow

log = logging.getLogger(__name__)


class IncomingCallsMixin:
    """Mixed into ``SipUserAgent``."""

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
