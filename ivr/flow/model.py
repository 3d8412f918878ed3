"""The IVR flow language: the schema of one `config/ivr/*.yaml` file.

Pydantic models with ``extra="forbid"`` so that a misspelt key is an error with its position, never a silently
ignored setting. Cross-references (node names, queues, schedules, WAV files) are checked later by
:mod:`ivr.flow.validate`, which sees every file at once.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DIGITS = set("0123456789*#")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
Scalar = Union[str, int, float, bool]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_digit(key: str, what: str) -> str:
    if len(key) != 1 or key not in DIGITS:
        raise ValueError(f"{what} {key!r} is not a single keypad key: use one of 0-9, * or #")
    return key


# ---------------------------------------------------------------- prompts

class PromptVariant(Strict):
    """What to play in one language: a recorded WAV, or text for TTS, or both (WAV wins, text is the caption)."""

    text: str | None = None
    wav: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "PromptVariant":
        if not self.text and not self.wav:
            raise ValueError("a prompt needs 'text' or 'wav' (or both)")
        return self


class Prompt(Strict):
    """A prompt: one variant per language code (``it``, ``en``...). A plain string in YAML is text for every language."""

    variants: dict[str, PromptVariant]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"variants": {"*": {"text": data}}}
        if isinstance(data, dict) and "variants" not in data:
            if set(data) <= {"text", "wav"}:
                return {"variants": {"*": data}}
            return {"variants": {k: ({"text": v} if isinstance(v, str) else v) for k, v in data.items()}}
        return data


def _as_prompt_list(v: Any) -> Any:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


PromptList = Annotated[list[Prompt], Field(default_factory=list)]


# ---------------------------------------------------------------- conditions

class Condition(Strict):
    """One test. Exactly one operator key; ``all``/``any``/``not`` combine. Deliberately not an expression language."""

    identified: bool | None = None
    verified: bool | None = None
    segment: str | list[str] | None = None
    language: str | list[str] | None = None
    var: str | None = None
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    open: str | None = None
    holiday: str | None = None
    dnis: str | list[str] | None = None
    ani_withheld: bool | None = None
    all: list["Condition"] | None = None
    any: list["Condition"] | None = None
    not_: "Condition | None" = Field(default=None, alias="not")

    OPERATORS: ClassVar[tuple[str, ...]] = ("identified", "verified", "segment", "language", "var", "open", "holiday",
                                   "dnis", "ani_withheld", "all", "any", "not_")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Condition":
        used = [k for k in self.OPERATORS if getattr(self, k) is not None]
        if len(used) != 1:
            names = ", ".join(k.rstrip("_") for k in self.OPERATORS)
            raise ValueError(f"a condition needs exactly one of: {names} (found {len(used)}: "
                             f"{', '.join(u.rstrip('_') for u in used) or 'none'}); combine several with all/any")
        if (self.equals is not None or self.in_ is not None) and self.var is None:
            raise ValueError("'equals' and 'in' only go with 'var'")
        if self.equals is not None and self.in_ is not None:
            raise ValueError("use either 'equals' or 'in', not both")
        return self


# ---------------------------------------------------------------- schedules

_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_RANGE_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_HOLIDAY_RE = re.compile(r"^(\d{4}-)?\d{2}-\d{2}$")


def parse_days(key: str) -> list[int]:
    key = key.strip().lower()
    if "-" in key:
        a, b = key.split("-", 1)
        if a not in _DAYS or b not in _DAYS:
            raise ValueError(f"day range {key!r}: use three-letter days like mon-fri")
        i, j = _DAYS.index(a), _DAYS.index(b)
        if j < i:
            raise ValueError(f"day range {key!r} goes backwards: write it as start-end within mon..sun")
        return list(range(i, j + 1))
    if key not in _DAYS:
        raise ValueError(f"unknown day {key!r}: use mon, tue, wed, thu, fri, sat, sun or a range like mon-fri")
    return [_DAYS.index(key)]


def parse_range(text: str) -> tuple[int, int]:
    """'08:00-20:00' -> minutes since midnight (start, end); end may be 24:00."""
    m = _RANGE_RE.match(text.strip())
    if not m:
        raise ValueError(f"opening hours {text!r}: write HH:MM-HH:MM, e.g. 08:00-20:00")
    h1, m1, h2, m2 = map(int, m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60 or end <= start:
        raise ValueError(f"opening hours {text!r}: the end must be after the start, within 00:00-24:00")
    return start, end


class Schedule(Strict):
    """Weekly opening hours in a time zone, minus holidays (``MM-DD`` every year, ``YYYY-MM-DD`` once,
    or ``easter`` / ``easter_monday`` computed per year)."""

    timezone: str
    hours: dict[str, str | list[str]]
    holidays: list[str | date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as Europe/Rome") from None
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        seen: dict[int, str] = {}
        for key, ranges in v.items():
            for d in parse_days(key):
                if d in seen:
                    raise ValueError(f"{_DAYS[d]} appears in both {seen[d]!r} and {key!r}: list each day once")
                seen[d] = key
            for r in ([ranges] if isinstance(ranges, str) else ranges):
                parse_range(r)
        return v

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: list[str | date]) -> list[str | date]:
        for h in v:
            if isinstance(h, date) or h in ("easter", "easter_monday"):
                continue
            if not _HOLIDAY_RE.match(h):
                raise ValueError(f"holiday {h!r}: write MM-DD (every year), YYYY-MM-DD, easter or easter_monday")
            try:
                date.fromisoformat(h if len(h) == 10 else f"2000-{h}")
            except ValueError:
                raise ValueError(f"holiday {h!r} is not a real date") from None
        return v


# ---------------------------------------------------------------- nodes

NodeName = str


class _Node(Strict):
    description: str | None = None


class SayNode(_Node):
    kind: Literal["say", "play"]
    prompt: list[Prompt]
    barge_in: bool = False
    next: NodeName

    _p = field_validator("prompt", mode="before")(lambda cls, v: _as_prompt_list(v))


class MenuNode(_Node):
    kind: Literal["menu"]
    prompt: list[Prompt]
    options: dict[str, NodeName]
    timeout: float = Field(default=5.0, gt=0, le=60)
    max_retries: int = Field(default=2, ge=0, le=10)
    invalid_prompt: PromptList
    no_input_prompt: PromptList
    repeat_key: str | None = None
    barge_in: bool = True
    on_failure: NodeName | None = None

    _p = field_validator("prompt", "invalid_prompt", "no_input_prompt", mode="before")(
        lambda cls, v: _as_prompt_list(v))

    @field_validator("options")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("a menu needs at least one option")
        for k in v:
            _check_digit(k, "menu key")
        return v

    @field_validator("repeat_key")
    @classmethod
    def _rk(cls, v: str | None) -> str | None:
        return None if v is None else _check_digit(str(v), "repeat_key")

    @model_validator(mode="after")
    def _repeat_not_option(self) -> "MenuNode":
        if self.repeat_key is not None and self.repeat_key in self.options:
            raise ValueError(f"key {self.repeat_key!r} is both the repeat_key and a menu option: "
                             "pick another repeat_key or remove the option")
        return self


class Validation(Strict):
    luhn: bool = False
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _re(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {v!r}: {exc}") from None
        return v


class _CollectBase(Strict):
    min_length: int = Field(default=1, ge=1, le=64)
    max_length: int = Field(default=16, ge=1, le=64)
    terminator: str | None = "#"
    first_timeout: float = Field(default=6.0, gt=0, le=60)
    inter_digit_timeout: float = Field(default=3.0, gt=0, le=30)

    @field_validator("terminator", mode="before")
    @classmethod
    def _term(cls, v: Any) -> Any:
        return None if v is None else _check_digit(str(v), "terminator")

    @model_validator(mode="after")
    def _lengths(self):
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} is greater than max_length {self.max_length}")
        return self


class CollectNode(_Node, _CollectBase):
    kind: Literal["collect"]
    prompt: list[Prompt]
    variable: str
    validate_: Validation = Field(default_factory=Validation, alias="validate")
    max_retries: int = Field(default=2, ge=0, le=10)
    invalid_prompt: PromptList
    no_input_prompt: PromptList
    secret: bool = False
    barge_in: bool = True
    next: NodeName
    on_failure: NodeName | None = None

    _p = field_validator("prompt", "invalid_prompt", "no_input_prompt", mode="before")(
        lambda cls, v: _as_prompt_list(v))


class PinFallback(Strict):
    """Account number + PIN by keypad for withheld or unknown numbers."""

    account_prompt: list[Prompt]
    pin_prompt: list[Prompt]
    invalid_prompt: PromptList
    no_input_prompt: PromptList
    account: _CollectBase = Field(default_factory=lambda: _CollectBase(min_length=6, max_length=12))
    pin: _CollectBase = Field(default_factory=lambda: _CollectBase(min_length=4, max_length=8))
    account_validate: Validation = Field(default_factory=Validation)
    max_attempts: int = Field(default=3, ge=1, le=10)

    _p = field_validator("account_prompt", "pin_prompt", "invalid_prompt", "no_input_prompt", mode="before")(
        lambda cls, v: _as_prompt_list(v))


class IdentifyNode(_Node):
    kind: Literal["identify"]
    on_found: NodeName
    on_not_found: NodeName | None = None
    fallback: PinFallback | None = None
    on_failed: NodeName
    on_locked: NodeName | None = None

    @model_validator(mode="after")
    def _path(self) -> "IdentifyNode":
        if self.on_not_found is None and self.fallback is None:
            raise ValueError("identify needs 'fallback' (account + PIN) or 'on_not_found' for unknown callers")
        return self


VoiceOutcome = Literal["accept", "reject", "not_enough_speech", "not_enrolled", "locked_out", "error"]
VOICE_OUTCOMES: tuple[str, ...] = ("accept", "reject", "not_enough_speech", "not_enrolled", "locked_out", "error")


class _VoiceNode(_Node):
    prompt: PromptList
    retry_prompts: dict[VoiceOutcome, list[Prompt]] = Field(default_factory=dict)
    max_attempts: int = Field(default=2, ge=1, le=10)   # tries per take (verification has one take)
    retry_on: list[VoiceOutcome] = Field(default_factory=lambda: ["reject", "not_enough_speech"])
    branches: dict[VoiceOutcome, NodeName] = Field(default_factory=dict)
    fallback: NodeName

    _p = field_validator("prompt", mode="before")(lambda cls, v: _as_prompt_list(v))

    @field_validator("retry_prompts", mode="before")
    @classmethod
    def _rp(cls, v: Any) -> Any:
        return {k: _as_prompt_list(p) for k, p in v.items()} if isinstance(v, dict) else v


class VerifyVoiceNode(_VoiceNode):
    kind: Literal["verify_voice"]


class EnrollVoiceNode(_VoiceNode):
    kind: Literal["enroll_voice"]
    takes: int = Field(default=3, ge=1, le=10)
    retry_on: list[VoiceOutcome] = Field(default_factory=lambda: ["not_enough_speech"])


class SetNode(_Node):
    kind: Literal["set"]
    service: str | None = None
    skills: list[str] | None = None
    priority: int | None = Field(default=None, ge=0, le=100)
    queue: str | None = None
    language: str | None = None
    variables: dict[str, Scalar] = Field(default_factory=dict)
    next: NodeName


class BranchCase(Strict):
    if_: Condition = Field(alias="if")
    next: NodeName


class BranchNode(_Node):
    kind: Literal["branch"]
    cases: list[BranchCase] = Field(min_length=1)
    else_: NodeName = Field(alias="else")


class QueueNode(_Node):
    kind: Literal["queue"]
    queue: str | None = None
    service: str | None = None
    skills: list[str] | None = None
    priority: int | None = Field(default=None, ge=0, le=100)
    prompt: PromptList

    _p = field_validator("prompt", mode="before")(lambda cls, v: _as_prompt_list(v))


class TransferNode(_Node):
    kind: Literal["transfer"]
    uri: str
    prompt: PromptList

    _p = field_validator("prompt", mode="before")(lambda cls, v: _as_prompt_list(v))

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not re.match(r"^sips?:[^\s]+$", v) and not re.match(r"^tel:\+?[0-9\-.()]+$", v):
            raise ValueError(f"transfer target {v!r} is not a SIP URI: write sip:user@host or tel:+39...")
        return v


class HangupNode(_Node):
    kind: Literal["hangup"]
    prompt: PromptList
    reason: str = "normal"

    _p = field_validator("prompt", mode="before")(lambda cls, v: _as_prompt_list(v))


class GotoNode(_Node):
    kind: Literal["goto"]
    flow: str | None = None
    node: NodeName | None = None

    @model_validator(mode="after")
    def _target(self) -> "GotoNode":
        if self.flow is None and self.node is None:
            raise ValueError("goto needs 'flow' (another flow's start) and/or 'node'")
        return self


class LanguageMenuNode(_Node):
    kind: Literal["language_menu"]
    prompt: list[Prompt]
    options: dict[str, str]
    timeout: float = Field(default=4.0, gt=0, le=60)
    max_retries: int = Field(default=1, ge=0, le=10)
    next: NodeName

    _p = field_validator("prompt", mode="before")(lambda cls, v: _as_prompt_list(v))

    @field_validator("options")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("a language menu needs at least one option")
        for k in v:
            _check_digit(k, "menu key")
        return v


Node = Annotated[
    Union[SayNode, MenuNode, CollectNode, IdentifyNode, VerifyVoiceNode, EnrollVoiceNode, SetNode, BranchNode,
          QueueNode, TransferNode, HangupNode, GotoNode, LanguageMenuNode],
    Field(discriminator="kind"),
]

INPUT_KINDS = frozenset({"menu", "collect", "language_menu", "verify_voice", "enroll_voice"})


class Flow(Strict):
    start: NodeName
    language: str | None = None
    description: str | None = None
    nodes: dict[NodeName, Node]

    @field_validator("nodes")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"node name {name!r}: use letters, digits, '_' or '-' and start with a letter")
        return v


class EntryPoint(Strict):
    """A dialed number -> flow. ``dnis`` is exact (E.164 or national form) or a prefix ending in ``*``."""

    dnis: str | None = None
    regex: str | None = None
    flow: str
    description: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "EntryPoint":
        if (self.dnis is None) == (self.regex is None):
            raise ValueError("an entry point needs exactly one of 'dnis' (number or prefix*) or 'regex'")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {self.regex!r}: {exc}") from None
        return self


class Settings(Strict):
    default_flow: str | None = None
    default_language: str = "it"
    languages: list[str] = Field(default_factory=lambda: ["it", "en"])
    region: str = "IT"
    max_ivr_seconds: float = Field(default=900.0, gt=0)


class IvrFile(Strict):
    """One YAML file. Every section is optional so that flows can be split across files."""

    settings: Settings | None = None
    prompt_dir: str | None = None
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    entry_points: list[EntryPoint] = Field(default_factory=list)
    flows: dict[str, Flow] = Field(default_factory=dict)
