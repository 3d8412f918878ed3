"""SipUserAgent driven by a scripted peer and a fake clock."""

import pytest

from ivr.sip.events import (
    CallAcked,
    CallCancelled,
    CallEnded,
    EndReason,
    IncomingCall,
    InfoReceived,
    OutgoingAnswered,
    OutgoingFailed,
    OutgoingProgress,
    ReInviteCompleted,
    ReInviteReceived,
    Transport,
)
from ivr.sip.message import SipRequest
from ivr.sip.useragent import CallStateError

from .uahelpers import PEER, SDP, events, make_ua, run_timers, sent, sip_request, sip_response, summary


def incoming_call(ua, now=0.0, **kw):
    ua.receive(sip_request("INVITE", body=SDP, **kw), PEER, "udp", now)
    out = sent(ua)
    assert summary(out) == [100]
    (event,) = events(ua)
    assert isinstance(event, IncomingCall)
    return event.handle, out


def answered_call(ua, now=0.0):
    handle, _ = incoming_call(ua, now)
    ua.answer(handle, SDP, now=now)
    ((ok, _),) = sent(ua)
    ua.receive(sip_request("ACK", cseq=1, to_tag=ok.to.tag), PEER, "udp", now + 0.1)
    (acked,) = events(ua)
    assert isinstance(acked, CallAcked) and acked.handle == handle and acked.ack.method == "ACK"
    return handle, ok


def test_invite_answered_without_ack_retransmits_then_no_ack_and_bye():
    ua = make_ua()
    handle, _ = incoming_call(ua)
    ua.ring(handle, now=0.0)
    ua.answer(handle, SDP, now=1.0)
    out = sent(ua)
    assert summary(out) == [180, 200]
    ok, where = out[1]
    assert ok.body == SDP and ok.headers.get("Contact") == "<sip:192.0.2.1:5060>"
    assert ok.to.tag == handle.local_tag and out[0][0].to.tag == handle.local_tag
    assert where.destination == PEER and where.transport is Transport.UDP
    timeline = run_timers(ua, 100.0)
    retrans = [at - 1.0 for at, msgs in timeline if summary(msgs) == [200]]
    assert retrans == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    bye_at = [at for at, msgs in timeline if summary(msgs) == ["BYE"]]
    assert bye_at[:2] == [33.0, 33.5]  # the BYE itself is retransmitted (timer E) until answered
    assert events(ua) == [CallEnded(handle, EndReason.NO_ACK)]
    bye = [m for at, msgs in timeline for m, _ in msgs if isinstance(m, SipRequest)][0]
    assert bye.from_.tag == handle.local_tag and bye.to.tag == "peer-tag" and str(bye.uri) == "sip:alice@10.0.0.7:5070"


def test_ack_stops_retransmission_and_pyvoip_duplicate_acks_with_own_to_tag():
    ua = make_ua()
    handle, trying = incoming_call(ua, branch="z9hG4bK-inv1")
    ua.answer(handle, SDP, now=0.0)
    sent(ua)
    run_timers(ua, 0.6)  # one retransmission
    # pyVoIP: same branch as the INVITE, a To tag of its own, one ACK per 200 received.
    for t in (0.7, 0.8):
        ua.receive(sip_request("ACK", branch="z9hG4bK-inv1", to_tag="pyvoip-own"), PEER, "udp", t)
    evs = events(ua)
    assert [type(e) for e in evs] == [CallAcked] and evs[0].handle == handle
    assert ua.stats.retransmissions == 1  # the second ACK
    assert all(summary(msgs) != [200] for _, msgs in run_timers(ua, 40.0))


def test_call_acked_event_is_emitted_once():
    ua = make_ua()
    handle, _ = incoming_call(ua)
    ua.answer(handle, SDP, now=0.0)
    ok = sent(ua)[0][0]
    for t in (0.1, 0.2):
        ua.receive(sip_request("ACK", to_tag=ok.to.tag), PEER, "udp", t)
    evs = events(ua)
    assert len(evs) == 1 and isinstance(evs[0], CallAcked) and evs[0].handle == handle


