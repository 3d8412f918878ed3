"""Caller identity (ANI) and dialed number (DNIS) of an incoming request.

P-Asserted-Identity (RFC 3325) is only believable from a trusted peer (our SBC or carrier trunk): anyone
else can write any number in it, so from other sources the From user part is used and labelled as such.
Numbers are normalised to E.164 with ``phonenumbers``; what cannot be normalised is kept raw only.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from .headers import RemoteProtocolError
from .message import NameAddr, SipRequest, SipUri

__all__ = ["IdentitySource", "CallerIdentity", "extract_identity", "normalise_number", "strip_visual_separators"]

log = logging.getLogger(__name__)

_VISUAL_SEPARATORS_RE = re.compile(r"[\s\-.()/]")
_DIALABLE_RE = re.compile(r"\+?[0-9]+")
_WITHHELD = frozenset({"anonymous", "restricted", "withheld", "private", "unavailable", "unknown"})
_PRIVACY_TOKENS = frozenset({"id", "user", "header"})


class IdentitySource(enum.Enum):
    PAI = "pai"
    FROM = "from"
    NONE = "none"


@dataclass(slots=True, frozen=True)
class CallerIdentity:
    ani_e164: str | None
    ani_raw: str | None
    dnis: str
    dnis_e164: str | None
    source: IdentitySource
    privacy: bool


def strip_visual_separators(number: str) -> str:
    """RFC 3966 visual separators and whitespace removed; the digits stay as dialled (``06-123`` -> ``06123``)."""
    return _VISUAL_SEPARATORS_RE.sub("", number)


def normalise_number(number: str | None, default_region: str = "IT") -> str | None:
    """E.164 form of a dialled or presented number, or None when it is not a possible phone number."""
    if not number:
        return None
    digits = strip_visual_separators(number)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if _DIALABLE_RE.fullmatch(digits) is None:
        return None
    try:
        parsed = phonenumbers.parse(digits, None if digits.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=1024)
def _network(peer: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(peer.strip(), strict=False)
    except ValueError:
        log.warning("Ignoring trusted peer %r: not an IP address or CIDR network", peer)
        return None


def _is_trusted(source_ip: str, trusted_peers: Collection[str]) -> bool:
    try:
        ip = ipaddress.ip_address(source_ip.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for peer in trusted_peers:
        net = _network(peer)
        if net is not None and ip.version == net.version and ip in net:
            return True
    return False


def _number_of(uri: SipUri) -> str | None:
    """The user/number part of a sip:, sips: or tel: URI, with a global phone-context applied."""
    if uri.scheme not in ("sip", "sips", "tel") or not uri.user:
        return None
    number = uri.user
    if uri.scheme != "tel":
        number, _, user_params = number.partition(";")
        context = dict(p.partition("=")[::2] for p in user_params.split(";") if p).get("phone-context")
    else:
        context = uri.params.get("phone-context")
    if context and context.startswith("+") and not number.startswith("+"):
        number = strip_visual_separators(context) + number
    return number


def _parse_addr(value: str | None) -> NameAddr | None:
    if not value:
        return None
    try:
        return NameAddr.parse(value)
    except RemoteProtocolError:
        return None


def extract_identity(
    request: SipRequest,
    source_ip: str,
    trusted_peers: Collection[str],
    default_region: str = "IT",
) -> CallerIdentity:
    """Who is calling and what they dialled. ``source_ip`` is the packet's source, never a header."""
    headers = request.headers
    privacy_tokens = {t.strip().lower() for t in (headers.get("Privacy") or "").split(";")}
    privacy = bool(privacy_tokens & _PRIVACY_TOKENS)

    ani_raw: str | None = None
    ani: str | None = None
    source = IdentitySource.NONE
    if "P-Asserted-Identity" in headers and _is_trusted(source_ip, trusted_peers):
        for value in headers.get_all("P-Asserted-Identity"):
            addr = _parse_addr(value)
            number = _number_of(addr.uri) if addr else None
            if number is None:
                continue
            e164 = normalise_number(number, default_region)
            if ani_raw is None or (ani is None and e164 is not None):
                ani_raw, ani, source = number, e164, IdentitySource.PAI
    if source is IdentitySource.NONE:
        addr = _parse_addr(headers.get("From"))
        if addr is not None:
            number = _number_of(addr.uri)
            host = addr.uri.host.lower()
            withheld = host == "anonymous.invalid" or (number or "").lower() in _WITHHELD
            if not number and addr.display and addr.display.strip().lower() in _WITHHELD:
                withheld = True
            if withheld:
                privacy = True
            elif number:
                ani_raw, ani, source = number, normalise_number(number, default_region), IdentitySource.FROM

    dialled = _number_of(request.uri) or ""
    dnis = strip_visual_separators(dialled)
    return CallerIdentity(
        ani_e164=ani,
        ani_raw=ani_raw,
        dnis=dnis,
        dnis_e164=normalise_number(dnis, default_region),
        source=source,
        privacy=privacy,
    )
