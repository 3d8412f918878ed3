"""Parsing and serialisation of SIP messages (RFC 3261 section 7, 18.3, 20)."""

import pytest

from ivr.sip.message import (
    Headers,
    LocalProtocolError,
    NameAddr,
    RemoteProtocolError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)

INVITE = (
    b"INVITE sip:800100@192.0.2.10:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKabc;received=198.51.100.7\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice Rossi" <sip:+393331234567@example.com>;tag=1928301774\r\n'
    b"To: Bob <sip:800100@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.1:5070>;expires=60, \"Other, Device\" <sip:alice@198.51.100.2>\r\n"
    b"X-Custom: keep, me\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_parse_request_fields():
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert msg.uri == SipUri("sip", "800100", None, "192.0.2.10", 5060, {"transport": "udp"}, {})
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.cseq == (314159, "INVITE")
    assert msg.body == b"v=0\n"
    assert msg.content_type == "application/sdp"
    top = msg.top_via
    assert (top.transport, top.host, top.port, top.branch, top.rport) == (
        "UDP", "192.0.2.1", 5070, "z9hG4bK776asdhds", True)
    second = msg.vias[1]
    assert (second.transport, second.host, second.port, second.received) == (
        "TCP", "2001:db8::1", 5061, "198.51.100.7")
    assert msg.from_.display == "Alice Rossi"
    assert msg.from_.uri.user == "+393331234567"
    assert msg.from_.tag == "1928301774"
    assert msg.to.display == "Bob" and msg.to.tag is None
    contacts = msg.headers.get_all("m")
    assert contacts == ["<sip:alice@192.0.2.1:5070>;expires=60", '"Other, Device" <sip:alice@198.51.100.2>']
    assert NameAddr.parse(contacts[1]).display == "Other, Device"
    assert msg.headers.get("x-custom") == "keep, me"
    assert msg.headers.get_all("X-Custom") == ["keep, me"]


def test_roundtrip_is_canonical():
    raw = (b"OPTIONS sip:a@b SIP/2.0\n"
           b"v: SIP/2.0/UDP h;branch=z9hG4bK1\n"
           b"f: <sip:x@y>;tag=1\n"
           b"t: sip:a@b\n"
           b"i: abc\n"
           b"CSeq: 1 OPTIONS\n"
           b"x-Unknown: 1\n"
           b"l: 0\n\n")
    msg = parse_message(raw)
    out = bytes(msg)
    assert out.startswith(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: ")
    assert b"\r\nCall-ID: abc\r\n" in out and b"\r\nx-Unknown: 1\r\n" in out
    assert out.endswith(b"Content-Length: 0\r\n\r\n")
    assert parse_message(out).headers == msg.headers


def test_content_length_recomputed_on_output():
    msg = parse_message(INVITE)
    msg.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    out = bytes(msg)
    assert f"Content-Length: {len(msg.body)}\r\n\r\n".encode() in out
    assert parse_message(out).body == msg.body


def test_folded_lines_and_whitespace():
    raw = (b"INVITE sip:a@b SIP/2.0\r\n"
           b"Via  : SIP / 2.0\r\n /UDP\r\n  h.example.com ; branch = z9hG4bKx\r\n"
           b"From: <sip:x@y>\r\n ;tag=9\r\n"
           b"To: sip:a@b\r\nCall-ID: c\r\ncseq: 7\r\n\tINVITE\r\nContent-Length: 0\r\n\r\n")
    msg = parse_message(raw)
    assert msg.top_via.host == "h.example.com" and msg.top_via.branch == "z9hG4bKx"
    assert msg.cseq == (7, "INVITE")
    assert msg.from_.tag == "9"


def test_body_rules_udp():
    base = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse_message(base).body == b"v=0\n"  # missing Content-Length on a datagram: rest of it
    extra = INVITE + b"garbage after the body"
    assert parse_message(extra).body == b"v=0\n"  # RFC 3261 18.3: extra bytes discarded
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(INVITE.replace(b"Content-Length: 4", b"Content-Length: 40"))
    assert e.value.status == 400
    assert e.value.request is not None
    resp = make_response(e.value.request, e.value.status, e.value.reason)
    assert resp.call_id == "a84b4c76e66710@pc33.example.com"
    assert resp.reason == "Content-Length larger than the message body"


@pytest.mark.parametrize(
    "mutation, status",
    [
        ((b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"), 505),
        ((b"INVITE sip:800100", b"INVITE mailto:800100"), 416),
        ((b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), 400),
        ((b"Call-ID: a84b4c76e66710@pc33.example.com\r\n", b""), 400),
        ((b"Max-Forwards: 70", b"Max-Forwards: 700"), 400),
        ((b"Content-Length: 4", b"Content-Length: -4"), 400),
        ((b"X-Custom: keep, me", b"X-Custom keep"), 400),
        ((b'"Alice Rossi"', b'"Alice Rossi'), 400),
    ],
)
def test_bad_requests_have_status(mutation, status):
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(INVITE.replace(*mutation))
    assert e.value.status == status
    assert e.value.reason


def test_partial_request_allows_answer_on_bad_version():
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"))
    resp = make_response(e.value.request, e.value.status)
    assert resp.status == 505 and resp.reason == "Version Not Supported"
    assert len(resp.vias) == 2


def test_bad_responses_are_dropped():
    resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\n\r\n"
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(resp)
    assert e.value.status is None
    for junk in (b"", b"\r\n\r\n", b"\x00\xff\xfe garbage", b"SIP/2.0 2000 OK\r\n\r\n"):
        with pytest.raises(RemoteProtocolError) as e:
            parse_message(junk)
        assert e.value.status in (None, 400)


def test_limits():
    big = INVITE.replace(b"v=0\n", b"v" * 70000).replace(b"Content-Length: 4", b"Content-Length: 70000")
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(big)
    assert e.value.status == 413 and e.value.request is not None
    assert parse_message(big, max_size=80000).body == b"v" * 70000
    many = INVITE.replace(b"X-Custom: keep, me\r\n", b"X-A: 1\r\n" * 300)
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(many)
    assert e.value.status == 400
    assert len(parse_message(many, max_headers=400).headers.get_all("X-A")) == 300


def test_parse_response():
    raw = (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1;received=1.2.3.4;rport=5062\r\n"
           b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 2 INVITE\r\n\r\n")
    msg = parse_message(raw)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.top_via.rport == 5062 and msg.top_via.received == "1.2.3.4"
    assert msg.to.tag == "2"


def test_make_response_copies_per_8_2_6():
    req = parse_message(INVITE)
    resp = make_response(req, 200, to_tag="abc", headers=[("Contact", "<sip:srv@192.0.2.10>")])
    assert resp.reason == "OK"
    assert resp.headers.raw_values("Via") == req.headers.raw_values("Via")
    assert resp.to.tag == "abc"
    assert resp.from_.tag == "1928301774"
    assert resp.cseq == (314159, "INVITE")
    assert resp.headers.get("Contact") == "<sip:srv@192.0.2.10>"
    trying = make_response(req, 100, to_tag="abc")
    assert trying.to.tag is None
    reparsed = parse_message(bytes(resp))
    assert isinstance(reparsed, SipResponse) and reparsed.status == 200
    with pytest.raises(LocalProtocolError):
        make_response(req, 99)


def test_headers_multimap():
    h = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("call-id", "x"), ("Route", "<sip:a;lr>, <sip:b;lr>")])
    assert list(h)[0][0] == "Via" and list(h)[1][0] == "Call-ID"
    h.add("Via", "SIP/2.0/UDP new;branch=z9hG4bK2", first=True)
    assert h.get("VIA") == "SIP/2.0/UDP new;branch=z9hG4bK2"
    assert h.get_all("Route") == ["<sip:a;lr>", "<sip:b;lr>"]
    h.set("via", "SIP/2.0/TCP only;branch=z9hG4bK3")
    assert h.get_all("v") == ["SIP/2.0/TCP only;branch=z9hG4bK3"]
    assert "i" in h and "Max-Forwards" not in h
    c = h.copy()
    c.remove("Call-ID")
    assert "Call-ID" in h and "Call-ID" not in c
    h.add("Contact", '"A, B" <sip:a@b>, <sip:c@d;x="1,2">')
    assert h.get_all("Contact") == ['"A, B" <sip:a@b>', '<sip:c@d;x="1,2">']


def test_header_injection_is_refused():
    req = parse_message(INVITE)
    req.headers.set("Subject", "hi\r\nVia: evil")
    with pytest.raises(LocalProtocolError):
        bytes(req)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sip:alice:secret@example.com:5061;transport=tcp;lr?subject=hi%20there",
         SipUri("sip", "alice", "secret", "example.com", 5061, {"transport": "tcp", "lr": None},
                {"subject": "hi there"})),
        ("SIPS:[2001:db8::10]:5061", SipUri("sips", None, None, "2001:db8::10", 5061)),
        ("sip:%75ser@h", SipUri("sip", "user", None, "h")),
        ("tel:+39-06-1234567;phone-context=+39", SipUri("tel", "+39-06-1234567", None, "", None,
                                                         {"phone-context": "+39"})),
        ("sip:user;par=u%40example.net@example.com", SipUri("sip", "user;par=u@example.net", None, "example.com")),
    ],
)
def test_uri_parse(text, expected):
    uri = SipUri.parse(text)
    assert uri == expected
    assert SipUri.parse(str(uri)) == uri