def test_retransmitted_invite_resends_100_and_is_reported_once():
    ua = make_ua()
    data = sip_request("INVITE", branch="z9hG4bK-same", body=SDP)
    ua.receive(data, PEER, "udp", 0.0)
    ua.receive(data, PEER, "udp", 0.5)
    assert summary(sent(ua)) == [100, 100]
    evs = events(ua)
    assert len(evs) == 1 and isinstance(evs[0], IncomingCall)
    handle = evs[0].handle
    ua.ring(handle, now=0.6)
    sent(ua)
    ua.receive(data, PEER, "udp", 1.0)
    assert summary(sent(ua)) == [180]
    assert ua.stats.retransmissions == 2


def test_cancel_before_answer_gets_200_and_487_and_ack_is_absorbed():
    ua = make_ua()
    handle, _ = incoming_call(ua, branch="z9hG4bK-c")
    ua.ring(handle, now=0.1)
    sent(ua)
    ua.receive(sip_request("CANCEL", branch="z9hG4bK-c"), PEER, "udp", 1.0)
    out = sent(ua)
    assert [(m.status, m.cseq[1]) for m, _ in out] == [(200, "CANCEL"), (487, "INVITE")]
    assert out[1][0].to.tag == handle.local_tag
    assert events(ua) == [CallCancelled(handle), CallEnded(handle, EndReason.CANCELLED, 487)]
    ua.receive(sip_request("ACK", branch="z9hG4bK-c", to_tag=handle.local_tag), PEER, "udp", 1.1)
    assert sent(ua) == [] and events(ua) == []
    assert all(summary(msgs) != [487] for _, msgs in run_timers(ua, 60.0))
    with pytest.raises(CallStateError):
        ua.answer(handle, SDP)


def test_487_is_retransmitted_until_ack_over_udp():
    ua = make_ua()
    handle, _ = incoming_call(ua, branch="z9hG4bK-c2")
    ua.receive(sip_request("CANCEL", branch="z9hG4bK-c2"), PEER, "udp", 1.0)
    sent(ua)
    timeline = run_timers(ua, 3.0)
    assert [(at, summary(m)) for at, m in timeline] == [(1.5, [487]), (2.5, [487])]


def test_cancel_for_unknown_transaction_gets_481():
    ua = make_ua()
    ua.receive(sip_request("CANCEL", branch="z9hG4bK-nothing"), PEER, "udp", 0.0)
    assert summary(sent(ua)) == [481]


def test_remote_bye_ends_call_and_retransmitted_bye_is_answered_again():
    ua = make_ua()
    handle, ok = answered_call(ua)
    bye = sip_request("BYE", cseq=2, to_tag=ok.to.tag, branch="z9hG4bK-bye")
    ua.receive(bye, PEER, "udp", 5.0)
    assert summary(sent(ua)) == [200]
    assert events(ua) == [CallEnded(handle, EndReason.BYE_REMOTE)]
    ua.receive(bye, PEER, "udp", 5.5)
    assert summary(sent(ua)) == [200]
    assert events(ua) == []
    assert ua.active_calls() == 0


def test_local_hangup_sends_bye_retransmitted_until_200():
    ua = make_ua()
    handle, ok = answered_call(ua)
    ua.hangup(handle, now=10.0)
    out = sent(ua)
    assert summary(out) == ["BYE"]
    bye, where = out[0]
    assert bye.cseq == (1, "BYE") and bye.to.tag == "peer-tag" and where.destination == PEER
    assert events(ua) == [CallEnded(handle, EndReason.BYE_LOCAL)]
    assert [at for at, _ in run_timers(ua, 11.6)] == [10.5, 11.5]
    ua.receive(sip_response(bye, 200, "OK", to_tag=None), PEER, "udp", 12.0)
    assert run_timers(ua, 100.0) == []
    ua.hangup(handle)  # idempotent
    assert sent(ua) == []


def test_hangup_before_ack_waits_for_ack_then_sends_bye():
    ua = make_ua()
    handle, _ = incoming_call(ua)
    ua.answer(handle, SDP, now=0.0)
    ok = sent(ua)[0][0]
    ua.hangup(handle, now=0.1)
    assert sent(ua) == []
    assert events(ua) == [CallEnded(handle, EndReason.BYE_LOCAL)]
    ua.receive(sip_request("ACK", to_tag=ok.to.tag), PEER, "udp", 0.2)
    assert summary(sent(ua)) == ["BYE"]
    assert events(ua) == []


