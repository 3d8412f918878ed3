"""queues.yaml: skills, queues, routing steps, priorities and the demo agent roster.

Validated by pydantic (extra keys forbidden) and then cross-checked (unknown skills, overflow targets, step
order); every problem is reported as file:line:column through ``ivr.yamlconf`` so admins can fix the file.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ivr.errors import ConfigError, ConfigProblem
from ivr.yamlconf import SourceMap, load_yaml_file, load_yaml_text, validate

Level = Field(ge=1, le=10)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceLevel(_Strict):
    percent: float = Field(80.0, gt=0, le=100)
    seconds: float = Field(20.0, gt=0)


class MaxWaitAction(str, enum.Enum):
    OVERFLOW = "overflow"
    VOICEMAIL = "voicemail"
    CALLBACK = "callback"
    HANGUP = "hangup"


class MaxWait(_Strict):
    seconds: float = Field(gt=0)
    action: MaxWaitAction
    target: str | None = None          # queue name for overflow, mailbox for voicemail
    prompt: str | None = None
    max_message_seconds: float = Field(120.0, gt=0, le=600)     # voicemail: longest message kept
    voicemail_key: str | None = Field(None, pattern=r"^[0-9*#]$")  # voicemail: the caller may press it to go now

    @model_validator(mode="after")
    def _target_for_overflow(self) -> "MaxWait":
        if self.action is MaxWaitAction.OVERFLOW and not self.target:
            raise ValueError("action 'overflow' needs 'target: <queue name>'")
        if self.voicemail_key is not None and self.action is not MaxWaitAction.VOICEMAIL:
            raise ValueError("'voicemail_key' needs 'action: voicemail'")
        return self


class Announcements(_Strict):
    position_every: float | None = Field(None, gt=0)     # seconds between position announcements
    ewt_every: float | None = Field(None, gt=0)          # seconds between estimated-wait announcements
    comfort_every: float | None = Field(None, gt=0)
    comfort_prompt: str | None = None
    music_on_hold: str | None = None                     # file under audio_fixtures/ (or absolute)
    announce_on_entry: bool = True

    @model_validator(mode="after")
    def _comfort_needs_prompt(self) -> "Announcements":
        if self.comfort_every and not self.comfort_prompt:
            raise ValueError("comfort_every needs comfort_prompt (the prompt to play)")
        return self


class RoutingStep(_Strict):
    """After ``after`` seconds of waiting: lower every minimum level by ``relax_levels`` (never below 1), drop
    skills, and/or also accept agents with ``add_skills`` or agents eligible for ``add_queues``."""

    after: float = Field(gt=0)
    relax_levels: int = Field(0, ge=0, le=9)
    drop_skills: list[str] = []
    add_skills: dict[str, int] = {}
    add_queues: list[str] = []

    @model_validator(mode="after")
    def _does_something(self) -> "RoutingStep":
        if not (self.relax_levels or self.drop_skills or self.add_skills or self.add_queues):
            raise ValueError("a routing step must relax_levels, drop_skills, add_skills or add_queues")
        for skill, level in self.add_skills.items():
            if not 1 <= level <= 10:
                raise ValueError(f"add_skills.{skill}: level must be 1..10 (got {level})")
        return self


class SurveyOffer(_Strict):
    """The post-call survey offered to a share of a queue's (or a service's) callers when the agent hangs up
    first. ``script`` names a file of ``config/surveys``; a service's entry may leave it out to keep the
    queue's script and change only the share (``share: 0``: never after this service)."""

    script: str | None = Field(None, min_length=1, max_length=64)
    share: float = Field(1.0, ge=0.0, le=1.0)


class QueueConfig(_Strict):
    description: str = ""
    skills: dict[str, int]
    priority: float = 0.0
    service_level: ServiceLevel = ServiceLevel()
    max_wait: MaxWait | None = None
    announcements: Announcements = Announcements()
    wrap_up_seconds: float | None = Field(None, ge=0)
    ring_timeout_seconds: float | None = Field(None, gt=0)
    strategy: str | None = None
    aging_per_second: float | None = Field(None, ge=0)
    steps: list[RoutingStep] = []
    hours: Literal["24/7", "office"] = "office"
    survey: SurveyOffer | None = None

    @model_validator(mode="after")
    def _check(self) -> "QueueConfig":
        for skill, level in self.skills.items():
            if not 1 <= level <= 10:
                raise ValueError(f"skills.{skill}: level must be 1..10 (got {level})")
        afters = [s.after for s in self.steps]
        if afters != sorted(set(afters)):
            raise ValueError("steps must have strictly increasing 'after' times")
        return self