@pytest.mark.parametrize("bad", ["sip:", "sip:a@", "sip:a b@c", "sip:h:99999", "sip:%zz@h", "sip:h;", "1sip:x"])
def test_uri_parse_rejects(bad):
    with pytest.raises(RemoteProtocolError):
        SipUri.parse(bad)


def test_uri_str_escapes():
    assert str(SipUri("sip", "I have spaces", None, "h")) == "sip:I%20have%20spaces@h"
    assert str(SipUri("sip", "a", None, "::1", 5060)) == "sip:a@[::1]:5060"


def test_name_addr_forms():
    na = NameAddr.parse('caller<sip:caller@example.com>;tag=323')
    assert na.display == "caller" and na.tag == "323"
    na = NameAddr.parse('sip:a@b;tag=x;expires=30')
    assert na.uri.params == {} and na.params == {"tag": "x", "expires": "30"}
    na = NameAddr.parse('"J \\"R\\"" <sip:j@example.com> ; q = 0.5')
    assert na.display == 'J "R"' and na.params == {"q": "0.5"}
    assert NameAddr.parse(str(na)) == na
    for bad in ["Bell, Alexander <sip:a@b>", "< sip:a@b >", "sip:a@b?x=y", "<sip:a@b", "<sip:a@b>;;"]:
        with pytest.raises(RemoteProtocolError):
            NameAddr.parse(bad)


def test_via_forms():
    v = Via.parse("SIP / 2.0 / udp 192.0.2.1 : 5060 ; branch = z9hG4bKx ; rport ; maddr=224.2.0.1")
    assert (v.transport, v.host, v.port, v.branch, v.rport, v.maddr) == (
        "UDP", "192.0.2.1", 5060, "z9hG4bKx", True, "224.2.0.1")
    assert str(v) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport;maddr=224.2.0.1"
    assert Via.parse(str(v)) == v
    for bad in ["SIP/2.0/UDP", "SIP/2.0 h", "SIP/2.0/UDP h;;", "SIP/2.0/UDP h:70000", "SIP/2.0/UDP h;rport=x"]:
        with pytest.raises(RemoteProtocolError):
            Via.parse(bad)


def test_identifiers():
    b1, b2 = new_branch(), new_branch()
    assert b1.startswith("z9hG4bK") and b1 != b2 and len(b1) > 16
    assert new_tag() != new_tag()
    cid = new_call_id("192.0.2.10")
    assert cid.endswith("@192.0.2.10") and cid != new_call_id("192.0.2.10")