def test_hangup_and_reject_of_unanswered_incoming_call():
    ua = make_ua()
    handle, _ = incoming_call(ua)
    ua.hangup(handle, now=0.1)
    assert summary(sent(ua)) == [603]
    assert events(ua) == [CallEnded(handle, EndReason.REJECTED, 603)]
    ua2 = make_ua()
    handle2, _ = incoming_call(ua2)
    ua2.reject(handle2, 486, "Busy Here", now=0.1)
    assert [(m.status, m.reason) for m, _ in sent(ua2)] == [(486, "Busy Here")]
    assert events(ua2) == [CallEnded(handle2, EndReason.REJECTED, 486)]


def test_options_out_of_dialog_and_in_dialog():
    ua = make_ua()
    ua.receive(sip_request("OPTIONS", call_id="opt@peer"), PEER, "udp", 0.0)
    ((resp, _),) = sent(ua)
    assert resp.status == 200 and resp.to.tag
    assert "INVITE" in resp.headers.get_all("Allow") and resp.headers.get("Accept") == "application/sdp"
    assert resp.headers.get("Server") == "contact-server"
    handle, ok = answered_call(ua)
    ua.receive(sip_request("OPTIONS", cseq=2, to_tag=ok.to.tag), PEER, "udp", 1.0)
    ((resp, _),) = sent(ua)
    assert resp.status == 200 and resp.headers.get("Allow")


def test_in_dialog_request_for_unknown_dialog_gets_481_and_stray_ack_is_dropped():
    ua = make_ua()
    ua.receive(sip_request("BYE", to_tag="nope", call_id="zz"), PEER, "udp", 0.0)
    ua.receive(sip_request("INFO", to_tag="nope", call_id="zz"), PEER, "udp", 0.0)
    ua.receive(sip_request("BYE", call_id="zz2"), PEER, "udp", 0.0)
    assert summary(sent(ua)) == [481, 481, 481]
    ua.receive(sip_request("ACK", to_tag="nope", call_id="zz"), PEER, "udp", 0.0)
    assert sent(ua) == [] and ua.stats.dropped == 1


def test_unsupported_method_405_with_allow_and_require_420():
    ua = make_ua()
    ua.receive(sip_request("SUBSCRIBE"), PEER, "udp", 0.0)
    ua.receive(sip_request("REGISTER"), PEER, "udp", 0.0)
    ua.receive(sip_request("INVITE", extra="Require: 100rel, foo\r\n"), PEER, "udp", 0.0)
    out = sent(ua)
    assert summary(out) == [405, 405, 100, 420]
    assert "BYE" in out[0][0].headers.get_all("Allow")
    assert out[3][0].headers.get_all("Unsupported") == ["100rel", "foo"]
    assert events(ua) == []


def test_register_goes_to_the_registrar():
    seen = []

    class Registrar:
        def handle(self, request, source, transport, now):
            from ivr.sip.message import make_response

            seen.append((request.method, source, transport, now))
            return make_response(request, 200, to_tag="r")

    ua = make_ua(registrar=Registrar())
    ua.receive(sip_request("REGISTER"), PEER, "udp", 3.0)
    assert summary(sent(ua)) == [200]
    assert seen == [("REGISTER", PEER, Transport.UDP, 3.0)]


def test_info_in_dialog_answered_and_reported():
    ua = make_ua()
    handle, ok = answered_call(ua)
    events(ua)
    ua.receive(sip_request("INFO", cseq=2, to_tag=ok.to.tag, extra="Content-Type: application/dtmf-relay\r\n"), PEER, "udp", 1.0)
    assert summary(sent(ua)) == [200]
    (event,) = events(ua)
    assert isinstance(event, InfoReceived) and event.handle == handle


def test_out_of_order_cseq_gets_500():
    ua = make_ua()
    handle, ok = answered_call(ua)
    ua.receive(sip_request("INFO", cseq=5, to_tag=ok.to.tag), PEER, "udp", 1.0)
    ua.receive(sip_request("INFO", cseq=3, to_tag=ok.to.tag), PEER, "udp", 1.0)
    assert summary(sent(ua)) == [200, 500]


