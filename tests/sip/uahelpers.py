"""A scripted remote SIP peer for fake-clock user agent tests: builds requests as text, parses what the UA sends."""

from __future__ import annotations

import itertools

from ivr.sip.events import Outgoing
from ivr.sip.message import SipRequest, SipResponse, parse_message
from ivr.sip.useragent import SipUserAgent, UaConfig

PEER = ("10.0.0.7", 5070)
SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
_counter = itertools.count(1)


def make_ua(**kw) -> SipUserAgent:
    return SipUserAgent(UaConfig(host="192.0.2.1", port=5060, **kw))


def sip_request(
    method: str,
    *,
    call_id: str = "c1@peer",
    branch: str | None = None,
    cseq: int = 1,
    from_tag: str = "peer-tag",
    to_tag: str | None = None,
    body: bytes = b"",
    extra: str = "",
    via: str | None = None,
    cseq_method: str | None = None,
    transport: str = "UDP",
) -> bytes:
    branch = branch or f"z9hG4bK-{next(_counter)}"
    via = via or f"SIP/2.0/{transport} {PEER[0]}:{PEER[1]};branch={branch}"
    to = "<sip:800@192.0.2.1>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:800@192.0.2.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: \"Alice\" <sip:alice@{PEER[0]}>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"Contact: <sip:alice@{PEER[0]}:{PEER[1]}>\r\n"
        + (f"Content-Type: application/sdp\r\n" if body else "")
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def sip_response(request: SipRequest, status: int, reason: str = "X", *, to_tag: str | None = "callee-tag",
                 extra: str = "", body: bytes = b"", contact: str = "<sip:bob@10.0.0.7:5070>") -> bytes:
    vias = "".join(f"Via: {v}\r\n" for v in request.headers.raw_values("Via"))
    to = request.headers.get("To")
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    head = (
        f"SIP/2.0 {status} {reason}\r\n{vias}"
        f"From: {request.headers.get('From')}\r\nTo: {to}\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: {request.headers.get('CSeq')}\r\n"
        + (f"Contact: {contact}\r\n" if contact and status < 300 else "")
        + (f"Content-Type: application/sdp\r\n" if body else "")
        + extra
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def sent(ua: SipUserAgent) -> list[tuple[SipRequest | SipResponse, Outgoing]]:
    return [(parse_message(o.data), o) for o in ua.pop_outgoing()]


def summary(messages) -> list:
    return [m.status if isinstance(m, SipResponse) else m.method for m, _ in messages]


def events(ua: SipUserAgent) -> list:
    out = []
    while (event := ua.next_event()) is not None:
        out.append(event)
    return out


def run_timers(ua: SipUserAgent, until: float) -> list[tuple[float, list]]:
    """Advance the fake clock deadline by deadline; return (time, messages sent then)."""
    timeline = []
    while (at := ua.get_timer()) is not None and at <= until:
        ua.handle_timer(at)
        out = sent(ua)
        if out:
            timeline.append((at, out))
    return timeline
