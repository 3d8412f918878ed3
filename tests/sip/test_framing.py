"""Stream framing with Content-Length (RFC 3261 18.3) and CRLF keep-alives (RFC 5626 3.5.1)."""

import pytest

from ivr.sip.framing import StreamFramer
from ivr.sip.message import RemoteProtocolError, parse_message


def msg(n: int, body: bytes = b"") -> bytes:
    return (
        f"MESSAGE sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK{n}\r\n"
        f"From: <sip:alice@example.com>;tag={n}\r\nTo: <sip:bob@example.com>\r\n"
        f"Call-ID: call-{n}\r\nCSeq: {n} MESSAGE\r\nl: {len(body)}\r\n\r\n"
    ).encode() + body


STREAM = msg(1, b"hello") + b"\r\n\r\n" + msg(2) + msg(3, b"x" * 300) + b"\r\n\r\n\r\n\r\n" + msg(4, b"\r\n\r\n")
EXPECTED = [msg(1, b"hello"), msg(2), msg(3, b"x" * 300), msg(4, b"\r\n\r\n")]


def test_many_messages_in_one_segment():
    f = StreamFramer()
    assert f.feed(STREAM) == EXPECTED
    assert f.pings == 3
    assert f.buffered == 0
    assert [parse_message(m).call_id for m in EXPECTED] == ["call-1", "call-2", "call-3", "call-4"]


def test_byte_at_a_time():
    f = StreamFramer()
    out = []
    for i in range(len(STREAM)):
        out.extend(f.feed(STREAM[i : i + 1]))
    assert out == EXPECTED
    assert f.pings == 3


@pytest.mark.parametrize("cut", [1, 10, 57, len(msg(1, b"hello")) - 1, len(msg(1, b"hello")) + 2, 400])
def test_split_anywhere(cut):
    f = StreamFramer()
    out = f.feed(STREAM[:cut]) + f.feed(STREAM[cut:])
    assert out == EXPECTED


def test_lf_only_messages():
    raw = msg(5, b"abc").replace(b"\r\n", b"\n")
    assert StreamFramer().feed(raw + raw) == [raw, raw]


def test_missing_content_length_closes_stream():
    f = StreamFramer()
    bad = msg(1).replace(b"l: 0\r\n", b"")
    with pytest.raises(RemoteProtocolError) as e:
        f.feed(bad)
    assert e.value.status == 400
    with pytest.raises(RemoteProtocolError):
        f.feed(msg(2))  # the stream is desynchronised for good


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1 2", b"99999999999"])
def test_bad_content_length(value):
    with pytest.raises(RemoteProtocolError):
        StreamFramer().feed(msg(1).replace(b"l: 0", b"l: " + value))


def test_duplicate_content_length():
    with pytest.raises(RemoteProtocolError):
        StreamFramer().feed(msg(1).replace(b"l: 0", b"l: 0\r\nContent-Length: 0"))


def test_oversize():
    f = StreamFramer(max_size=1000)
    with pytest.raises(RemoteProtocolError) as e:
        f.feed(msg(1, b"x" * 2000)[:500])  # declared size already too big: no need to wait for the body
    assert e.value.status == 413
    f = StreamFramer(max_size=1000)
    with pytest.raises(RemoteProtocolError) as e:
        for _ in range(20):
            f.feed(b"X-Endless-Header: " + b"y" * 100 + b"\r\n")
    assert e.value.status == 413
    assert StreamFramer(max_size=1000).feed(msg(1, b"x" * 500)) == [msg(1, b"x" * 500)]


def test_content_length_in_body_is_not_framing():
    body = b"Content-Length: 999\r\n\r\n"
    assert StreamFramer().feed(msg(1, body)) == [msg(1, body)]


def test_ping_split_across_segments():
    f = StreamFramer()
    assert f.feed(b"\r\n") == [] and f.feed(b"\r") == [] and f.feed(b"\n") == []
    assert f.pings == 1
    assert f.feed(msg(1)) == [msg(1)]
