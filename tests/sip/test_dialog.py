"""Dialog construction and in-dialog request building (RFC 3261 12)."""

import pytest

from ivr.sip.dialog import Dialog, DialogError, DialogState, Role
from ivr.sip.message import SipRequest, make_response, parse_message

VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-new"


def invite(record_route=(), contact="<sip:alice@10.0.0.7:5070>"):
    rr = "".join(f"Record-Route: {r}\r\n" for r in record_route)
    text = (
        "INVITE sip:800@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK-1\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
        "To: <sip:800@192.0.2.1>\r\n"
        "Call-ID: dlg-1\r\n"
        "CSeq: 10 INVITE\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + rr
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def test_uas_dialog_ids_target_and_route_set_in_order():
    req = invite(record_route=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"))
    d = Dialog.as_uas(req, "b2", "<sip:192.0.2.1:5060>")
    assert d.role is Role.UAS and d.state is DialogState.EARLY
    assert d.id == ("dlg-1", "b2", "a1")
    assert d.remote_seq == 10 and d.local_seq == 0
    assert str(d.remote_target) == "sip:alice@10.0.0.7:5070"
    assert d.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    bye = d.create_request("BYE", VIA)
    assert bye.cseq == (1, "BYE")
    assert str(bye.uri) == "sip:alice@10.0.0.7:5070"
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.from_.tag == "b2" and bye.to.tag == "a1" and bye.to.display == "Alice"
    assert str(bye.from_.uri) == "sip:800@192.0.2.1"
    assert d.next_hop().host == "p1.example.com"
    again = parse_message(bytes(bye))
    assert again.call_id == "dlg-1" and again.headers.get("Max-Forwards") == "70"


def test_uac_dialog_reverses_record_route_and_ack_reuses_invite_cseq():
    req = invite()
    req.headers.set("From", "<sip:ivr@192.0.2.1>;tag=mine")
    ok = make_response(req, 200, to_tag="theirs", headers=[
        ("Contact", "<sip:bob@10.0.0.9:5080>"),
        ("Record-Route", "<sip:p2.example.com;lr>"),
        ("Record-Route", "<sip:p1.example.com;lr>"),
    ])
    d = Dialog.as_uac(req, ok, "<sip:192.0.2.1:5060>")
    assert d.role is Role.UAC and d.state is DialogState.CONFIRMED
    assert d.id == ("dlg-1", "mine", "theirs")
    assert d.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    ack = d.create_ack(10, VIA)
    assert ack.cseq == (10, "ACK") and d.local_seq == 10
    reinvite = d.create_request("INVITE", VIA, headers=[("Content-Type", "application/sdp")], body=b"v=0\r\n")
    assert reinvite.cseq == (11, "INVITE") and reinvite.headers.get("Contact") == "<sip:192.0.2.1:5060>"
    assert str(reinvite.uri) == "sip:bob@10.0.0.9:5080"
    info = d.create_request("INFO", VIA)
    assert info.cseq == (12, "INFO") and "Contact" not in info.headers


def test_strict_router_becomes_request_uri():
    req = invite(record_route=("<sip:strict.example.com>",))
    d = Dialog.as_uas(req, "b2", "<sip:192.0.2.1:5060>")
    bye = d.create_request("BYE", VIA)
    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:alice@10.0.0.7:5070>"]


def test_remote_cseq_ordering_and_target_refresh():
    d = Dialog.as_uas(invite(), "b2", "<sip:192.0.2.1:5060>")
    later = invite(contact="<sip:alice@10.0.0.8:6000>")
    later.headers.set("CSeq", "11 INFO")
    later.method = "INFO"
    assert d.accept_remote_cseq(later) and d.remote_seq == 11
    older = invite()
    older.headers.set("CSeq", "9 BYE")
    older.method = "BYE"
    assert not d.accept_remote_cseq(older)
    d.refresh_target(later)
    assert str(d.remote_target) == "sip:alice@10.0.0.8:6000"


def test_matching_tolerates_wrong_to_tag_only_when_asked():
    d = Dialog.as_uas(invite(), "b2", "<sip:192.0.2.1:5060>")
    ack = invite()
    ack.headers.set("To", "<sip:800@192.0.2.1>;tag=pyvoip-random")
    assert not d.matches_request(ack)
    assert d.matches_request(ack, tolerate_to_tag=True)
    ack.headers.set("From", "<sip:alice@example.com>;tag=other")
    assert not d.matches_request(ack, tolerate_to_tag=True)


def test_dialog_needs_contact_and_tag():
    with pytest.raises(DialogError, match="Contact"):
        Dialog.as_uas(invite(contact=None), "b2", "<sip:x>")
    req = invite()
    ringing = make_response(req, 180, headers=[("Contact", "<sip:bob@10.0.0.9>")])
    with pytest.raises(DialogError, match="To tag"):
        Dialog.as_uac(req, ringing, "<sip:x>")
