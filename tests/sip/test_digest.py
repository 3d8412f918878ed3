"""Digest authentication: known vectors, client/server interplay, stale nonces, replays."""

import pytest

from ivr.sip.digest import AuthResult, DigestAuthenticator, DigestError, digest_response, ha1, parse_auth_header
from ivr.sip.message import parse_message

SECRET = b"0123456789abcdef-test-secret"
REALM = "pbx.example.com"
USERS = {"alice": "s3cret pass", "bob": "hunter2"}


def lookup(username, realm, algorithm):
    pw = USERS.get(username)
    return None if pw is None else ha1(username, realm, pw, algorithm)


def register(uri="sip:pbx.example.com"):
    return parse_message(
        (f"REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
         "From: <sip:alice@pbx.example.com>;tag=1\r\nTo: <sip:alice@pbx.example.com>\r\n"
         "Call-ID: r1\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode()
    )


def test_rfc2617_section_3_5_vector():
    challenge = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                 'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    value = digest_response(challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b")
    scheme, p = parse_auth_header(value)
    assert scheme == "Digest"
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert (p["nc"], p["qop"], p["opaque"]) == ("00000001", "auth", "5ccc069c403ebaf9f0171e9517f40e41")


@pytest.mark.parametrize(
    "algorithm, expected",
    [("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
     ("MD5", "8ca523f5e9506fed4657c9700eebdbec")],
)
def test_rfc7616_section_3_9_1_vectors(algorithm, expected):
    challenge = (f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
                 'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
                 'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    value = digest_response(challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life",
                            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert parse_auth_header(value)[1]["response"] == expected


def test_rfc2069_style_without_qop():
    # RFC 2617 3.2.2.1: response = H(HA1:nonce:HA2) when the server offers no qop
    value = digest_response('Digest realm="r", nonce="n"', "INVITE", "sip:x@y", "u", "p")
    p = parse_auth_header(value)[1]
    import hashlib
    h = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    assert p["response"] == h(f"{h('u:r:p')}:n:{h('INVITE:sip:x@y')}")
    assert "qop" not in p and "cnonce" not in p


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_client_against_server(algorithm):
    auth = DigestAuthenticator(REALM, SECRET, algorithms=(algorithm,))
    (challenge,) = auth.challenge(now=1000.0)
    assert f"algorithm={algorithm}" in challenge and 'qop="auth"' in challenge
    req = register()
    value = digest_response(challenge, "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass")
    assert auth.verify(req, value, lookup, now=1010.0) == AuthResult(True, "alice")
    # next request on the same nonce with a higher nonce-count is fine; the same count again is a replay
    value2 = digest_response(challenge, "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass", nc=2)
    assert auth.verify(req, value2, lookup, now=1011.0).ok
    replay = auth.verify(req, value2, lookup, now=1012.0)
    assert not replay.ok and not replay.stale and "replay" in replay.reason.lower()


def test_server_challenge_offers_both_algorithms_in_order():
    values = DigestAuthenticator(REALM, SECRET).challenge(now=5.0, stale=True)
    assert [parse_auth_header(v)[1]["algorithm"] for v in values] == ["SHA-256", "MD5"]
    assert all(parse_auth_header(v)[1]["stale"] == "true" for v in values)


def test_nonce_verification_needs_no_state_but_the_secret():
    issuer = DigestAuthenticator(REALM, SECRET)
    other_worker = DigestAuthenticator(REALM, SECRET)
    value = digest_response(issuer.challenge(0.0)[0], "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass")
    assert other_worker.verify(register(), value, lookup, now=1.0).ok
    stranger = DigestAuthenticator(REALM, b"another-secret-of-16-bytes")
    assert stranger.verify(register(), value, lookup, now=1.0).reason == "Invalid nonce"


def test_stale_nonce_only_with_good_credentials():
    auth = DigestAuthenticator(REALM, SECRET, nonce_ttl=300)
    challenge = auth.challenge(now=0.0)[0]
    good = digest_response(challenge, "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass")
    res = auth.verify(register(), good, lookup, now=301.0)
    assert not res.ok and res.stale
    bad = digest_response(challenge, "REGISTER", "sip:pbx.example.com", "alice", "wrong")
    res = auth.verify(register(), bad, lookup, now=301.0)
    assert not res.ok and not res.stale and res.reason == "Wrong credentials"


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda v: v.replace('username="alice"', 'username="mallory"'), "Unknown user"),
        (lambda v: v.replace(f'realm="{REALM}"', 'realm="other"'), "Wrong realm"),
        (lambda v: v.replace('uri="sip:pbx.example.com"', 'uri="sip:elsewhere.example.com"'),
         "Digest URI does not match the Request-URI"),
        (lambda v: v.replace("qop=auth, ", ""), "qop=auth required"),
        (lambda v: v.replace("Digest ", "Basic "), "Unsupported authentication scheme 'Basic'"),
        (lambda v: v.replace("algorithm=SHA-256", "algorithm=SHA-512"), "Unsupported algorithm"),
        (lambda v: 'Digest username="alice", realm="x', "Unterminated quoted string in authentication header"),
    ],
)
def test_rejections(mangle, reason):
    auth = DigestAuthenticator(REALM, SECRET)
    value = digest_response(auth.challenge(0.0)[0], "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass")
    res = auth.verify(register(), mangle(value), lookup, now=1.0)
    assert not res.ok and res.reason == reason


def test_digest_uri_compared_as_uri():
    auth = DigestAuthenticator(REALM, SECRET)
    value = digest_response(auth.challenge(0.0)[0], "REGISTER", "sip:PBX.example.com;transport=udp", "alice",
                            "s3cret pass")
    req = register("sip:PBX.example.com;TRANSPORT=udp")
    assert auth.verify(req, value, lookup, now=1.0).ok


def test_evicted_nonces_become_stale_not_replayable():
    auth = DigestAuthenticator(REALM, SECRET, max_tracked_nonces=2)
    first = digest_response(auth.challenge(1.0)[0], "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass")
    assert auth.verify(register(), first, lookup, now=2.0).ok
    for t in (3.0, 4.0):
        v = digest_response(auth.challenge(t)[0], "REGISTER", "sip:pbx.example.com", "alice", "s3cret pass")
        assert auth.verify(register(), v, lookup, now=t).ok
    res = auth.verify(register(), first, lookup, now=5.0)  # first nonce evicted: replay must not pass
    assert not res.ok and res.stale


def test_unsupported_challenges():
    with pytest.raises(DigestError):
        digest_response('Digest realm="r", nonce="n", algorithm=SHA-512-256', "GET", "/", "u", "p")
    with pytest.raises(DigestError):
        digest_response('Basic realm="r"', "GET", "/", "u", "p")
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, b"short")


def test_md5_sess_client():
    import hashlib
    h = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    value = digest_response('Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess', "BYE", "sip:a@b",
                            "u", "p", cnonce="c")
    a1 = h(f"{h('u:r:p')}:n:c")
    assert parse_auth_header(value)[1]["response"] == h(f"{a1}:n:00000001:c:auth:{h('BYE:sip:a@b')}")
