"""Outgoing calls: INVITE (digest authentication when challenged), its responses, ACK, CANCEL."""

from __future__ import annotations

import logging
from typing import Iterable

from ivr.sip.dialog import Dialog, DialogState
from ivr.sip.events import Address, CallHandle, EndReason, OutgoingAnswered, OutgoingFailed, OutgoingProgress, Transport
from ivr.sip.message import Headers, NameAddr, SipError, SipRequest, SipResponse, SipUri, new_call_id, new_tag

from .ua_state import _Call, _Deadline, _Flow, _uri_address, _uri_transport

log = logging.getLogger(__name__)


class OutgoingCallsMixin:
    """Mixed into ``SipUserAgent``."""

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