def test_reinvite_received_and_answered():
    ua = make_ua()
    handle, ok = answered_call(ua)
    events(ua)
    hold = SDP.replace(b"m=audio", b"a=sendonly\r\nm=audio")
    ua.receive(sip_request("INVITE", cseq=2, to_tag=ok.to.tag, body=hold, branch="z9hG4bK-re"), PEER, "udp", 2.0)
    assert summary(sent(ua)) == [100]
    (event,) = events(ua)
    assert isinstance(event, ReInviteReceived) and event.request.body == hold
    ua.answer_reinvite(handle, SDP, now=2.1)
    ((resp, _),) = sent(ua)
    assert resp.status == 200 and resp.cseq == (2, "INVITE") and resp.body == SDP
    assert [at for at, _ in run_timers(ua, 2.7)] == [pytest.approx(2.6)]
    ua.receive(sip_request("ACK", cseq=2, to_tag=ok.to.tag), PEER, "udp", 2.8)
    assert run_timers(ua, 40.0) == []
    assert events(ua) == []


def test_malformed_request_gets_400_and_junk_is_counted():
    ua = make_ua()
    bad = sip_request("OPTIONS").replace(b"Content-Length: 0", b"Content-Length: 99")
    ua.receive(bad, PEER, "udp", 0.0)
    out = sent(ua)
    assert summary(out) == [400] and out[0][1].destination == PEER
    ua.receive(b"\x00\xff garbage", PEER, "udp", 0.0)
    ua.receive(b"SIP/2.0 200 OK\r\n\r\n", PEER, "udp", 0.0)
    assert ua.stats.malformed >= 2 and sent(ua) == []
    mismatched = sip_request("OPTIONS", cseq_method="INFO")
    ua.receive(mismatched, PEER, "udp", 0.0)
    assert summary(sent(ua)) == [400]


def test_response_goes_to_rport_and_received():
    ua = make_ua()
    via = "SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bK-nat;rport"
    ua.receive(sip_request("OPTIONS", via=via), ("203.0.113.9", 40000), "udp", 0.0)
    ((resp, where),) = sent(ua)
    assert where.destination == ("203.0.113.9", 40000)
    assert resp.top_via.received == "203.0.113.9" and resp.top_via.rport == 40000
    # No rport: received= is added, the port comes from the Via (RFC 3261 18.2.2).
    via = "SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bK-nat2"
    ua.receive(sip_request("OPTIONS", via=via), ("203.0.113.9", 40000), "udp", 0.0)
    ((resp, where),) = sent(ua)
    assert where.destination == ("203.0.113.9", 5062) and resp.top_via.received == "203.0.113.9"


def test_tcp_responses_use_the_connection():
    ua = make_ua()
    ua.receive(sip_request("INVITE", transport="TCP", body=SDP), PEER, "tcp", 0.0, connection_id=7)
    ((trying, where),) = sent(ua)
    assert where.connection_id == 7 and where.transport is Transport.TCP
    (event,) = events(ua)
    ua.answer(event.handle, SDP, now=0.0)
    ((ok, where),) = sent(ua)
    assert where.connection_id == 7 and ok.headers.get("Contact").endswith(";transport=tcp>")
    assert [summary(m) for _, m in run_timers(ua, 31.0)] == []  # no retransmission over TCP
    assert [summary(m) for _, m in run_timers(ua, 40.0)] == [["BYE"]]


