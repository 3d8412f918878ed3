"""The IVR path of one call, kept for the call record and the KPIs (IVR time, containment, drop-off per node).

Plain dataclasses with ``to_dict``/``from_dict`` so the record survives JSON. Secret digits (PINs) are stored
masked: the trace goes to databases and screens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class TraceStep:
    t: float
    flow: str
    node: str
    kind: str


@dataclass(slots=True)
class TraceDigits:
    t: float
    node: str
    digits: str
    reason: str


@dataclass(slots=True)
class TracePrompt:
    t: float
    node: str
    text: str | None
    wav: str | None
    language: str
    interrupted: bool = False


@dataclass(slots=True)
class TraceResult:
    """Outcome of an external step: lookup, PIN, voice verification or enrollment."""

    t: float
    node: str
    what: str
    result: str
    score: float | None = None


@dataclass(slots=True)
class IvrTrace:
    call_id: str
    config_version: str
    dnis: str
    ani: str | None
    entry_flow: str
    started_at: float
    ended_at: float | None = None
    exit: str | None = None           # IvrExit value
    exit_detail: str = ""
    steps: list[TraceStep] = field(default_factory=list)
    digits: list[TraceDigits] = field(default_factory=list)
    prompts: list[TracePrompt] = field(default_factory=list)
    results: list[TraceResult] = field(default_factory=list)
    customer_id: str | None = None
    identified_by: str | None = None  # "ani" or "pin"
    verified: bool = False
    language: str | None = None
    service: str | None = None
    queue: str | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    @property
    def path(self) -> list[str]:
        """``flow.node`` in the order visited: what the e2e tests and the simulator print."""
        return [f"{s.flow}.{s.node}" for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["duration"] = self.duration
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IvrTrace":
        d = dict(d)
        d.pop("duration", None)
        d["steps"] = [TraceStep(**s) for s in d.get("steps", [])]
        d["digits"] = [TraceDigits(**s) for s in d.get("digits", [])]
        d["prompts"] = [TracePrompt(**s) for s in d.get("prompts", [])]
        d["results"] = [TraceResult(**s) for s in d.get("results", [])]
        return cls(**d)
