"""Property tests of the campaign dialer: arbitrary interleavings of timers, call results, opt-outs,
pause/resume/stop and crash restarts (a new dialer from what was persisted) never break the rules a campaign
promises the bank's customers."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.campaign.dialer import CampaignDialer, CampaignFinished, Contact, ContactDone, PlaceCall, RetryScheduled
from ivr.campaign.rules import CallOutcome, CampaignRules, CampaignState, ContactState, Pacing, RetryRule, RetryRules
from ivr.flow.model import Schedule

TZ = "Europe/Rome"
# Monday 2025-03-24 08:50 Rome, ten minutes before the window opens; the spring DST change is 30 March.
START = datetime(2025, 3, 24, 8, 50, tzinfo=ZoneInfo(TZ)).timestamp()
DAYS = {0, 1, 2, 3, 4}           # mon-fri
RANGES = [(9 * 60, 12 * 60 + 30), (14 * 60, 18 * 60)]
HOLIDAYS = {"03-26"}             # a Wednesday off
WINDOW = Schedule(timezone=TZ, hours={"mon-fri": ["09:00-12:30", "14:00-18:00"]}, holidays=["03-26"])


def open_oracle(t: float) -> bool:
    """Independent reading of WINDOW: weekday, minute of day and holiday from the local wall clock."""
    local = datetime.fromtimestamp(t, ZoneInfo(TZ))
    if local.weekday() not in DAYS or f"{local.month:02d}-{local.day:02d}" in HOLIDAYS:
        return False
    minute = local.hour * 60 + local.minute
    return any(a <= minute < b for a, b in RANGES)


outcomes = st.sampled_from(list(CallOutcome))
rules_st = st.builds(
    lambda conc, cpm, na, nad, busy, bd, fail, fd: CampaignRules(
        window=WINDOW, pacing=Pacing(max_concurrent=conc, calls_per_minute=cpm),
        retries=RetryRules(no_answer=RetryRule(max_attempts=na, delay_seconds=nad),
                           busy=RetryRule(max_attempts=busy, delay_seconds=bd),
                           failed=RetryRule(max_attempts=fail, delay_seconds=fd))),
    st.integers(1, 5), st.integers(1, 8), st.integers(1, 4), st.sampled_from([0.0, 30.0, 600.0, 7200.0]),
    st.integers(1, 4), st.sampled_from([0.0, 45.0, 900.0]), st.integers(1, 3), st.sampled_from([0.0, 3600.0]))

step_st = st.one_of(
    st.tuples(st.just("timer"), st.floats(0, 1)),           # run at the dialer's timer (or a bit after)
    st.tuples(st.just("tick"), st.floats(0, 90)),           # the shell wakes up early/late for other reasons
    st.tuples(st.just("result"), st.tuples(st.integers(0, 1000), outcomes, st.floats(0, 120))),
    st.tuples(st.just("answer"), st.integers(0, 1000)),
    st.tuples(st.just("optout"), st.integers(0, 1000)),
    st.tuples(st.just("notplaced"), st.tuples(st.integers(0, 1000), st.booleans())),
    st.tuples(st.just("pause"), st.none()),
    st.tuples(st.just("resume"), st.none()),
    st.tuples(st.just("stop"), st.none()),
    st.tuples(st.just("restart"), st.none()),
)


def restarted(d: CampaignDialer, chk: "Checker", now: float) -> CampaignDialer:
    """What a new process loads after a crash: contacts as persisted, calls in flight settled the way
    ``campaign_store.recover`` does (never dialled again), the last minute's starts."""
    contacts = []
    for c in d.contacts.values():
        state, outcome = c.state, c.last_outcome
        if c.id in d.in_flight:
            state = ContactState.ANSWERED if c.state is ContactState.ANSWERED else ContactState.FAILED
            outcome = CallOutcome.HUNG_UP if state is ContactState.ANSWERED else CallOutcome.INTERRUPTED
            chk.done.add(c.id)
            chk.inflight.discard(c.id)
        contacts.append(Contact(c.id, state, c.attempts, c.next_attempt_at, outcome))
    state = d.state if d.state is not CampaignState.FINISHED else CampaignState.FINISHED
    return CampaignDialer(d.rules, contacts, state=state, recent_starts=[t for t in chk.starts if t > now - 60.0])


