"""REFER (RFC 3515) in the sans-IO user agent: 202 + NOTIFY 100 at once, the application's final NOTIFY with a
message/sipfrag body ending the implicit subscription, and the errors (no/two Refer-To, one pending, unknown
dialog). No sockets: bytes in, bytes out, a fake clock."""

from __future__ import annotations

import pytest

from ivr.sip.events import CallEnded, EndReason, ReferReceived
from ivr.sip.useragent import CallStateError
from tests.sip.uahelpers import PEER, SDP, events, make_ua, run_timers, sent, sip_request, sip_response, summary


def agent_leg(ua):
    """An answered outgoing call (the server's leg to an agent's phone), as routing places it."""
    handle = ua.invite("sip:ag1@10.0.0.7:5070", "sip:queue@192.0.2.1", SDP, now=0.0)
    ((inv, _),) = sent(ua)
    ua.receive(sip_response(inv, 200, "OK", body=SDP), PEER, "udp", 0.1)
    assert summary(sent(ua)) == ["ACK"]
    events(ua)
    return handle, inv


def refer(inv, handle, *, cseq=1, refer_to="Refer-To: <sip:cards@192.0.2.1>\r\n"):
    return sip_request("REFER", call_id=inv.call_id, from_tag="callee-tag", to_tag=handle.local_tag, cseq=cseq,
                       extra=refer_to + "Referred-By: <sip:ag1@10.0.0.7>\r\n")


def test_refer_accepted_then_trying_and_final_notify_with_sipfrag():
    ua = make_ua()
    handle, inv = agent_leg(ua)
    ua.receive(refer(inv, handle), PEER, "udp", 1.0)
    out = sent(ua)
    assert summary(out) == [202, "NOTIFY"]
    notify = out[1][0]
    assert notify.headers.get("Event") == "refer;id=1"
    assert notify.headers.get("Subscription-State").startswith("active;expires=")
    assert notify.content_type.startswith("message/sipfrag")
    assert notify.body == b"SIP/2.0 100 Trying\r\n"
    assert notify.to.tag == "callee-tag" and notify.from_.tag == handle.local_tag
    assert notify.uri.host == "10.0.0.7"            # the phone's Contact, in its dialog
    (ev,) = events(ua)
    assert isinstance(ev, ReferReceived) and ev.handle == handle
    assert (ev.user, ev.host, ev.refer_to) == ("cards", "192.0.2.1", "sip:cards@192.0.2.1")
    ua.receive(sip_response(notify, 200, "OK", to_tag=None), PEER, "udp", 1.1)
    ua.notify_refer(handle, 200, now=2.0)
    ((final, _),) = sent(ua)
    assert final.method == "NOTIFY" and final.cseq[0] > notify.cseq[0]
    assert final.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert final.body == b"SIP/2.0 200 OK\r\n"
    ua.receive(sip_response(final, 200, "OK", to_tag=None), PEER, "udp", 2.1)
    with pytest.raises(CallStateError):
        ua.notify_refer(handle, 200, now=2.2)                 # the subscription is over
    # the transferor's leg is then hung up as usual
    ua.hangup(handle, now=3.0)
    assert summary(sent(ua)) == ["BYE"]


def test_unknown_target_reported_as_404_and_the_call_stays_up():
    ua = make_ua()
    handle, inv = agent_leg(ua)
    ua.receive(refer(inv, handle, refer_to="Refer-To: sip:nobody@192.0.2.1\r\n"), PEER, "udp", 1.0)
    assert summary(sent(ua)) == [202, "NOTIFY"]
    (ev,) = events(ua)
    assert ev.user == "nobody"
    ua.notify_refer(handle, 404, now=1.5)
    ((final, _),) = sent(ua)
    assert final.body == b"SIP/2.0 404 Not Found\r\n"
    assert final.headers.get("Subscription-State").startswith("terminated")
    ua.receive(sip_response(final, 481, "Subscription Does Not Exist", to_tag=None), PEER, "udp", 1.6)
    assert events(ua) == [] and ua.active_calls() == 1      # a refused NOTIFY does not end the call
    # a second REFER in the same dialog is fine once the first is over, with its own id
    ua.receive(refer(inv, handle, cseq=2), PEER, "udp", 2.0)
    out = sent(ua)
    assert summary(out) == [202, "NOTIFY"] and out[1][0].headers.get("Event") == "refer;id=2"


def test_refer_errors():
    ua = make_ua()
    handle, inv = agent_leg(ua)
    ua.receive(refer(inv, handle, refer_to=""), PEER, "udp", 1.0)
    assert summary(sent(ua)) == [400]
    two = "Refer-To: <sip:a@192.0.2.1>\r\nRefer-To: <sip:b@192.0.2.1>\r\n"
    ua.receive(refer(inv, handle, cseq=2, refer_to=two), PEER, "udp", 1.1)
    assert summary(sent(ua)) == [400]
    ua.receive(refer(inv, handle, cseq=3, refer_to="Refer-To: <sip:a@\r\n"), PEER, "udp", 1.2)
    assert summary(sent(ua)) == [400]
    ua.receive(refer(inv, handle, cseq=4), PEER, "udp", 1.3)
    assert summary(sent(ua)) == [202, "NOTIFY"]
    ua.receive(refer(inv, handle, cseq=5), PEER, "udp", 1.4)
    assert summary(sent(ua)) == [491]                        # one transfer at a time
    assert [type(e) for e in events(ua)] == [ReferReceived]
    with pytest.raises(ValueError):
        ua.notify_refer(handle, 42, now=1.5)
    # unknown dialog
    stray = sip_request("REFER", call_id="nope", from_tag="x", to_tag="y", cseq=1,
                        extra="Refer-To: <sip:a@192.0.2.1>\r\n")
    ua.receive(stray, PEER, "udp", 1.6)
    assert summary(sent(ua)) == [481]


def test_refer_is_advertised_in_allow():
    ua = make_ua()
    ua.receive(sip_request("OPTIONS"), PEER, "udp", 0.0)
    ((ok, _),) = sent(ua)
    assert "REFER" in ok.headers.get_all("Allow")


def test_notify_retransmitted_until_answered_over_udp():
    ua = make_ua()
    handle, inv = agent_leg(ua)
    ua.receive(refer(inv, handle), PEER, "udp", 1.0)
    sent(ua)
    timeline = run_timers(ua, 2.0)
    assert timeline and all(summary(msgs) == ["NOTIFY"] for _, msgs in timeline)   # timer E
    assert not [e for e in events(ua) if isinstance(e, CallEnded)]
