"""The validated, immutable IVR configuration that calls run on, and dialed-number matching.

An :class:`IvrConfig` is one version: a run keeps a reference to the one it started on, so hot reload never
changes a call in progress (see :mod:`ivr.flow.holder`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import phonenumbers

from ivr.errors import ConfigProblem
from ivr.flow.model import EntryPoint, Flow, Node, Schedule, Settings
from ivr.yamlconf import SourceMap


def number_forms(number: str, region: str) -> set[str]:
    """All the spellings a dialed number may match: digits as written, E.164, national significant number.

    SIP trunks send the Request-URI user as ``+390212345600``, ``0212345600`` or ``00390212345600``; admins write
    whichever they like, so both sides are expanded and compared as sets.
    """
    raw = re.sub(r"[\s\-().]", "", number or "")
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    forms = {raw} if raw else set()
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return forms
    if phonenumbers.is_possible_number(parsed):
        forms.add(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return forms


@dataclass(frozen=True, slots=True)
class EntryDef:
    entry: EntryPoint
    file: str
    line: int
    column: int

    def matches(self, forms: set[str], region: str) -> int | None:
        """Match strength: exact beats prefix (longer first) beats regex; None if no match."""
        e = self.entry
        if e.regex is not None:
            return 0 if any(re.fullmatch(e.regex, f) for f in forms) else None
        if e.dnis.endswith("*"):
            prefix = re.sub(r"[\s\-().]", "", e.dnis[:-1])
            if prefix.startswith("00"):
                prefix = "+" + prefix[2:]
            return 1000 + len(prefix) if any(f.startswith(prefix) for f in forms) else None
        return 100000 if forms & number_forms(e.dnis, region) else None


@dataclass(frozen=True, slots=True)
class FlowDef:
    name: str
    flow: Flow
    file: str
    smap: SourceMap
    prompt_dir: Path

    def node(self, name: str) -> Node:
        return self.flow.nodes[name]

    @property
    def path(self) -> tuple:
        return ("flows", self.name)


@dataclass(frozen=True, eq=False)
class IvrConfig:
    settings: Settings
    flows: Mapping[str, FlowDef]
    schedules: Mapping[str, Schedule]
    entry_points: tuple[EntryDef, ...]
    version: str
    files: tuple[str, ...] = ()
    warnings: tuple[ConfigProblem, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "flows", MappingProxyType(dict(self.flows)))
        object.__setattr__(self, "schedules", MappingProxyType(dict(self.schedules)))

    def flow_for(self, dnis: str) -> str:
        """The flow for a dialed number; the settings' default flow for numbers no entry point matches."""
        forms = number_forms(dnis, self.settings.region)
        best, best_score = None, -1
        for e in self.entry_points:
            score = e.matches(forms, self.settings.region)
            if score is not None and score > best_score:
                best, best_score = e, score
        return best.entry.flow if best is not None else self.settings.default_flow