def test_outgoing_call_with_401_then_authenticated_retry():
    from ivr.sip import digest
    auth = digest.DigestAuthenticator("pbx.example", b"0123456789abcdef0123456789abcdef")
    ua = make_ua()
    handle = ua.invite("sip:500@10.0.0.7:5070", "sip:ivr@192.0.2.1", SDP, credentials=("ivr", "pw"), now=0.0)
    ((inv, where),) = sent(ua)
    assert where.destination == PEER and inv.cseq == (1, "INVITE") and inv.from_.tag == handle.local_tag
    challenges = "".join(f"WWW-Authenticate: {c}\r\n" for c in auth.challenge(0.0))
    ua.receive(sip_response(inv, 401, "Unauthorized", extra=challenges), PEER, "udp", 0.1)
    out = sent(ua)
    assert summary(out) == ["ACK", "INVITE"]
    inv2 = out[1][0]
    assert inv2.cseq == (2, "INVITE") and inv2.call_id == inv.call_id and inv2.top_via.branch != inv.top_via.branch
    assert inv2.from_.tag == handle.local_tag and inv2.body == SDP
    users = {"ivr": "other"}
    lookup = lambda user, realm, algorithm: digest.ha1(user, realm, users[user], algorithm) if user in users else None  # noqa: E731
    assert auth.verify(inv2, inv2.headers.get("Authorization"), lookup, 0.2).reason == "Wrong credentials"
    users["ivr"] = "pw"
    result = auth.verify(inv2, inv2.headers.get("Authorization"), lookup, 0.2)
    assert result.ok, result.reason
    ua.receive(sip_response(inv2, 180, "Ringing"), PEER, "udp", 0.2)
    ua.receive(sip_response(inv2, 200, "OK", body=SDP), PEER, "udp", 1.0)
    out = sent(ua)
    assert summary(out) == ["ACK"]
    ack = out[0][0]
    assert ack.cseq == (2, "ACK") and str(ack.uri) == "sip:bob@10.0.0.7:5070" and ack.to.tag == "callee-tag"
    evs = events(ua)
    assert [type(e) for e in evs] == [OutgoingProgress, OutgoingAnswered]
    assert evs[0].status == 180 and evs[1].response.body == SDP
    ua.receive(sip_response(inv2, 200, "OK", body=SDP), PEER, "udp", 1.5)
    assert summary(sent(ua)) == ["ACK"]  # 2xx retransmission re-ACKed
    ua.hangup(handle, now=2.0)
    ((bye, _),) = sent(ua)
    assert bye.method == "BYE" and bye.cseq == (3, "BYE")
    assert events(ua) == [CallEnded(handle, EndReason.BYE_LOCAL)]


def test_outgoing_call_rejected_and_timeout():
    ua = make_ua()
    handle = ua.invite("sip:500@10.0.0.7:5070", "sip:ivr@192.0.2.1", SDP, now=0.0)
    ((inv, _),) = sent(ua)
    ua.receive(sip_response(inv, 486, "Busy Here"), PEER, "udp", 0.1)
    assert summary(sent(ua)) == ["ACK"]
    assert events(ua) == [OutgoingFailed(handle, 486, "Busy Here"), CallEnded(handle, EndReason.REJECTED, 486)]
    h2 = ua.invite("sip:501@10.0.0.7:5070", "sip:ivr@192.0.2.1", SDP, now=10.0)
    assert summary(sent(ua)) == ["INVITE"]
    timeline = run_timers(ua, 100.0)
    assert [at for at, m in timeline if summary(m) == ["INVITE"]] == [10.5, 11.5, 13.5, 17.5, 25.5, 41.5]
    assert events(ua) == [OutgoingFailed(h2, 408, "Request Timeout"), CallEnded(h2, EndReason.TIMEOUT, 408)]


def test_outgoing_hangup_before_provisional_waits_to_cancel():
    ua = make_ua()
    handle = ua.invite("sip:500@10.0.0.7:5070", "sip:ivr@192.0.2.1", SDP, now=0.0)
    ((inv, _),) = sent(ua)
    ua.hangup(handle, now=0.1)
    assert sent(ua) == [] and events(ua) == [CallEnded(handle, EndReason.CANCELLED)]
    ua.receive(sip_response(inv, 100, "Trying", to_tag=None), PEER, "udp", 0.2)
    ((cancel, _),) = sent(ua)
    assert cancel.method == "CANCEL" and cancel.top_via.branch == inv.top_via.branch and cancel.cseq == (1, "CANCEL")
    ua.receive(sip_response(cancel, 200, "OK", to_tag=None), PEER, "udp", 0.3)
    ua.receive(sip_response(inv, 487, "Request Terminated"), PEER, "udp", 0.4)
    assert summary(sent(ua)) == ["ACK"]
    assert events(ua) == [] and ua.active_calls() == 0


