"""Agents, their phones and skills, and the agent state machine.

The state machine is the one place that decides which moves are legal, so that "offered two calls at once" or
"on call forever" cannot be expressed: an offer needs AVAILABLE, and only AVAILABLE agents sit in the pools.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping

from routing.errors import BadRequest, IllegalTransition
from routing.events import AgentStateChanged

MIN_LEVEL = 1
MAX_LEVEL = 10


class AgentState(str, enum.Enum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    RESERVED = "reserved"      # an offer is ringing on the agent's phone
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"
    NOT_READY = "not_ready"    # after a ring-no-answer / busy / failed offer, until the agent says ready


S = AgentState
ALLOWED: dict[AgentState, frozenset[AgentState]] = {
    S.OFFLINE: frozenset({S.AVAILABLE, S.PAUSED}),
    S.AVAILABLE: frozenset({S.RESERVED, S.PAUSED, S.OFFLINE}),
    S.RESERVED: frozenset({S.ON_CALL, S.NOT_READY, S.AVAILABLE}),
    S.ON_CALL: frozenset({S.WRAP_UP, S.AVAILABLE}),
    S.WRAP_UP: frozenset({S.AVAILABLE, S.PAUSED, S.OFFLINE}),
    S.PAUSED: frozenset({S.AVAILABLE, S.PAUSED, S.OFFLINE}),
    S.NOT_READY: frozenset({S.AVAILABLE, S.PAUSED, S.OFFLINE}),
}

_HINTS = {
    (S.ON_CALL, S.OFFLINE): "end the call first (the agent logs out from wrap-up)",
    (S.RESERVED, S.OFFLINE): "the phone is ringing with an offer; answer or reject it first",
    (S.ON_CALL, S.PAUSED): "a pause requested on a call is applied when the call ends",
    (S.OFFLINE, S.RESERVED): "only available agents receive offers",
    (S.OFFLINE, S.OFFLINE): "the agent is already logged out",
    (S.AVAILABLE, S.AVAILABLE): "the agent is already available",
}

STAFFED = frozenset({S.AVAILABLE, S.RESERVED, S.ON_CALL, S.WRAP_UP})
BUSY = frozenset({S.RESERVED, S.ON_CALL, S.WRAP_UP})


@dataclass(frozen=True, slots=True)
class Phone:
    """Where offers ring: a registered extension (resolved by the registrar) or a static SIP URI."""

    extension: str | None = None
    uri: str | None = None

    def __post_init__(self) -> None:
        if (self.extension is None) == (self.uri is None):
            raise BadRequest("a phone is either an extension or a SIP URI: give exactly one of them")
        if self.uri is not None and not self.uri.startswith(("sip:", "sips:")):
            raise BadRequest(f"phone URI {self.uri!r} must start with sip: or sips:")

    @property
    def target(self) -> str:
        return self.uri if self.uri is not None else f"ext:{self.extension}"


def check_levels(skills: Mapping[str, int], who: str) -> dict[str, int]:
    out = {}
    for skill, level in skills.items():
        if not isinstance(level, int) or isinstance(level, bool) or not MIN_LEVEL <= level <= MAX_LEVEL:
            raise BadRequest(f"{who}: skill {skill!r} has level {level!r}; levels are integers "
                             f"{MIN_LEVEL}..{MAX_LEVEL}")
        out[str(skill)] = level
    return out


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """The static part of an agent (from queues.yaml or the CRM): who, which phone, which skills."""

    id: str
    name: str
    phone: Phone
    skills: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "skills", check_levels(self.skills, f"agent {self.id!r}"))


@dataclass(slots=True)
class Agent:
    """Run-time agent: profile + state + the counters the strategies and KPIs need."""

    profile: AgentProfile
    seq: int                                   # stable tie-breaker, assigned by the engine
    state: AgentState = AgentState.OFFLINE
    state_since: float = 0.0
    reason: str | None = None                  # pause reason code / not-ready cause
    call_id: str | None = None                 # the one call this agent is reserved for or talking on
    pending_pause: str | None = None
    idle_since: float = 0.0
    last_offer_seq: int = 0
    logged_in_at: float | None = None
    busy_seconds: float = 0.0
    staffed_seconds: float = 0.0
    calls_handled: int = 0
    pools: list = field(default_factory=list)  # pools the agent currently sits in (while AVAILABLE)
    pools_gen: int = -1
    wrap_timer_version: int = 0

    @property
    def id(self) -> str:
        return self.profile.id

    @property
    def skills(self) -> Mapping[str, int]:
        return self.profile.skills

    def occupancy(self, now: float) -> float:
        staffed = self.staffed_seconds + (now - self.state_since if self.state in STAFFED else 0.0)
        busy = self.busy_seconds + (now - self.state_since if self.state in BUSY else 0.0)
        return busy / staffed if staffed > 0 else 0.0

    def transition(self, new: AgentState, now: float, reason: str | None = None,
                   call_id: str | None = None) -> AgentStateChanged:
        old = self.state
        if new not in ALLOWED[old]:
            raise IllegalTransition(self.id, old.value, new.value, _HINTS.get((old, new), ""))
        spent = max(0.0, now - self.state_since)
        if old in STAFFED:
            self.staffed_seconds += spent
        if old in BUSY:
            self.busy_seconds += spent
        if old is S.OFFLINE:
            self.logged_in_at = now
        self.state = new
        self.state_since = now
        self.reason = reason if new in (S.PAUSED, S.NOT_READY) else None
        if new is S.AVAILABLE:
            self.idle_since = now
        if new in (S.RESERVED, S.ON_CALL):
            self.call_id = call_id if call_id is not None else self.call_id
        elif new is not S.WRAP_UP:
            self.call_id = None
        if new is S.OFFLINE:
            self.logged_in_at = None
            self.pending_pause = None
        return AgentStateChanged(at=now, agent_id=self.id, old=old.value, new=new.value, reason=reason,
                                 call_id=call_id if call_id is not None else self.call_id)


Alternative = tuple[tuple[str, int], ...]   # sorted (skill, min_level) pairs, all needed


@dataclass(frozen=True, slots=True)
class Requirement:
    """Who may take a call: any one of ``alternatives`` (each a set of skills with minimum levels).

    One alternative is the plain case; routing steps that widen to other skills or queues add alternatives.
    Frozen and hashable so that pools of eligible agents can be shared by every call with the same need.
    """

    alternatives: tuple[Alternative, ...]

    @staticmethod
    def of(*skill_sets: Mapping[str, int]) -> "Requirement":
        alts = sorted({tuple(sorted(s.items())) for s in skill_sets})
        return Requirement(tuple(alts))

    def accepts(self, skills: Mapping[str, int]) -> bool:
        for alt in self.alternatives:
            for skill, level in alt:
                if skills.get(skill, 0) < level:
                    break
            else:
                return True
        return False

    def best_score(self, skills: Mapping[str, int]) -> int:
        """Sum of the agent's levels on the best alternative it satisfies (0 when none)."""
        best = 0
        for alt in self.alternatives:
            if all(skills.get(s, 0) >= lvl for s, lvl in alt):
                best = max(best, sum(skills.get(s, 0) for s, _ in alt))
        return best

    def skills(self) -> set[str]:
        return {s for alt in self.alternatives for s, _ in alt}
