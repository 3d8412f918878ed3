"""``CampaignDialer``: the sans-IO decisions of one outbound campaign.

It takes events (the timer fired, a call was answered or ended, a customer opted out, pause/resume/stop) with
the current time and returns actions (``PlaceCall``, ``RetryScheduled``, ``ContactDone``, ``CampaignFinished``);
``get_timer()`` says when it next wants ``handle_timer``. It never reads a clock, a socket or a database, so the
rules below are checked by property tests over arbitrary event orders:

- a call starts only while the campaign is running and the calling window is open;
- at most ``pacing.max_concurrent`` calls in flight, at most ``pacing.calls_per_minute`` starts in any 60 s;
- one call at a time per contact, and never a call to a contact marked opted out;
- attempts per contact never exceed what the retry rule of its last outcome allows.

The shell must persist each ``PlaceCall`` (contact ``dialing``, attempt counted) *before* sending the INVITE;
see ``ivr.campaign.service``.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ivr.errors import IvrError

from .rules import CallOutcome, CampaignRules, CampaignState, ContactState
from .window import is_open, next_open

RATE_WINDOW = 60.0


class DialerError(IvrError):
    """An event the dialer cannot apply (unknown contact, a result for a call it did not place)."""


@dataclass(slots=True)
class Contact:
    id: int
    state: ContactState = ContactState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_outcome: CallOutcome | None = None


@dataclass(frozen=True, slots=True)
class PlaceCall:
    contact_id: int
    attempt: int


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    contact_id: int
    outcome: CallOutcome
    attempts: int
    at: float


@dataclass(frozen=True, slots=True)
class ContactDone:
    contact_id: int
    state: ContactState
    outcome: CallOutcome | None
    attempts: int


@dataclass(frozen=True, slots=True)
class CampaignFinished:
    pass


Action = PlaceCall | RetryScheduled | ContactDone | CampaignFinished

_FINAL_OF = {CallOutcome.COMPLETED: ContactState.COMPLETED, CallOutcome.OPTED_OUT: ContactState.OPTED_OUT,
             CallOutcome.HUNG_UP: ContactState.ANSWERED, CallOutcome.NO_ANSWER: ContactState.NO_ANSWER,
             CallOutcome.BUSY: ContactState.BUSY, CallOutcome.FAILED: ContactState.FAILED,
             CallOutcome.INTERRUPTED: ContactState.FAILED}


class CampaignDialer:
    """``CampaignDialer(rules, contacts, state=RUNNING, recent_starts=())``.

    ``contacts``: every contact of the campaign as loaded from storage (``answered`` is final there); ``dialing``
    ones must have been settled first (a restart never leaves a call in flight). ``recent_starts``: start times of attempts
    made in the last minute by a previous run, so a restart does not exceed the per-minute pace.
    """

    def __init__(self, rules: CampaignRules, contacts: Iterable[Contact] = (), *,
                 state: CampaignState = CampaignState.RUNNING, recent_starts: Iterable[float] = ()):
        self.rules = rules
        self.state = state
        self.contacts: dict[int, Contact] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        self._inflight: set[int] = set()
        self._opted_out: set[int] = set()
        self._starts: deque[float] = deque(sorted(recent_starts))
        self._pending = 0
        self._timer: float | None = None
        self._finished_sent = state is CampaignState.FINISHED
        for c in contacts:
            self.add_contact(c)

    # ------------------------------------------------------------------ queries

    @property
    def in_flight(self) -> frozenset[int]:
        return frozenset(self._inflight)

    @property
    def pending(self) -> int:
        return self._pending

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run (the epoch seconds the shell arms), or None: nothing to do until
        another event (a call ends, resume, ...)."""
        return self._timer

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in ContactState}
        for c in self.contacts.values():
            out[c.state.value] += 1
        return out

    # ------------------------------------------------------------------ events

    def add_contact(self, contact: Contact) -> None:
        if contact.id in self.contacts:
            raise DialerError(f"contact {contact.id} is already in the campaign")
        if contact.state is ContactState.DIALING:
            raise DialerError(f"contact {contact.id} is dialing: settle calls left in flight by a previous run "
                              "(CampaignStore.recover) before loading the campaign")
        self.contacts[contact.id] = contact
        if contact.state is ContactState.PENDING:
            self._pending += 1
            self._push(contact)

    def handle_timer(self, now: float) -> list[Action]:
        return self._advance(now)

    def call_answered(self, contact_id: int, now: float) -> list[Action]:
        c = self._inflight_contact(contact_id)
        if c.state is ContactState.DIALING:
            c.state = ContactState.ANSWERED
        return []

    def call_result(self, contact_id: int, outcome: CallOutcome, now: float) -> list[Action]:
        """The attempt in flight for ``contact_id`` ended with ``outcome``; frees its slot."""
        c = self._inflight_contact(contact_id)
        self._inflight.discard(contact_id)
        c.last_outcome = outcome
        acts: list[Action] = []
        rule = self.rules.retries.rule_for(outcome)
        if contact_id in self._opted_out and outcome is not CallOutcome.COMPLETED:
            c.state = ContactState.OPTED_OUT
            acts.append(ContactDone(c.id, c.state, outcome, c.attempts))
        elif rule is not None and c.attempts < rule.max_attempts and \
                self.state in (CampaignState.RUNNING, CampaignState.PAUSED):
            c.state = ContactState.PENDING
            c.next_attempt_at = now + rule.delay_seconds
            self._pending += 1
            self._push(c)
            acts.append(RetryScheduled(c.id, outcome, c.attempts, c.next_attempt_at))
        else:
            c.state = ContactState.SKIPPED if rule is not None and self.state is CampaignState.STOPPED and \
                c.attempts < rule.max_attempts else _FINAL_OF[outcome]
            acts.append(ContactDone(c.id, c.state, outcome, c.attempts))
        return acts + self._advance(now)

    def call_not_placed(self, contact_id: int, now: float, *, opted_out: bool = False,
                        retry_after: float = 60.0) -> list[Action]:
        """The shell could not start the attempt it was asked for (the customer opted out meanwhile, or storage
        refused it): the attempt does not count."""
        c = self._inflight_contact(contact_id)
        self._inflight.discard(contact_id)
        c.attempts -= 1
        acts: list[Action] = []
        if opted_out or contact_id in self._opted_out:
            c.state = ContactState.OPTED_OUT
            acts.append(ContactDone(c.id, c.state, None, c.attempts))
        elif self.state is CampaignState.STOPPED:
            c.state = ContactState.SKIPPED
            acts.append(ContactDone(c.id, c.state, None, c.attempts))
        else:
            c.state = ContactState.PENDING
            c.next_attempt_at = now + retry_after
            self._pending += 1
            self._push(c)
        return acts + self._advance(now)

    def opt_out(self, contact_id: int, now: float) -> list[Action]:
        """Never call this contact again; a call in flight ends normally and is not retried."""
        c = self.contacts.get(contact_id)
        if c is None:
            raise DialerError(f"contact {contact_id} is not in this campaign")
        self._opted_out.add(contact_id)
        if c.state is ContactState.PENDING:
            self._pending -= 1
            c.state = ContactState.OPTED_OUT
            return [ContactDone(c.id, c.state, c.last_outcome, c.attempts)] + self._advance(now)
        return []

    def pause(self, now: float) -> list[Action]:
        if self.state in (CampaignState.RUNNING, CampaignState.DRAFT):
            self.state = CampaignState.PAUSED
        return self._advance(now)

    def resume(self, now: float) -> list[Action]:
        if self.state in (CampaignState.PAUSED, CampaignState.DRAFT):
            self.state = CampaignState.RUNNING
        return self._advance(now)

    def stop(self, now: float) -> list[Action]:
        """No call is started any more; contacts not reached are ``skipped``; calls in flight end normally."""
        if self.state in (CampaignState.STOPPED, CampaignState.FINISHED):
            return []
        self.state = CampaignState.STOPPED
        acts: list[Action] = []
        for c in self.contacts.values():
            if c.state is ContactState.PENDING:
                c.state = ContactState.SKIPPED
                acts.append(ContactDone(c.id, c.state, c.last_outcome, c.attempts))
        self._pending = 0
        self._heap.clear()
        return acts + self._advance(now)

    # ------------------------------------------------------------------ internals

    def _inflight_contact(self, contact_id: int) -> Contact:
        if contact_id not in self._inflight:
            raise DialerError(f"contact {contact_id} has no call in flight")
        return self.contacts[contact_id]

    def _push(self, c: Contact) -> None:
        heapq.heappush(self._heap, (c.next_attempt_at, next(self._seq), c.id))

    def _peek_ready_at(self) -> float | None:
        while self._heap:
            at, _, cid = self._heap[0]
            c = self.contacts[cid]
            if c.state is ContactState.PENDING and c.next_attempt_at == at:
                return at
            heapq.heappop(self._heap)
        return None

    def _prune(self, now: float) -> None:
        while self._starts and self._starts[0] + RATE_WINDOW <= now:
            self._starts.popleft()

    def _rate_free_at(self) -> float:
        cpm = self.rules.pacing.calls_per_minute
        if len(self._starts) < cpm:
            return float("-inf")
        return self._starts[-cpm] + RATE_WINDOW

    def _advance(self, now: float) -> list[Action]:
        acts: list[Action] = []
        self._prune(now)
        pacing = self.rules.pacing
        if self.state is CampaignState.RUNNING and is_open(self.rules.window, now):
            while len(self._inflight) < pacing.max_concurrent and len(self._starts) < pacing.calls_per_minute:
                at = self._peek_ready_at()
                if at is None or at > now:
                    break
                _, _, cid = heapq.heappop(self._heap)
                c = self.contacts[cid]
                c.state = ContactState.DIALING
                c.attempts += 1
                self._pending -= 1
                self._inflight.add(cid)
                self._starts.append(now)
                acts.append(PlaceCall(cid, c.attempts))
        if self.state is CampaignState.RUNNING and not self._pending and not self._inflight:
            self.state = CampaignState.FINISHED
        if self.state is CampaignState.FINISHED and not self._finished_sent:
            self._finished_sent = True
            acts.append(CampaignFinished())
        self._schedule(now)
        return acts

    def _schedule(self, now: float) -> None:
        self._timer = None
        if self.state is not CampaignState.RUNNING or len(self._inflight) >= self.rules.pacing.max_concurrent:
            return
        ready = self._peek_ready_at()
        if ready is None:
            return
        t = max(now, ready, self._rate_free_at())
        opens = next_open(self.rules.window, t)
        if opens is None:
            return
        self._timer = opens
