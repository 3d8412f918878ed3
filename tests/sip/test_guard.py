"""SourceGuard: rate limits, blocks, scanners, password guessers, trusted peers."""

from ivr.sip.guard import SourceGuard

INVITE = b"INVITE sip:800100@127.0.0.1 SIP/2.0\r\nUser-Agent: Zoiper\r\n\r\n"
SCANNER = b"OPTIONS sip:100@1.2.3.4 SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n"


def test_burst_then_rate_limited_then_refilled():
    g = SourceGuard(rate=10, burst=5, overruns_to_block=1000)
    assert [g.admit("192.0.2.1", INVITE, 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert g.stats.rate_limited == 2
    assert g.admit("192.0.2.1", INVITE, 0.1)          # one token back after 0.1 s at 10/s
    assert not g.admit("192.0.2.1", INVITE, 0.1)
    assert g.admit("192.0.2.2", INVITE, 0.1)          # another source is not affected


def test_persistent_flood_is_blocked_then_released():
    g = SourceGuard(rate=10, burst=1, overruns_to_block=3, block_seconds=30)
    g.admit("192.0.2.1", INVITE, 0.0)
    for _ in range(3):
        assert not g.admit("192.0.2.1", INVITE, 0.0)
    assert g.blocked("192.0.2.1", 1.0)
    assert not g.admit("192.0.2.1", INVITE, 29.0)     # still blocked although tokens would have refilled
    assert g.stats.blocked_drops == 1
    assert g.admit("192.0.2.1", INVITE, 31.0)


def test_scanner_user_agent_is_dropped_and_blocked():
    g = SourceGuard()
    assert not g.admit("198.51.100.7", SCANNER, 0.0)
    assert g.stats.scanners == 1
    assert not g.admit("198.51.100.7", INVITE, 1.0)   # its next, innocent-looking message too


def test_trusted_peer_is_never_limited():
    g = SourceGuard(rate=1, burst=1, overruns_to_block=1, trusted=["10.0.0.0/8"])
    assert all(g.admit("10.1.2.3", INVITE, 0.0) for _ in range(100))
    assert not g.blocked("10.1.2.3", 0.0)


def test_repeated_digest_failures_block_the_source_until_more_failures():
    failures = {"203.0.113.9": 0}
    g = SourceGuard(max_auth_failures=5, block_seconds=60, auth_failures=lambda ip: failures.get(ip, 0))
    failures["203.0.113.9"] = 4
    assert g.admit("203.0.113.9", INVITE, 0.0)
    failures["203.0.113.9"] = 5
    assert not g.admit("203.0.113.9", INVITE, 1.0)
    assert g.blocked("203.0.113.9", 30.0)
    assert g.admit("203.0.113.9", INVITE, 62.0)       # block served; no new failures yet
    failures["203.0.113.9"] = 10
    assert not g.admit("203.0.113.9", INVITE, 63.0)


def test_memory_is_bounded():
    g = SourceGuard(max_sources=100)
    for i in range(1000):
        g.admit(f"2001:db8::{i:x}", INVITE, 0.0)
    assert len(g._sources) <= 101