def test_outgoing_answer_after_cancel_is_acked_and_byed():
    ua = make_ua()
    handle = ua.invite("sip:500@10.0.0.7:5070", "sip:ivr@192.0.2.1", SDP, now=0.0)
    ((inv, _),) = sent(ua)
    ua.receive(sip_response(inv, 180, "Ringing"), PEER, "udp", 0.1)
    ua.hangup(handle, now=0.2)
    assert summary(sent(ua)) == ["CANCEL"]
    ua.receive(sip_response(inv, 200, "OK", body=SDP), PEER, "udp", 0.3)
    assert summary(sent(ua)) == ["ACK", "BYE"]
    assert [type(e) for e in events(ua)] == [OutgoingProgress, CallEnded]


def test_outgoing_reinvite_and_info():
    ua = make_ua()
    handle = ua.invite("sip:500@10.0.0.7:5070", "sip:ivr@192.0.2.1", SDP, now=0.0)
    ((inv, _),) = sent(ua)
    ua.receive(sip_response(inv, 200, "OK", body=SDP), PEER, "udp", 0.1)
    sent(ua), events(ua)
    ua.reinvite(handle, SDP, now=1.0)
    ((re, _),) = sent(ua)
    assert re.method == "INVITE" and re.cseq == (2, "INVITE") and re.to.tag == "callee-tag"
    with pytest.raises(CallStateError):
        ua.reinvite(handle, SDP, now=1.0)
    ua.receive(sip_response(re, 200, "OK", body=SDP), PEER, "udp", 1.1)
    ((ack, _),) = sent(ua)
    assert ack.method == "ACK" and ack.cseq == (2, "ACK")
    (event,) = events(ua)
    assert isinstance(event, ReInviteCompleted) and event.status == 200
    ua.send_info(handle, "application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", now=2.0)
    ((info, _),) = sent(ua)
    assert info.method == "INFO" and info.cseq == (3, "INFO") and info.content_type == "application/dtmf-relay"
    ua.receive(sip_response(info, 481, "Call Does Not Exist", to_tag=None), PEER, "udp", 2.1)
    assert events(ua) == [CallEnded(handle, EndReason.FAILED, 481)]


def test_incoming_bye_from_callee_on_outgoing_call():
    ua = make_ua()
    handle = ua.invite("sip:500@10.0.0.7:5070", "sip:ivr@192.0.2.1", SDP, now=0.0)
    ((inv, _),) = sent(ua)
    ua.receive(sip_response(inv, 200, "OK", body=SDP), PEER, "udp", 0.1)
    sent(ua), events(ua)
    bye = sip_request("BYE", call_id=inv.call_id, from_tag="callee-tag", to_tag=handle.local_tag, cseq=1)
    ua.receive(bye, PEER, "udp", 3.0)
    assert summary(sent(ua)) == [200]
    assert events(ua) == [CallEnded(handle, EndReason.BYE_REMOTE)]


def test_commands_on_unknown_handle_raise_clear_error():
    ua = make_ua()
    handle, _ = incoming_call(ua)
    ua.reject(handle, 480, now=0.0)
    with pytest.raises(CallStateError, match="unknown or finished"):
        ua.ring(handle)


def test_pending_reinvite_is_closed_when_the_call_ends():
    ua = make_ua()
    handle, ok = answered_call(ua)
    ua.receive(sip_request("INVITE", cseq=2, to_tag=ok.to.tag, body=SDP), PEER, "udp", 1.0)
    sent(ua), events(ua)
    ua.hangup(handle, now=2.0)
    assert sorted(map(str, summary(sent(ua)))) == ["487", "BYE"]


def test_mutated_messages_never_raise():
    import random

    rng = random.Random(1234)
    ua = make_ua()
    seeds = [sip_request("INVITE", body=SDP), sip_request("BYE", to_tag="x"), sip_request("OPTIONS"),
             sip_request("ACK", to_tag="y"), sip_request("CANCEL")]
    for i in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[pos] = rng.randrange(256)
            elif op < 0.7:
                del data[pos : pos + rng.randint(1, 20)]
            else:
                data[pos:pos] = rng.choice([b";", b"\r\n", b":", b"<", b" ", b"tag=", b"0"])
        ua.receive(bytes(data), PEER, "udp", i * 0.01)
        ua.pop_outgoing()
        events(ua)
        ua.handle_timer(i * 0.01)
    assert ua.stats.internal_errors == 0
    assert ua.stats.received == 3000
