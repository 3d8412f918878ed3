"""RFC 4475 torture messages: valid ones parse to the right fields, invalid ones fail with a 4xx/None."""

from pathlib import Path

import pytest

from ivr.sip.message import NameAddr, RemoteProtocolError, SipRequest, SipResponse, make_response, parse_message
from tests.conftest import SHARED

TORTURE = SHARED / "sip_torture" / "rfc4475"

# RFC 4475 3.1.1 (valid), 3.2 and 3.3 cases that are syntactically valid, 3.4 (RFC 2543 syntax).
VALID = {
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri", "transports",
    "mpart01", "unreason", "noreason", "badbranch", "unksm2", "bext01", "invut", "regaut01", "bcast", "zeromf",
    "cparam01", "cparam02", "regescrt", "sdp01", "inv2543",
}
# RFC 4475 3.1.2 (invalid) plus application-layer cases we reject while parsing: insuf (3.3.1, missing
# From/To/Call-ID), unkscm/novelsc (3.3.2-3, 416), multi01 (3.3.8), mcl01 (3.3.9), and test.dat (no version).
INVALID = {
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400, "scalarlg": None, "quotbal": 400,
    "ltgtruri": 400, "lwsruri": 400, "lwsstart": 400, "trws": 400, "escruri": 400, "baddate": 400,
    "regbadct": 400, "badaspec": 400, "baddn": 400, "badvers": 505, "mismatch01": 400, "mismatch02": 400,
    "bigcode": None, "insuf": 400, "unkscm": 416, "novelsc": 416, "multi01": 400, "mcl01": 400, "test": 400,
}


def without_length(msg) -> list[tuple[str, str]]:
    return [(n, v) for n, v in msg.headers if n != "Content-Length"]


def load(name: str) -> bytes:
    return (TORTURE / f"{name}.dat").read_bytes()


def test_every_file_is_classified():
    names = {p.stem for p in TORTURE.glob("*.dat")}
    assert len(names) == 50
    assert names == VALID | set(INVALID)
    assert not VALID & set(INVALID)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_messages_parse_and_roundtrip(name):
    msg = parse_message(load(name))
    again = parse_message(bytes(msg))
    assert type(again) is type(msg)
    assert without_length(again) == without_length(msg)
    assert again.headers.get("Content-Length") == str(len(msg.body))
    assert again.body == msg.body
    assert again.cseq == msg.cseq


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_messages_fail_cleanly(name):
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(load(name))
    assert e.value.status == INVALID[name]
    assert e.value.reason and "\n" not in e.value.reason
    if e.value.request is not None:
        # a partial request must be enough to answer the peer
        resp = make_response(e.value.request, e.value.status or 400, e.value.reason)
        assert resp.headers.get("Via") == e.value.request.headers.get("Via")
        assert bytes(resp).startswith(f"SIP/2.0 {e.value.status} ".encode())


@pytest.mark.parametrize("name", ["badvers", "mismatch01", "clerr", "baddate", "unkscm", "insuf", "lwsstart"])
def test_answerable_invalid_requests_carry_partial_request(name):
    with pytest.raises(RemoteProtocolError) as e:
        parse_message(load(name))
    assert isinstance(e.value.request, SipRequest)


def test_wsinv_fields():
    msg = parse_message(load("wsinv"))
    assert msg.method == "INVITE"
    assert msg.uri.user == "vivekg" and msg.uri.params == {"unknownparam": None}
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"' and msg.from_.tag == "98asjd8"
    assert msg.headers.get("Max-Forwards") == "0068"
    assert msg.cseq == (9, "INVITE")
    vias = msg.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    contact = NameAddr.parse(msg.headers.get("Contact"))
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.headers.get("Subject") == ""
    assert len(msg.body) == 150