class PhoneConfig(_Strict):
    extension: str | None = None
    uri: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "PhoneConfig":
        if (self.extension is None) == (self.uri is None):
            raise ValueError("give exactly one of 'extension' or 'uri'")
        if self.uri is not None and not self.uri.startswith(("sip:", "sips:")):
            raise ValueError("uri must start with sip: or sips:")
        return self


class AgentConfig(_Strict):
    id: str
    name: str
    phone: PhoneConfig
    skills: dict[str, int]

    @model_validator(mode="after")
    def _levels(self) -> "AgentConfig":
        for skill, level in self.skills.items():
            if not 1 <= level <= 10:
                raise ValueError(f"skills.{skill}: level must be 1..10 (got {level})")
        return self


class CallbackConfig(_Strict):
    retry_seconds: float = Field(300.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    offer_when_ewt_over: float = Field(120.0, ge=0)


class Defaults(_Strict):
    wrap_up_seconds: float = Field(15.0, ge=0)
    ring_timeout_seconds: float = Field(15.0, gt=0)
    strategy: str = "longest_idle"
    aging_per_second: float = Field(1.0, ge=0)
    segment_boost: dict[str, float] = {"critical": 100.0}
    critical_flag_boost: float = 100.0           # IVR flag context["critical"] (e.g. lost card)
    handle_time_seconds: float = Field(180.0, gt=0)   # AHT assumed before any call was measured
    callback: CallbackConfig = CallbackConfig()


class RoutingConfig(_Strict):
    version: Literal[1] = 1
    defaults: Defaults = Defaults()
    skills: dict[str, str]
    queues: dict[str, QueueConfig]
    agents: list[AgentConfig] = []
    service_surveys: dict[str, SurveyOffer] = {}     # IVR service name -> override of its queue's survey

    def survey_offer(self, queue: str | None, service: str | None) -> SurveyOffer | None:
        """The survey to offer after a call of ``queue`` for ``service``: the service's entry over the queue's,
        a script always resolved; None when there is none (or its share is 0)."""
        q = self.queues.get(queue) if queue else None
        base = q.survey if q is not None else None
        over = self.service_surveys.get(service) if service else None
        script = (over.script if over is not None and over.script else None) or (base.script if base else None)
        share = over.share if over is not None else (base.share if base is not None else 0.0)
        if not script or share <= 0:
            return None
        return SurveyOffer(script=script, share=share)

    # resolved per-queue values -----------------------------------------------------------------------------
    def wrap_up(self, queue: str) -> float:
        q = self.queues[queue]
        return q.wrap_up_seconds if q.wrap_up_seconds is not None else self.defaults.wrap_up_seconds

    def ring_timeout(self, queue: str) -> float:
        q = self.queues[queue]
        return q.ring_timeout_seconds if q.ring_timeout_seconds is not None else self.defaults.ring_timeout_seconds

    def strategy(self, queue: str) -> str:
        return self.queues[queue].strategy or self.defaults.strategy

    def aging(self, queue: str) -> float:
        q = self.queues[queue]
        return q.aging_per_second if q.aging_per_second is not None else self.defaults.aging_per_second


def _survey_problems(cfg: RoutingConfig, smap: SourceMap, known_surveys: set[str] | None) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []

    def script_ok(name: str, path: tuple) -> None:
        if known_surveys is not None and name not in known_surveys:
            known = ", ".join(sorted(known_surveys)) or "none"
            problems.append(smap.problem(path, f"unknown survey script {name!r}: add config/surveys/{name}.yaml or "
                                               f"use one of the scripts there ({known})"))

    for qname, q in cfg.queues.items():
        if q.survey is None:
            continue
        path = ("queues", qname, "survey")
        if not q.survey.script:
            problems.append(smap.problem(path, f"queue {qname!r}: survey needs 'script: <name of a file in "
                                               "config/surveys>'"))
        else:
            script_ok(q.survey.script, path + ("script",))
    for service, offer in cfg.service_surveys.items():
        if offer.script:
            script_ok(offer.script, ("service_surveys", service, "script"))
    return problems


def _cross_check(cfg: RoutingConfig, smap: SourceMap, known_strategies: set[str] | None,
                 known_surveys: set[str] | None = None) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = _survey_problems(cfg, smap, known_surveys)
    skills = set(cfg.skills)

    def skill_ok(name: str, path: tuple) -> None:
        if name not in skills:
            line, col = smap.positions.get(path + ("__key__",), smap.locate(path))
            problems.append(ConfigProblem(smap.file, line, col,
                                          f"unknown skill {name!r}: declare it under 'skills:' or fix the spelling"))

    def strategy_ok(name: str, path: tuple) -> None:
        if known_strategies is not None and name not in known_strategies:
            problems.append(smap.problem(path, f"unknown strategy {name!r}: use one of "
                                               f"{', '.join(sorted(known_strategies))}"))

    strategy_ok(cfg.defaults.strategy, ("defaults", "strategy"))
    for qname, q in cfg.queues.items():
        base = ("queues", qname)
        for s in q.skills:
            skill_ok(s, base + ("skills", s))
        if q.strategy:
            strategy_ok(q.strategy, base + ("strategy",))
        if q.max_wait and q.max_wait.action is MaxWaitAction.OVERFLOW:
            if q.max_wait.target not in cfg.queues:
                problems.append(smap.problem(base + ("max_wait", "target"),
                                             f"overflow target {q.max_wait.target!r} is not a queue"))
            elif q.max_wait.target == qname:
                problems.append(smap.problem(base + ("max_wait", "target"), "a queue cannot overflow to itself"))
        for i, step in enumerate(q.steps):
            for s in step.drop_skills:
                skill_ok(s, base + ("steps", i, "drop_skills"))
            for s in step.add_skills:
                skill_ok(s, base + ("steps", i, "add_skills", s))
            for j, other in enumerate(step.add_queues):
                if other not in cfg.queues:
                    problems.append(smap.problem(base + ("steps", i, "add_queues", j),
                                                 f"add_queues: {other!r} is not a queue"))
    seen: dict[str, int] = {}
    for i, a in enumerate(cfg.agents):
        if a.id in seen:
            problems.append(smap.problem(("agents", i, "id"),
                                         f"agent id {a.id!r} already used by agent #{seen[a.id] + 1}"))
        seen.setdefault(a.id, i)
        for s in a.skills:
            skill_ok(s, ("agents", i, "skills", s))
    return problems


def parse_config(data: Any, smap: SourceMap, known_strategies: set[str] | None = None,
                 known_surveys: set[str] | None = None) -> RoutingConfig:
    """``known_surveys``: names of the survey scripts (``contact-server validate`` passes them) to check the
    queues' ``survey.script`` against; None skips that check."""
    if not isinstance(data, dict):
        raise ConfigError([smap.problem((), "queues.yaml must be a mapping with 'skills' and 'queues'")])
    cfg = validate(RoutingConfig, data, smap)
    problems = _cross_check(cfg, smap, known_strategies, known_surveys)
    if problems:
        raise ConfigError(problems)
    return cfg


def _strategies() -> set[str]:
    from routing.strategies import default_registry
    return set(default_registry.names())


def load_routing_config(path: str | Path, known_strategies: set[str] | None = None,
                        known_surveys: set[str] | None = None) -> RoutingConfig:
    """Load and check config/queues.yaml; raises ivr.errors.ConfigError listing file:line:column problems."""
    data, smap = load_yaml_file(path)
    return parse_config(data, smap, known_strategies if known_strategies is not None else _strategies(),
                        known_surveys)


def load_routing_config_text(text: str, file: str = "<queues.yaml>",
                             known_strategies: set[str] | None = None,
                             known_surveys: set[str] | None = None) -> RoutingConfig:
    data, smap = load_yaml_text(text, file)
    return parse_config(data, smap, known_strategies if known_strategies is not None else _strategies(),
                        known_surveys)
