"""Requests inside a dialog: BYE, INFO, OPTIONS, REFER (with its NOTIFYs) and re-INVITE, both ways."""

from __future__ import annotations

import logging

from ivr.sip.dialog import DialogState
from ivr.sip.events import CallHandle, EndReason, InfoReceived, ReferReceived, ReInviteCompleted, ReInviteReceived
from ivr.sip.message import NameAddr, RemoteProtocolError, SipRequest, SipResponse, reason_phrase
from ivr.sip.transaction import AnswerRetransmitter, TxState

from .ua_state import CallStateError, _Call, _Flow

log = logging.getLogger(__name__)

REFER_EXPIRES = 60


class InDialogMixin:
    """Mixed into ``SipUserAgent``."""

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
