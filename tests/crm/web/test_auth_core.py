"""The sans-IO parts of web authentication: signed sessions and the login limiter, with explicit times."""

from __future__ import annotations

from crm_bridge.web.auth import LoginLimiter, SessionSigner, normalise_origin, tokens_equal


def test_session_expires_and_is_bound_to_its_key() -> None:
    signer = SessionSigner(b"k" * 32)
    session, token = signer.issue(role="agent", agent_id="2001", db_agent_id="agent-1", name="A", now=100.0,
                                  ttl=60.0)
    assert signer.verify(token, 159.0) == session
    assert signer.verify(token, 160.0) is None
    assert SessionSigner(b"x" * 32).verify(token, 120.0) is None
    assert signer.verify(token + "x", 120.0) is None and signer.verify("garbage", 120.0) is None
    signer.revoke(session, 120.0)
    assert signer.verify(token, 121.0) is None


def test_limiter_window_slides() -> None:
    lim = LoginLimiter(max_failures=3, window=60.0)
    for t in (0.0, 10.0, 20.0):
        assert lim.retry_after("1.2.3.4", t) == 0.0
        lim.failed("1.2.3.4", t)
    assert lim.retry_after("1.2.3.4", 30.0) == 30.0          # until the first failure leaves the window
    assert lim.retry_after("5.6.7.8", 30.0) == 0.0           # other addresses are not affected
    assert lim.retry_after("1.2.3.4", 60.0) == 0.0


def test_origin_normalisation_and_token_compare() -> None:
    assert normalise_origin("HTTPS://Desk.Example.com:443/") == "https://desk.example.com"
    assert normalise_origin("http://127.0.0.1:8080/login?x=1") == "http://127.0.0.1:8080"
    assert normalise_origin("null") is None and normalise_origin("javascript:alert(1)") is None
    assert tokens_equal("abc", "abc") and not tokens_equal("abd", "abc") and not tokens_equal("abc", None)
