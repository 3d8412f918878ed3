"""Agent phones: HA1-only credentials, digest REGISTER through the real registrar, where offers ring; the desktop
and wallboard adapters over a real engine. The SIP end to end (offers, RONA, callback, feature codes) is in
tests/e2e/test_routing_sip.py."""

from __future__ import annotations

import json

import pytest

from ivr.agents import (AgentPhoneError, EngineAgentControl, EngineWallboard, PhoneCredentials, PhoneDirectory,
                        make_credential)
from ivr.queueing import QueueService
from ivr.sip.digest import DigestAuthenticator, digest_response
from ivr.sip.message import parse_message
from ivr.sip.registrar import Registrar
from routing.config import load_routing_config_text
from routing.engine import RoutingEngine
from routing.events import AgentStateChanged

REALM = "contact-server"


def register(ext: str, auth: str | None = None, cseq: int = 1) -> bytes:
    lines = [f"REGISTER sip:127.0.0.1 SIP/2.0",
             "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-1;rport",
             f"From: <sip:{ext}@127.0.0.1>;tag=abc", f"To: <sip:{ext}@127.0.0.1>",
             "Call-ID: reg-1@10.0.0.5", f"CSeq: {cseq} REGISTER", f"Contact: <sip:{ext}@10.0.0.5:5062>",
             "Expires: 600", "Max-Forwards: 70"]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.fixture
def registrar():
    creds = PhoneCredentials(REALM)
    creds.set_password("2001", "demo-phone-2001")
    return Registrar(DigestAuthenticator(REALM, b"s" * 32), creds)


def do_register(reg: Registrar, ext: str, password: str, now: float = 100.0):
    first = reg.handle(parse_message(register(ext)), ("192.0.2.7", 40000), "UDP", now)
    assert first.status == 401
    challenge = first.headers.get_all("WWW-Authenticate")[-1]          # MD5, what most desk phones answer
    auth = digest_response(challenge, "REGISTER", "sip:127.0.0.1", ext, password)
    return reg.handle(parse_message(register(ext, auth, cseq=2)), ("192.0.2.7", 40000), "UDP", now)


def test_phone_registers_with_digest_and_offers_ring_its_binding(registrar):
    assert do_register(registrar, "2001", "demo-phone-2001").status == 200
    route = PhoneDirectory(registrar, lambda: 200.0).route("ext:2001")
    assert route.uri == "sip:2001@10.0.0.5:5062"
    assert route.destination == ("192.0.2.7", 40000)      # behind NAT: the address the REGISTER came from


def test_wrong_password_is_refused_and_unregistered_extension_cannot_ring(registrar):
    assert do_register(registrar, "2001", "not-the-password").status == 403
    with pytest.raises(AgentPhoneError, match="not registered"):
        PhoneDirectory(registrar, lambda: 200.0).route("ext:2001")
    assert PhoneDirectory(registrar, lambda: 0.0).route("sip:a@192.0.2.1:5070").uri == "sip:a@192.0.2.1:5070"


def test_credentials_file_holds_ha1_only_and_checks_the_realm(tmp_path):
    cred = make_credential("2002", REALM, "demo-phone-2002")
    f = tmp_path / "agent_phones.yaml"
    f.write_text(f'realm: {REALM}\nphones:\n  "2002": {{md5: {cred.ha1["MD5"]}, sha256: {cred.ha1["SHA-256"]}}}\n')
    store = PhoneCredentials.load(f, REALM)
    assert store.ha1("2002", REALM, "SHA-256") == cred.ha1["SHA-256"]
    assert "demo-phone-2002" not in f.read_text()
    with pytest.raises(AgentPhoneError, match="realm"):
        PhoneCredentials.load(f, "other-realm")
    f.write_text('phones:\n  "2003": {md5: not-hex}\n')
    with pytest.raises(AgentPhoneError, match="not a hex HA1"):
        PhoneCredentials.load(f, REALM)
    with pytest.raises(AgentPhoneError, match="8 characters"):
        make_credential("2004", REALM, "short")


QUEUES = """
skills: {general: "any"}
queues:
  general: {skills: {general: 3}}
agents:
  - {id: "a1", name: "Anna", phone: {uri: "sip:a1@127.0.0.1:5071"}, skills: {general: 5}}
"""


async def test_desktop_control_and_wallboard_drive_the_engine():
    engine = RoutingEngine(load_routing_config_text(QUEUES))
    service = QueueService(engine, manager=None, phones=PhoneDirectory(None, lambda: 0.0), prompts=None,
                           reconcile_every=0)
    control = EngineAgentControl(service)
    board = EngineWallboard(service)
    empty = board.snapshot()
    assert empty["queues"][0]["staffed"] == 0 and empty["queues"][0]["ewt_seconds"] is None
    json.dumps(empty)                                               # no infinity in what the web sends
    assert (await control.set_available("a1")).state == "available"  # logs in on the way
    assert (await control.pause("a1", "lunch")).reason == "lunch"
    changes = [(e.old, e.new) for e in service.history if isinstance(e, AgentStateChanged)]
    assert changes == [("offline", "available"), ("available", "paused")]
    from routing.errors import RoutingError
    with pytest.raises(RoutingError, match="reason"):
        await control.pause("a1", "")
    assert (await control.logout("a1")).state == "offline"
    assert board.agents()[0]["state"] == "offline"
    await service.stop()
