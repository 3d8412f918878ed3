"""SIP core limits (sans-IO, fake clock): message size, header count, dialogs held, foreign Request-URI hosts,
and digest nonces that expire and cannot be replayed."""

from __future__ import annotations

from ivr.sip.digest import DigestAuthenticator, digest_response
from ivr.sip.events import IncomingCall
from ivr.sip.message import SipResponse
from tests.sip.test_digest import REALM, SECRET, lookup, register
from tests.sip.uahelpers import PEER, SDP, events, make_ua, sent, sip_request


def _final(ua):
    return [m for m, _ in sent(ua) if isinstance(m, SipResponse) and m.status >= 200]


def test_a_message_over_max_message_size_is_refused_before_it_reaches_the_application():
    ua = make_ua(max_message_size=4096)
    big = sip_request("INVITE", body=SDP, extra="X-Pad: " + "a" * 5000 + "\r\n")
    ua.receive(big, PEER, "udp", 0.0)
    assert ua.stats.oversized == 1
    assert not [e for e in events(ua) if isinstance(e, IncomingCall)]
    ua.receive(sip_request("INVITE", call_id="small", body=SDP), PEER, "udp", 0.1)
    assert [type(e) for e in events(ua)] == [IncomingCall]


def test_too_many_headers_is_a_protocol_error_not_a_call():
    ua = make_ua()
    many = sip_request("INVITE", body=SDP, extra="".join(f"X-H{i}: v\r\n" for i in range(1200)))
    ua.receive(many, PEER, "udp", 0.0)
    assert ua.stats.malformed == 1
    assert not [e for e in events(ua) if isinstance(e, IncomingCall)]
    for m in _final(ua):
        assert m.status == 400


def test_new_invites_beyond_max_dialogs_get_503_with_retry_after_and_others_go_on():
    ua = make_ua(max_dialogs=2)
    for i in range(2):
        ua.receive(sip_request("INVITE", call_id=f"ok{i}", body=SDP), PEER, "udp", float(i))
    assert len([e for e in events(ua) if isinstance(e, IncomingCall)]) == 2
    sent(ua)
    ua.receive(sip_request("INVITE", call_id="third", body=SDP), PEER, "udp", 3.0)
    finals = _final(ua)
    assert [(m.status, m.headers.get("Retry-After")) for m in finals] == [(503, "5")]
    assert not events(ua)
    assert ua.stats.rejected_dialogs == 1
    # OPTIONS is not a dialog: still answered
    ua.receive(sip_request("OPTIONS", call_id="opt"), PEER, "udp", 3.5)
    assert [m.status for m in _final(ua)] == [200]


def _foreign(method: str, call_id: str, body: bytes = b"") -> bytes:
    return sip_request(method, call_id=call_id, body=body).replace(b"sip:800@192.0.2.1 SIP/2.0",
                                                                   b"sip:800@victim.example.org SIP/2.0", 1)


def test_requests_for_a_foreign_domain_get_no_answer_when_domains_are_configured():
    ua = make_ua(domains=("sip.bank.example",))
    for i, method in enumerate(("INVITE", "OPTIONS", "REGISTER", "MESSAGE", "SUBSCRIBE")):
        ua.receive(_foreign(method, f"f{i}", SDP if method == "INVITE" else b""), PEER, "udp", float(i))
    assert sent(ua) == [] and events(ua) == []
    assert ua.stats.foreign_domain == 5
    # our own names are served: the configured domain and the address we listen on
    ours = sip_request("OPTIONS", call_id="ours").replace(b"sip:800@192.0.2.1 SIP/2.0",
                                                          b"sip:800@SIP.bank.example SIP/2.0", 1)
    ua.receive(ours, PEER, "udp", 9.0)
    ua.receive(sip_request("OPTIONS", call_id="by-ip"), PEER, "udp", 9.1)
    assert [m.status for m in _final(ua)] == [200, 200]


def test_without_configured_domains_any_host_is_served():
    ua = make_ua()
    ua.receive(_foreign("OPTIONS", "any"), PEER, "udp", 0.0)
    assert [m.status for m in _final(ua)] == [200]


def test_a_digest_answer_cannot_be_replayed_and_expired_nonces_are_refused():
    auth = DigestAuthenticator(REALM, SECRET, nonce_ttl=300)
    value = digest_response(auth.challenge(0.0)[0], "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass")
    assert auth.verify(register(), value, lookup, now=1.0).ok
    replay = auth.verify(register(), value, lookup, now=2.0)       # the same Authorization header again
    assert not replay.ok and replay.reason == "Nonce count replayed"
    fresh = digest_response(auth.challenge(10.0)[0], "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass")
    late = auth.verify(register(), fresh, lookup, now=10.0 + 301)
    assert not late.ok and late.stale and late.reason == "Nonce expired"