class Checker:
    """Replays the dialer's actions against the rules, with its own bookkeeping."""

    def __init__(self, rules: CampaignRules):
        self.rules = rules
        self.running = True
        self.inflight: set[int] = set()
        self.opted_out: set[int] = set()
        self.starts: list[float] = []
        self.attempts: dict[int, int] = defaultdict(int)
        self.done: set[int] = set()
        self.finished = 0

    def apply(self, acts, now: float) -> None:
        pacing = self.rules.pacing
        for a in acts:
            if isinstance(a, PlaceCall):
                assert self.running, "call placed while the campaign was not running"
                assert open_oracle(now), f"call placed outside the window at {datetime.fromtimestamp(now)}"
                assert a.contact_id not in self.inflight, "two calls at once to one contact"
                assert a.contact_id not in self.opted_out, "an opted-out customer was called"
                assert a.contact_id not in self.done, "a finished contact was called again"
                self.inflight.add(a.contact_id)
                assert len(self.inflight) <= pacing.max_concurrent
                self.starts.append(now)
                in_minute = sum(1 for t in self.starts if now - 60.0 < t <= now)
                assert in_minute <= pacing.calls_per_minute, "pace above calls_per_minute"
                self.attempts[a.contact_id] += 1
                assert a.attempt == self.attempts[a.contact_id]
                assert self.attempts[a.contact_id] <= self.rules.retries.max_attempts
            elif isinstance(a, RetryScheduled):
                rule = self.rules.retries.rule_for(a.outcome)
                assert rule is not None and a.attempts < rule.max_attempts
                assert a.contact_id not in self.opted_out
                assert a.at >= now
            elif isinstance(a, ContactDone):
                assert a.contact_id not in self.done
                self.done.add(a.contact_id)
                self.inflight.discard(a.contact_id)
            elif isinstance(a, CampaignFinished):
                self.finished += 1
                assert self.finished == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules_st, n=st.integers(1, 12), pre_opted=st.sets(st.integers(0, 11), max_size=4),
       steps=st.lists(step_st, max_size=120))
def test_dialer_never_breaks_the_campaign_rules(rules, n, pre_opted, steps):
    contacts = [Contact(i, ContactState.OPTED_OUT if i in pre_opted else ContactState.PENDING) for i in range(n)]
    d = CampaignDialer(rules, contacts)
    chk = Checker(rules)
    chk.opted_out |= {i for i in pre_opted if i < n}
    chk.done |= chk.opted_out
    now = START
    chk.apply(d.handle_timer(now), now)
    for kind, arg in steps:
        if kind == "timer":
            t = d.get_timer()
            if t is None:
                continue
            assert t >= now
            now = t + arg
            acts = d.handle_timer(now)
        elif kind == "tick":
            now += arg
            acts = d.handle_timer(now)
        elif kind in ("result", "answer", "notplaced"):
            if not d.in_flight:
                continue
            ids = sorted(d.in_flight)
            if kind == "result":
                idx, outcome, dt = arg
                now += dt
                cid = ids[idx % len(ids)]
                acts = d.call_result(cid, outcome, now)
                chk.inflight.discard(cid)
            elif kind == "answer":
                acts = d.call_answered(ids[arg % len(ids)], now)
            else:
                idx, opted = arg
                cid = ids[idx % len(ids)]
                acts = d.call_not_placed(cid, now, opted_out=opted)
                chk.inflight.discard(cid)
                chk.attempts[cid] -= 1
                if opted:
                    chk.opted_out.add(cid)
        elif kind == "optout":
            cid = arg % n
            chk.opted_out.add(cid)
            acts = d.opt_out(cid, now)
        elif kind == "pause":
            acts = d.pause(now)
            chk.running = d.state is CampaignState.RUNNING
        elif kind == "resume":
            acts = d.resume(now)
            chk.running = d.state is CampaignState.RUNNING
        elif kind == "restart":
            d = restarted(d, chk, now)
            chk.finished = int(d.state is CampaignState.FINISHED)
            acts = d.handle_timer(now)
        else:
            acts = d.stop(now)
            chk.running = False
        chk.apply(acts, now)
        chk.running = d.state is CampaignState.RUNNING
        for c in d.contacts.values():
            assert c.attempts <= rules.retries.max_attempts
            assert (c.state in (ContactState.DIALING, ContactState.ANSWERED)) == (c.id in d.in_flight) or \
                c.state is ContactState.ANSWERED
        assert len(d.in_flight) <= rules.pacing.max_concurrent


@settings(max_examples=150, deadline=None)
@given(rules=rules_st, n=st.integers(1, 15), results=st.lists(outcomes, min_size=1, max_size=60))
def test_a_campaign_driven_to_the_end_finishes_with_every_contact_final(rules, n, results):
    """Liveness: answering every call (outcomes drawn in turn) and following the timer, the campaign ends and
    every contact ends in a final state matching its last outcome."""
    d = CampaignDialer(rules, [Contact(i) for i in range(n)])
    chk = Checker(rules)
    now = START
    chk.apply(d.handle_timer(now), now)
    k = 0
    for _ in range(2000):
        if d.state is CampaignState.FINISHED:
            break
        if d.in_flight:
            cid = min(d.in_flight)
            now += 30.0
            acts = d.call_result(cid, results[k % len(results)], now)
            chk.inflight.discard(cid)
            k += 1
        else:
            t = d.get_timer()
            assert t is not None, "pending contacts but no timer"
            now = t
            acts = d.handle_timer(now)
        chk.apply(acts, now)
    assert d.state is CampaignState.FINISHED and chk.finished == 1
    for c in d.contacts.values():
        assert c.state.final
        if c.last_outcome is not None and c.last_outcome.answered:
            assert c.state in (ContactState.COMPLETED, ContactState.OPTED_OUT, ContactState.ANSWERED)
        rule = rules.retries.rule_for(c.last_outcome) if c.last_outcome else None
        if rule is not None:        # ended on a retryable outcome: only because its rule allowed no more
            assert c.attempts >= rule.max_attempts
