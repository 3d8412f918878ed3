"""Caller identity: trusted P-Asserted-Identity, From fallback, E.164 normalisation, privacy."""

import pytest

from ivr.sip.identity import CallerIdentity, IdentitySource, extract_identity, normalise_number
from ivr.sip.message import parse_message

TRUSTED = ["10.0.0.0/8", "192.0.2.10", "2001:db8::/32"]


def invite(ruri="sip:800100@192.0.2.1", from_="<sip:0612345678@carrier.example>;tag=1", extra=""):
    return parse_message(
        (f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1;branch=z9hG4bK1\r\n"
         f"From: {from_}\r\nTo: <{ruri}>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n")
        .encode()
    )


PAI = "P-Asserted-Identity: <sip:+393331234567@carrier.example;user=phone>\r\n"


def test_pai_from_trusted_peer_wins():
    ident = extract_identity(invite(extra=PAI), "10.20.30.40", TRUSTED)
    assert ident == CallerIdentity("+393331234567", "+393331234567", "800100", "+39800100", IdentitySource.PAI, False)


def test_pai_from_untrusted_source_is_ignored():
    ident = extract_identity(invite(extra=PAI), "198.51.100.9", TRUSTED)
    assert ident.source is IdentitySource.FROM
    assert ident.ani_raw == "0612345678" and ident.ani_e164 == "+390612345678"


def test_trusted_single_ip_and_ipv6():
    assert extract_identity(invite(extra=PAI), "192.0.2.10", TRUSTED).source is IdentitySource.PAI
    assert extract_identity(invite(extra=PAI), "192.0.2.11", TRUSTED).source is IdentitySource.FROM
    assert extract_identity(invite(extra=PAI), "2001:db8::5", TRUSTED).source is IdentitySource.PAI
    assert extract_identity(invite(extra=PAI), "::ffff:10.0.0.1", TRUSTED).source is IdentitySource.PAI
    assert extract_identity(invite(extra=PAI), "not-an-ip", TRUSTED).source is IdentitySource.FROM
    assert extract_identity(invite(extra=PAI), "10.0.0.1", ["garbage", "10.0.0.1"]).source is IdentitySource.PAI


def test_pai_tel_uri_and_two_values():
    extra = "P-Asserted-Identity: \"Mario\" <sip:mario@pbx.example>, <tel:+39-06-1234-5678>\r\n"
    ident = extract_identity(invite(extra=extra), "10.0.0.1", TRUSTED)
    assert ident.ani_e164 == "+390612345678" and ident.ani_raw == "+39-06-1234-5678"
    assert ident.source is IdentitySource.PAI


@pytest.mark.parametrize(
    "number, region, expected",
    [
        ("+39 333 123 4567", "IT", "+393331234567"),
        ("00393331234567", "IT", "+393331234567"),
        ("0044 20 7946 0958", "IT", "+442079460958"),
        ("3331234567", "IT", "+393331234567"),
        ("06-1234-5678", "IT", "+390612345678"),
        ("(201) 555-0123", "US", "+12015550123"),
        ("anonymous", "IT", None),
        ("12", "IT", None),
        ("", "IT", None),
        ("12ab34", "IT", None),
    ],
)
def test_normalise_number(number, region, expected):
    assert normalise_number(number, region) == expected


def test_anonymous_from_sets_privacy():
    ident = extract_identity(invite(from_='"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1'), "1.2.3.4", TRUSTED)
    assert ident.ani_e164 is None and ident.privacy is True and ident.source is IdentitySource.NONE


def test_privacy_id_with_trusted_pai_keeps_number_but_flags_it():
    extra = PAI + "Privacy: id;critical\r\n"
    ident = extract_identity(invite(from_="<sip:anonymous@anonymous.invalid>;tag=1", extra=extra), "10.0.0.1",
                             TRUSTED)
    assert ident.ani_e164 == "+393331234567" and ident.privacy is True


def test_non_numeric_from_user_is_kept_raw():
    ident = extract_identity(invite(from_="<sip:alice@example.com>;tag=1"), "1.2.3.4", TRUSTED)
    assert ident.ani_raw == "alice" and ident.ani_e164 is None and ident.source is IdentitySource.FROM
    assert ident.privacy is False


def test_dnis_from_request_uri():
    ident = extract_identity(invite(ruri="sip:+39-06-8765-4321@192.0.2.1;user=phone"), "1.2.3.4", TRUSTED)
    assert ident.dnis == "+390687654321" and ident.dnis_e164 == "+390687654321"
    ident = extract_identity(invite(ruri="tel:0687654321"), "1.2.3.4", TRUSTED)
    assert ident.dnis == "0687654321" and ident.dnis_e164 == "+390687654321"
    ident = extract_identity(invite(ruri="sip:192.0.2.1"), "1.2.3.4", TRUSTED)
    assert ident.dnis == "" and ident.dnis_e164 is None


def test_phone_context_applied():
    ident = extract_identity(invite(from_="<tel:0612345678;phone-context=+39>;tag=1"), "1.2.3.4", TRUSTED,
                             default_region="US")
    assert ident.ani_e164 == "+390612345678"
