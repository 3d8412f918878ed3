"""Registrar: challenge/response, expiry rules, wildcard removal, NAT-aware bindings, failure counting."""

import pytest

from ivr.sip.digest import DigestAuthenticator, digest_response, ha1
from ivr.sip.message import NameAddr, parse_message
from ivr.sip.registrar import Registrar

REALM = "pbx.example.com"
SRC = ("203.0.113.7", 40123)


class Store:
    def __init__(self, users):
        self.users = users

    def ha1(self, username, realm, algorithm):
        pw = self.users.get(username)
        return None if pw is None else ha1(username, realm, pw, algorithm)


class Phone:
    """A minimal UA doing REGISTER with digest auth, as a softphone would."""

    def __init__(self, registrar, user="alice", password="pw-alice", call_id="reg-1"):
        self.registrar, self.user, self.password, self.call_id = registrar, user, password, call_id
        self.cseq = 0
        self.challenge = None

    def request(self, contact="<sip:alice@192.168.1.20:5060>", expires=None, auth=True, aor_user=None):
        self.cseq += 1
        lines = [
            "REGISTER sip:pbx.example.com SIP/2.0",
            f"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK{self.cseq};rport",
            f"From: <sip:{self.user}@pbx.example.com>;tag=ft", f"To: <sip:{aor_user or self.user}@pbx.example.com>",
            f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} REGISTER", "Max-Forwards: 70",
        ]
        if contact is not None:
            lines.append(f"Contact: {contact}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth and self.challenge:
            lines.append("Authorization: " + digest_response(self.challenge, "REGISTER", "sip:pbx.example.com",
                                                             self.user, self.password))
        return parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())

    def register(self, now, source=SRC, transport="udp", **kw):
        resp = self.registrar.handle(self.request(**kw), source, transport, now)
        if resp.status == 401:
            self.challenge = resp.headers.get_all("WWW-Authenticate")[0]
            resp = self.registrar.handle(self.request(**kw), source, transport, now)
        return resp


@pytest.fixture
def registrar():
    auth = DigestAuthenticator(REALM, b"registrar-test-secret-0123456789")
    return Registrar(auth, Store({"alice": "pw-alice", "bob": "pw-bob"}), min_expires=60, max_expires=3600,
                     default_expires=1800)


def test_challenge_then_register_and_lookup(registrar):
    phone = Phone(registrar)
    first = registrar.handle(phone.request(), SRC, "udp", 100.0)
    assert first.status == 401
    algs = [v.split("algorithm=")[1].split(",")[0] for v in first.headers.get_all("WWW-Authenticate")]
    assert algs == ["SHA-256", "MD5"]
    assert first.to.tag
    resp = phone.register(100.0, expires=600)
    assert resp.status == 200
    (contact,) = resp.headers.get_all("Contact")
    assert NameAddr.parse(contact).params["expires"] == "600"
    (b,) = registrar.lookup("alice", 100.0)
    assert str(b.contact) == "sip:alice@192.168.1.20:5060"
    assert b.source == SRC and b.transport == "UDP" and b.expires_at == 700.0
    assert b.behind_nat and b.target == SRC
    assert registrar.lookup("alice", 700.0) == []


def test_public_contact_is_used_directly(registrar):
    Phone(registrar).register(0.0, contact="<sip:alice@198.51.100.4:5070>", source=("198.51.100.4", 5070))
    (b,) = registrar.lookup("alice", 1.0)
    assert not b.behind_nat and b.target == ("198.51.100.4", 5070)
    Phone(registrar, call_id="r2").register(0.0, contact="<sip:alice@phone.example.net>", source=SRC)
    targets = {b.target for b in registrar.lookup("alice", 1.0)}
    assert ("phone.example.net", 5060) in targets


def test_tcp_binding_targets_the_connection(registrar):
    Phone(registrar).register(0.0, contact="<sip:alice@198.51.100.4:5070;transport=tcp>",
                              source=("198.51.100.4", 51000), transport="tcp")
    (b,) = registrar.lookup("alice", 1.0)
    assert b.transport == "TCP" and b.target == ("198.51.100.4", 51000)