def test_intmeth_fields():
    msg = parse_message(load("intmeth"))
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.uri.host == "example.com"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_escapes():
    msg = parse_message(load("esc01"))
    assert msg.uri.user == "sips:user@example.com" and msg.uri.host == "example.net"
    assert msg.to.uri.user == "user"
    assert msg.from_.uri.user == "I have spaces"
    contact = NameAddr.parse(msg.headers.get("Contact"))
    assert contact.uri.user == "caller"
    assert contact.uri.params == {"lr": None, "name": "value%41"}
    msg = parse_message(load("escnull"))
    assert msg.to.uri.user == "null-\x00-null"
    assert [NameAddr.parse(c).uri.user for c in msg.headers.get_all("Contact")] == ["\x00", "\x00\x00"]
    msg = parse_message(load("esc02"))
    assert msg.method == "RE%47IST%45R" and msg.cseq == (29344, "RE%47IST%45R")
    assert msg.to.display == "%Z%45"
    # "C%6Fntact" is a different (unknown) header: header names are never unescaped
    assert [NameAddr.parse(c).uri.host for c in msg.headers.get_all("Contact")] == [
        "host1.example.com", "host3.example.com"]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_semiuri_and_lwsdisp_and_longreq():
    msg = parse_message(load("semiuri"))
    assert msg.uri.user == "user;par=u@example.net" and msg.uri.params == {}
    assert msg.headers.get_all("Accept")[-1] == "message/sipfrag"
    assert len(msg.headers.get_all("Accept")) == 6
    msg = parse_message(load("lwsdisp"))
    assert msg.from_.display == "caller" and msg.from_.tag == "323"
    msg = parse_message(load("longreq"))
    assert len(msg.vias) > 30
    assert msg.to.uri.port == 6000


def test_dblreq_only_first_message():
    msg = parse_message(load("dblreq"))
    assert msg.method == "REGISTER" and msg.body == b""


def test_transports_and_unknown_schemes():
    msg = parse_message(load("transports"))
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    msg = parse_message(load("unksm2"))
    assert msg.to.uri.scheme == "isbn" and msg.to.uri.host == "2983792873"
    assert str(msg.from_.uri) == "http://www.example.com" and msg.from_.tag == "3234233"
    assert str(NameAddr.parse(msg.headers.get("Contact")).uri) == "name:John_Smith"


def test_contact_params_vs_uri_params():
    c1 = NameAddr.parse(parse_message(load("cparam01")).headers.get("Contact"))
    assert c1.params == {"unknownparam": None} and c1.uri.params == {}
    c2 = NameAddr.parse(parse_message(load("cparam02")).headers.get("Contact"))
    assert c2.uri.params == {"unknownparam": None} and c2.params == {}
    c3 = NameAddr.parse(parse_message(load("regescrt")).headers.get("Contact"))
    assert c3.uri.headers == {"Route": "<sip:sip.example.com>"}


def test_responses_and_rfc2543():
    msg = parse_message(load("unreason"))
    assert isinstance(msg, SipResponse) and msg.status == 200
    assert msg.reason.startswith("= 2**3 * 5**2 ") and "\u043f\u0440\u043e\u0441\u0442\u043e\u0435" in msg.reason
    assert len(msg.body) == 154
    msg = parse_message(load("noreason"))
    assert (msg.status, msg.reason) == (100, "")
    msg = parse_message(load("inv2543"))
    assert msg.top_via.branch is None and msg.from_.tag is None
    assert msg.to.uri.params == {} and msg.to.params == {"user": "phone"}
    msg = parse_message(load("mpart01"))
    assert msg.content_type == "multipart/mixed" and len(msg.body) == 553
    assert parse_message(load("zeromf")).headers.get("Max-Forwards") == "0"


def test_torture_files_with_lf_line_endings():
    for name in sorted(VALID):
        data = load(name)
        head, sep, body = data.partition(b"\r\n\r\n")
        lf = head.replace(b"\r\n", b"\n") + b"\n\n" + body
        msg = parse_message(lf)
        assert msg.headers == parse_message(data).headers, name
