"""Fuzzing: whatever bytes arrive, only RemoteProtocolError may come out of the parser and the framer.

The strict variant calls the parser core without the public catch-all, so a bug shows up as a failure here
instead of being turned into a RemoteProtocolError(None).
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.sip import message
from ivr.sip.framing import StreamFramer
from ivr.sip.message import NameAddr, RemoteProtocolError, SipUri, Via, make_response
from tests.conftest import SHARED

SEEDS = [p.read_bytes() for p in sorted((SHARED / "sip_torture" / "rfc4475").glob("*.dat"))]
SEEDS.append(
    b"INVITE sip:800@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1;rport\r\n"
    b'From: "A" <sip:a@b>;tag=1\r\nTo: <tel:+390612345>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n'
    b"Contact: <sip:a@1.2.3.4>;expires=30, *\r\nContent-Length: 3\r\n\r\nabc"
)
TOKENS = [b"\r\n", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"%0", b"@", b"=", b"?",
          b"[", b"]", b"sip:", b"SIP/2.0", b"\x00", b"\xff", b"\xc3", b"9" * 30, b"-1", b"\r\n ", b"l: 5\r\n"]

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes) -> None:
    try:
        parsed = message._parse(data, message.MAX_MESSAGE_SIZE, message.MAX_HEADERS)
    except RemoteProtocolError as exc:
        assert exc.status in (None, 400, 413, 416, 505)
        if exc.request is not None:
            bytes(make_response(exc.request, exc.status or 400, exc.reason))
        return
    # whatever parses must serialise, and its accessors must not blow up with anything unexpected
    bytes(parsed)
    for accessor in ("vias", "from_", "to", "cseq", "call_id", "content_type"):
        getattr(parsed, accessor)


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == 1:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == 2:
            data[pos:pos] = draw(st.binary(max_size=8))
        elif data:
            p = min(pos, len(data) - 1)
            data[p] = draw(st.integers(0, 255))
    return bytes(data)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes(data):
    check(data)
    check(b"INVITE sip:a@b SIP/2.0\r\n" + data)


@SETTINGS
@given(mutated())
def test_mutated_messages(data):
    check(data)


@SETTINGS
@given(mutated(), st.lists(st.integers(1, 200), max_size=10))
def test_framer(data, cuts):
    framer = StreamFramer(max_size=4096)
    stream = data + b"\r\n\r\n" + data
    pos = 0
    try:
        for cut in cuts + [len(stream)]:
            for m in framer.feed(stream[pos : pos + cut]):
                check(m)
            pos += cut
    except RemoteProtocolError:
        pass


@SETTINGS
@given(st.text(max_size=80))
def test_value_parsers(text):
    for parse in (SipUri.parse, NameAddr.parse, Via.parse):
        try:
            value = parse(text)
        except RemoteProtocolError:
            continue
        assert parse(str(value)) == value
