"""Fuzzing the whole sans-IO user agent, not only the parser: mutated requests (torture corpus, abuse corpus and
a dialog-forming INVITE) fed to one UA in sequence. ``receive`` must never raise, and only the package's protocol
errors may occur inside it: an unexpected exception is counted in ``stats.internal_errors`` (and logged), so that
counter must stay 0."""

from __future__ import annotations

import logging
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sip.test_fuzz_parser import SEEDS as PARSER_SEEDS
from tests.sip.test_fuzz_parser import TOKENS
from tests.sip.uahelpers import PEER, SDP, make_ua, sip_request

ABUSE = Path(__file__).parent / "abuse"
FILL = {b"{{HOST}}": b"192.0.2.1", b"{{PORT}}": b"5060", b"{{LPORT}}": b"5070", b"{{CALLID}}": b"c1@peer",
        b"{{BRANCH}}": b"z9hG4bKfz", b"{{TAG}}": b"peer-tag", b"{{CL}}": b"0"}


def _fill(data: bytes) -> bytes:
    for k, v in FILL.items():
        data = data.replace(k, v)
    return data


SEEDS = [*PARSER_SEEDS, *(_fill(p.read_bytes()) for p in sorted(ABUSE.glob("*.sip"))),
         sip_request("INVITE", body=SDP), sip_request("BYE", to_tag="x", cseq=2)]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 2))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:
            del data[pos: pos + draw(st.integers(1, 20))]
        elif op == 1:
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        else:
            data[pos:pos] = draw(st.binary(max_size=8))
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=8), st.lists(st.sampled_from(["udp", "tcp"]), min_size=8,
                                                             max_size=8))
def test_user_agent_survives_mutated_traffic(messages, transports):
    ua = make_ua()
    log = logging.getLogger("ivr.sip.useragent")
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        now = 0.0
        for data, transport in zip(messages, transports):
            ua.receive(data, PEER, transport, now, 1 if transport == "tcp" else None)
            ua.pop_outgoing()
            while ua.next_event() is not None:
                pass
            now += 0.5
            ua.handle_timer(now)
        ua.handle_timer(now + 64)
    finally:
        log.removeHandler(handler)
    assert ua.stats.internal_errors == 0, [r.getMessage() for r in errors]
    assert not errors, [r.getMessage() for r in errors]
