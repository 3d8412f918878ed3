"""Masking of sensitive numbers for logs and the screen pop.

Card numbers keep their last four digits (PCI DSS allows first six and last four; we show only the last four),
PINs are replaced entirely, IBANs keep country, check digits and the last four characters.
"""

from __future__ import annotations

import re

MASK = "*"

_PAN_RE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN_RE = re.compile(r"\b([A-Z]{2}\d{2})((?:\s?[A-Z0-9]){10,30})\b")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def mask_pan(pan: str) -> str:
    """``4111 1111 1111 1234`` -> ``************1234``; separators are dropped, too-short input is fully masked."""
    digits = re.sub(r"\D", "", pan or "")
    if len(digits) < 8:
        return MASK * len(digits)
    return MASK * (len(digits) - 4) + digits[-4:]


def mask_pin(pin: str | None) -> str:
    """A PIN never leaves in any part, and its length is not revealed either."""
    return MASK * 4


def mask_iban(iban: str) -> str:
    """``IT60X0542811101000000123456`` -> ``IT60***************3456`` (spaces removed)."""
    compact = re.sub(r"\s", "", iban or "").upper()
    if len(compact) <= 8:
        return MASK * len(compact)
    return compact[:4] + MASK * (len(compact) - 8) + compact[-4:]


def redact_text(text: str) -> str:
    """Mask card numbers (Luhn-valid 13-19 digit runs) and IBANs found in free text, e.g. agent notes or logs."""

    def pan(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        return mask_pan(digits) if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)

    def iban(m: re.Match[str]) -> str:
        return mask_iban(m.group(0))

    return _PAN_RE.sub(pan, _IBAN_RE.sub(iban, text))
