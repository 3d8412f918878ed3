"""What a campaign is allowed to do: calling window, pacing, retry rules, and the states of campaigns,
contacts and call attempts. Pydantic models so the admin API, the CLI and the database share one validation."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ivr.flow.model import Schedule


class CampaignState(str, enum.Enum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    FINISHED = "finished"


class ContactState(str, enum.Enum):
    PENDING = "pending"          # waiting for its first attempt or a retry (``next_attempt_at``)
    DIALING = "dialing"          # attempt committed, INVITE sent, not answered yet
    ANSWERED = "answered"        # answered; the survey is running, or the customer hung up before the end
    COMPLETED = "completed"      # every question answered
    NO_ANSWER = "no_answer"      # the last allowed attempt was not answered
    BUSY = "busy"
    FAILED = "failed"            # the last allowed attempt failed, or the server died while it rang
    OPTED_OUT = "opted_out"      # never called (again): consent withdrawn, or opted out in a survey
    SKIPPED = "skipped"          # the campaign was stopped before the contact was reached

    @property
    def final(self) -> bool:
        return self not in (ContactState.PENDING, ContactState.DIALING)


class CallOutcome(str, enum.Enum):
    """How one attempt ended."""

    COMPLETED = "completed"      # answered, survey completed
    OPTED_OUT = "opted_out"      # answered, the customer asked not to be called
    HUNG_UP = "hung_up"          # answered, ended before the survey's end
    NO_ANSWER = "no_answer"      # 408/480/487, or our ring timeout
    BUSY = "busy"                # 486/600
    FAILED = "failed"            # any other failure
    INTERRUPTED = "interrupted"  # the server stopped (crash) while the attempt was in progress

    @property
    def answered(self) -> bool:
        return self in (CallOutcome.COMPLETED, CallOutcome.OPTED_OUT, CallOutcome.HUNG_UP)


def outcome_of_sip_status(status: int) -> CallOutcome:
    """The outcome of an INVITE that failed with ``status`` (the same mapping the agent phones use)."""
    if status in (486, 600):
        return CallOutcome.BUSY
    if status in (408, 480, 487):
        return CallOutcome.NO_ANSWER
    return CallOutcome.FAILED


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pacing(_Strict):
    max_concurrent: int = Field(2, ge=1, le=500, description="calls ringing or in progress at once")
    calls_per_minute: int = Field(10, ge=1, le=6000, description="new calls started in any 60 s")
    ring_timeout: float = Field(25.0, ge=5.0, le=120.0, description="seconds before an unanswered call is "
                                                                    "cancelled (no answer)")


class RetryRule(_Strict):
    max_attempts: int = Field(3, ge=1, le=20, description="attempts in all, the first one included")
    delay_seconds: float = Field(3600.0, ge=0.0, le=30 * 86400, description="wait before the next attempt")


class RetryRules(_Strict):
    no_answer: RetryRule = RetryRule()
    busy: RetryRule = RetryRule(max_attempts=3, delay_seconds=900.0)
    failed: RetryRule = RetryRule(max_attempts=2, delay_seconds=3600.0)

    def rule_for(self, outcome: CallOutcome) -> RetryRule | None:
        """The rule that decides a retry after ``outcome``; None for outcomes that end the contact."""
        if outcome is CallOutcome.NO_ANSWER:
            return self.no_answer
        if outcome is CallOutcome.BUSY:
            return self.busy
        if outcome is CallOutcome.FAILED:
            return self.failed
        return None

    @property
    def max_attempts(self) -> int:
        return max(self.no_answer.max_attempts, self.busy.max_attempts, self.failed.max_attempts)


DEFAULT_WINDOW = Schedule(timezone="Europe/Rome", hours={"mon-fri": "09:00-20:00", "sat": "09:00-13:00"},
                          holidays=["01-01", "12-25", "12-26", "easter_monday"])


class CampaignRules(_Strict):
    """Window, pacing and retries of one campaign (stored as JSON on the campaign row)."""

    window: Schedule = DEFAULT_WINDOW
    pacing: Pacing = Pacing()
    retries: RetryRules = RetryRules()

    @model_validator(mode="after")
    def _window_has_hours(self) -> "CampaignRules":
        if not self.window.hours:
            raise ValueError("window.hours is empty: give at least one day, e.g. {\"mon-fri\": \"09:00-20:00\"}")
        return self
