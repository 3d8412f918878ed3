"""Drive a FlowRun step by step and check the protocol on every step (one awaiting action or a terminal)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from ivr.flow import (CallContext, CollectDigits, EnrollVoice, Finished, FlowRun, IvrConfig, LookupCaller, Play,
                      VerifyPin, VerifyVoice, load_ivr_config)
from ivr.flow.actions import Hangup, Queue, Transfer
from tests.conftest import REPO

DEMO_DIR = REPO / "config" / "ivr"
DEMO_QUEUES = ["retail_accounts", "cards", "cards_lost_stolen", "online_banking", "trading", "general",
               "business_accounts", "business_cards", "business_online_banking", "english_desk"]
DEMO_SKILLS = ["accounts", "cards", "fraud", "online_banking", "trading", "business", "general", "language_it",
               "language_en"]
ROME = ZoneInfo("Europe/Rome")
AWAITING = (Play, CollectDigits, LookupCaller, VerifyPin, VerifyVoice, EnrollVoice)


def rome(*args: int) -> float:
    return datetime(*args, tzinfo=ROME).timestamp()


MONDAY_10 = rome(2026, 11, 23, 10, 0)      # a Monday in office hours
SUNDAY_10 = rome(2026, 11, 22, 10, 0)


def demo_config() -> IvrConfig:
    return load_ivr_config(DEMO_DIR, DEMO_QUEUES, DEMO_SKILLS)


def write_config(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


class Driver:
    def __init__(self, config: IvrConfig, ani: str | None = "+393331234567", dnis: str = "800100",
                 now: float = MONDAY_10, language: str | None = None):
        self.now = now
        ctx = CallContext(call_id="c1", ani_e164=ani, ani_raw=ani, dnis=dnis, language=language)
        self.run = FlowRun(config, ctx, now)
        self.last: list = self._check(self.run.start(now))
        self.plays: list[Play] = [a for a in self.last if isinstance(a, Play)]

    def _check(self, actions: list) -> list:
        assert actions, "every step must return at least one action"
        if isinstance(actions[-1], Finished):
            assert len(actions) == 2 and isinstance(actions[0], (Queue, Transfer, Hangup)) or \
                (len(actions) == 1), actions
        else:
            assert len(actions) == 1 and isinstance(actions[0], AWAITING), actions
        return actions

    @property
    def action(self):
        return self.last[-1]

    def send(self, event, dt: float = 1.0):
        self.now += dt
        self.last = self._check(self.run.handle(event, self.now))
        self.plays.extend(a for a in self.last if isinstance(a, Play))
        return self.last

    def texts(self, action=None) -> list[str]:
        a = action or self.action
        assert isinstance(a, Play), a
        return [p.text for p in a.prompts]