def test_interval_too_brief(registrar):
    resp = Phone(registrar).register(0.0, expires=30)
    assert resp.status == 423 and resp.headers.get("Min-Expires") == "60"
    assert registrar.lookup("alice", 0.0) == []
    resp = Phone(registrar).register(0.0, contact="<sip:alice@192.168.1.20>;expires=10")
    assert resp.status == 423


def test_expires_clamped_default_and_per_contact(registrar):
    phone = Phone(registrar)
    phone.register(0.0, contact="<sip:a@192.168.1.20>;expires=99999, <sip:b@192.168.1.21>;expires=120, "
                                "<sip:c@192.168.1.22>")
    got = {b.contact.user: b.expires_at for b in registrar.lookup("alice", 0.0)}
    assert got == {"a": 3600.0, "b": 120.0, "c": 1800.0}
    resp = phone.register(10.0, contact="<sip:b@192.168.1.21>;expires=0")
    assert resp.status == 200
    assert sorted(NameAddr.parse(c).uri.user for c in resp.headers.get_all("Contact")) == ["a", "c"]
    assert {NameAddr.parse(c).params["expires"] for c in resp.headers.get_all("Contact")} == {"3590", "1790"}


def test_wildcard_removes_everything(registrar):
    phone = Phone(registrar)
    phone.register(0.0, contact="<sip:a@192.168.1.20>, <sip:b@192.168.1.21>")
    assert len(registrar.lookup("alice", 1.0)) == 2
    assert phone.register(2.0, contact="*", expires=3600).status == 400
    resp = phone.register(3.0, contact="*", expires=0)
    assert resp.status == 200 and "Contact" not in resp.headers
    assert registrar.lookup("alice", 4.0) == []


def test_query_without_contact_lists_bindings(registrar):
    phone = Phone(registrar)
    phone.register(0.0, contact="<sip:a@192.168.1.20>;expires=300")
    resp = phone.register(100.0, contact=None)
    assert resp.status == 200
    assert [NameAddr.parse(c).params["expires"] for c in resp.headers.get_all("Contact")] == ["200"]


def test_refresh_replaces_binding_and_rejects_out_of_order(registrar):
    phone = Phone(registrar)
    phone.register(0.0, contact="<sip:a@192.168.1.20>;expires=300")
    phone.register(200.0, contact="<sip:a@192.168.1.20>;expires=300", source=("203.0.113.7", 40999))
    (b,) = registrar.lookup("alice", 250.0)
    assert b.expires_at == 500.0 and b.source == ("203.0.113.7", 40999)
    phone.cseq -= 5  # an old retransmission arriving late
    assert phone.register(260.0, contact="<sip:a@192.168.1.20>;expires=60").status == 500


def test_bad_password_counts_failures_and_success_resets(registrar):
    bad = Phone(registrar, password="nope")
    assert bad.register(0.0).status == 403
    assert bad.register(1.0).status == 403
    assert registrar.failures(SRC[0]) == 2
    assert Phone(registrar, user="mallory").register(2.0).status == 403
    assert registrar.failures(SRC[0]) == 3
    assert registrar.failures("198.51.100.1") == 0
    assert Phone(registrar).register(3.0).status == 200
    assert registrar.failures(SRC[0]) == 0


def test_cannot_register_someone_else(registrar):
    resp = Phone(registrar, user="bob", password="pw-bob").register(0.0, aor_user="alice")
    assert resp.status == 403
    assert registrar.lookup("alice", 0.0) == []


def test_stale_nonce_rechallenges(registrar):
    phone = Phone(registrar)
    phone.register(0.0)
    resp = registrar.handle(phone.request(), SRC, "udp", 1000.0)  # nonce older than its 300 s lifetime
    assert resp.status == 401
    assert all("stale=true" in v for v in resp.headers.get_all("WWW-Authenticate"))
    assert registrar.failures(SRC[0]) == 0


def test_purge(registrar):
    Phone(registrar).register(0.0, contact="<sip:a@192.168.1.20>;expires=100")
    Phone(registrar, "bob", "pw-bob", "r-b").register(0.0, contact="<sip:b@192.168.1.30>;expires=500")
    assert registrar.purge(200.0) == 1
    assert registrar.lookup("alice", 200.0) == [] and len(registrar.lookup("bob", 200.0)) == 1


def test_malformed_contact_expires(registrar):
    assert Phone(registrar).register(0.0, contact="<sip:a@192.168.1.20>;expires=soon").status == 400
