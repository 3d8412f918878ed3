"""``CampaignService``: the asyncio shell that runs outbound survey campaigns inside the server.

One ``CampaignDialer`` per running campaign decides; this shell keeps its timer armed, commits every attempt
before its INVITE (``campaign_store.begin_attempt``), places the call through the outbound trunk with
``CallManager.originate``, runs the survey on the answered call, records each answer as it is given, maps SIP
failures to outcomes and persists what the dialer decided. All writes go through one ordered queue, so a retry
can never overtake the write that scheduled it.

The database is the source of truth for control: the admin API and the CLI change a campaign's state there;
the service applies it at once when told (``campaign_store.notify_changed``, same process) or at its next poll
(``poll_seconds``), which also picks up new opt-outs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter

from crm_bridge import campaign_store as store
from crm_bridge import metrics
from ivr.calls import Call, CallerHungUp, OriginateFailed
from ivr.sip.identity import CallerIdentity, IdentitySource

from .dialer import Action, CampaignDialer, CampaignFinished, ContactDone, DialerError, PlaceCall, RetryScheduled
from .rules import CallOutcome, CampaignState, ContactState, outcome_of_sip_status
from .trunk import OutboundRouter

log = logging.getLogger(__name__)

CAMPAIGN_CALLS = Counter("contact_campaign_calls", "Outbound campaign calls ended, by outcome", ["outcome"],
                         registry=metrics.REGISTRY)


class SurveyRunner(Protocol):
    """``ivr.survey.runner.run_survey``."""

    async def __call__(self, call: Call, script: Any, prompts: Any, *, language: str = "it",
                       on_answer: Any = None) -> Any: ...


class SurveyRecorder(Protocol):
    """Where an outbound survey's answers go (``ivr.campaign.survey_link`` adapts the survey store)."""

    async def begin(self, *, campaign_id: int, survey: str, customer_id: int | None, phone: str,
                    call_id: str) -> int | None: ...

    async def answer(self, response_id: int | None, question_id: str, digit: str, value: Any) -> None: ...

    async def end(self, response_id: int | None, outcome: Any) -> None: ...


@dataclass
class _Run:
    id: int
    name: str
    survey: str
    language: str
    dialer: CampaignDialer
    phones: dict[int, tuple[str, int | None, str | None]]
    ring_timeout: float
    timer: asyncio.TimerHandle | None = None
    tasks: dict[int, asyncio.Task] = field(default_factory=dict)
    finishing: dict[int, int | None] = field(default_factory=dict)
    """contacts whose call just ended -> SIP status, until the dialer's decision about them is persisted"""


class CampaignService:
    """``CampaignService(db, manager, router, prompts=..., scripts=..., run_survey=..., recorder=...)``;
    ``await start()`` settles what a previous run left in flight and loads running campaigns; ``await
    stop(grace)`` stops dialling, lets calls in progress finish for ``grace`` seconds, hangs up the rest and
    flushes their results. ``scripts(name)`` returns the survey script (raises KeyError when unknown)."""

    def __init__(self, db: Any, manager: Any, router: OutboundRouter, *, prompts: Any,
                 scripts: Callable[[str], Any], run_survey: SurveyRunner | None, recorder: SurveyRecorder | None,
                 from_host: str = "127.0.0.1", caller_id: str = "survey", clock: Callable[[], float] = time.time,
                 poll_seconds: float = 5.0):
        self.db = db
        self.manager = manager
        self.router = router
        self.prompts = prompts
        self.scripts = scripts
        self.run_survey = run_survey
        self.recorder = recorder
        self.from_host = from_host
        self.caller_id = caller_id
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.runs: dict[int, _Run] = {}
        self._writes: asyncio.Queue = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None
        self._refreshing: asyncio.Lock = asyncio.Lock()
        self._refresh_soon = asyncio.Event()
        self._stopping = False
        self._script_errors: set[int] = set()
        self.stats = {"placed": 0, "answered": 0, "not_placed": 0}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write_loop(), name="campaign writer")
        now = self.clock()
        for cid in await self.db.read(store.campaigns_with_dialing):
            settled = await self.db.run(lambda s, cid=cid: store.recover(s, cid, now=now))
            log.warning("campaign %s: %d call(s) in progress when the server stopped are not dialled again",
                        cid, len(settled))
        store.subscribe(self._changed)
        await self.refresh()
        self._poller = loop.create_task(self._poll_loop(), name="campaign poller")

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        store.unsubscribe(self._changed)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(BaseException):
                await self._poller
        for run in self.runs.values():
            if run.timer is not None:
                run.timer.cancel()
                run.timer = None
        tasks = [t for run in self.runs.values() for t in run.tasks.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._writes.join()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(BaseException):
                await self._writer

    def _changed(self, campaign_id: int) -> None:
        self._refresh_soon.set()

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._refresh_soon.wait(), self.poll_seconds)
            self._refresh_soon.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("campaigns: refresh from the database failed; retrying at the next poll")

    async def refresh(self) -> None:
        """Follow the database: new running campaigns, pause/resume/stop, new opt-outs."""
        async with self._refreshing:
            states = await self.db.read(store.campaign_states)
            for cid, state in states.items():
                if self._stopping:
                    return
                run = self.runs.get(cid)
                if run is None:
                    if state in (CampaignState.RUNNING, CampaignState.PAUSED):
                        await self._load(cid)
                    continue
                d = run.dialer
                if state is CampaignState.PAUSED and d.state is CampaignState.RUNNING:
                    self._drive(run, d.pause)
                elif state is CampaignState.RUNNING and d.state is CampaignState.PAUSED:
                    self._drive(run, d.resume)
                elif state is CampaignState.STOPPED and d.state is not CampaignState.STOPPED:
                    self._drive(run, d.stop)
                if d.pending:
                    for contact_id in await self.db.read(lambda s, cid=cid: store.opted_out_pending(s, cid)):
                        self._drive(run, lambda now, c=contact_id: d.opt_out(c, now))
            for cid in [c for c, r in self.runs.items() if r.dialer.state in
                        (CampaignState.STOPPED, CampaignState.FINISHED) and not r.tasks]:
                run = self.runs.pop(cid)
                if run.timer is not None:
                    run.timer.cancel()

    async def _load(self, cid: int) -> None:
        loaded = await self.db.read(lambda s: store.load_campaign(s, cid, now=self.clock()))
        try:
            self.scripts(loaded.survey)
        except Exception as exc:
            if cid not in self._script_errors:
                log.error("campaign %s (%s): survey script %r cannot be loaded (%s); the campaign waits until it "
                          "can", cid, loaded.name, loaded.survey, exc)
            self._script_errors.add(cid)
            return
        self._script_errors.discard(cid)
        dialer = CampaignDialer(loaded.rules, loaded.contacts, state=loaded.state,
                                recent_starts=loaded.recent_starts)
        run = _Run(cid, loaded.name, loaded.survey, loaded.language, dialer, loaded.phones,
                   loaded.rules.pacing.ring_timeout)
        self.runs[cid] = run
        log.info("campaign %s (%s) loaded: %s", cid, loaded.name, dialer.counts())
        self._drive(run, dialer.handle_timer)

    # ------------------------------------------------------------------ the dialer

    def _drive(self, run: _Run, fn: Callable[[float], list[Action]]) -> None:
        try:
            acts = fn(self.clock())
        except DialerError:
            log.exception("campaign %s: dialer refused an event", run.id)
            acts = []
        self._apply(run, acts)
        self._arm(run)

    def _arm(self, run: _Run) -> None:
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        deadline = run.dialer.get_timer()
        if deadline is None or self._stopping:
            return
        delay = max(0.0, deadline - self.clock())
        run.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, run)

    def _on_timer(self, run: _Run) -> None:
        run.timer = None
        if self._stopping or self.runs.get(run.id) is not run:
            return
        self._drive(run, run.dialer.handle_timer)

    def _apply(self, run: _Run, acts: list[Action]) -> None:
        loop = asyncio.get_running_loop()
        for a in acts:
            if isinstance(a, PlaceCall):
                if self._stopping:
                    continue        # only in memory: nothing was committed, the next start decides again
                run.tasks[a.contact_id] = loop.create_task(self._dial(run, a), name=f"campaign {run.id} "
                                                                                    f"contact {a.contact_id}")
            elif isinstance(a, RetryScheduled):
                status = run.finishing.pop(a.contact_id, None)
                self._submit(lambda s, a=a, st=status: store.finish_attempt(
                    s, a.contact_id, outcome=a.outcome, state=ContactState.PENDING, next_attempt_at=a.at,
                    sip_status=st, now=self.clock()))
            elif isinstance(a, ContactDone):
                if a.contact_id in run.finishing and a.outcome is not None:
                    status = run.finishing.pop(a.contact_id)
                    self._submit(lambda s, a=a, st=status: store.finish_attempt(
                        s, a.contact_id, outcome=a.outcome, state=a.state, next_attempt_at=None, sip_status=st,
                        now=self.clock()))
                else:
                    self._submit(lambda s, a=a: store.set_contact_state(s, a.contact_id, a.state, now=self.clock()))
            elif isinstance(a, CampaignFinished):
                log.info("campaign %s (%s) finished: %s", run.id, run.name, run.dialer.counts())
                self._submit(lambda s: store.mark_finished(s, run.id, now=self.clock()))

    # ------------------------------------------------------------------ writes, in order

    def _submit(self, fn: Callable[[Any], Any]) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._writes.put_nowait((fn, fut))
        return fut

    async def _write_loop(self) -> None:
        while True:
            fn, fut = await self._writes.get()
            try:
                result = await self.db.run(fn)
            except Exception as exc:
                log.exception("campaign write failed")
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(result)
            finally:
                self._writes.task_done()

    # ------------------------------------------------------------------ one call

    async def _dial(self, run: _Run, pc: PlaceCall) -> None:
        cid = pc.contact_id
        phone, customer_id, language = run.phones[cid]
        key = f"campaign-{run.id}-{cid}-{pc.attempt}"
        try:
            verdict = await self._submit(lambda s: store.begin_attempt(s, cid, pc.attempt, key, now=self.clock()))
        except asyncio.CancelledError:
            verdict = "stopping"
        except Exception:
            verdict = "error"
        if verdict != "ok":
            self.stats["not_placed"] += 1
            log.info("campaign %s: contact %s not called (%s)", run.id, cid, verdict)
            run.tasks.pop(cid, None)
            self._drive(run, lambda now: run.dialer.call_not_placed(cid, now, opted_out=verdict == "opted_out"))
            if verdict == "refused":
                self._refresh_soon.set()        # the database disagrees (paused from the CLI?): re-read it
            return
        self.stats["placed"] += 1
        outcome, status, leg = CallOutcome.FAILED, None, None
        try:
            uri, dest = self.router.route(phone)
            port = getattr(self.manager.sip, "bound_port", None)
            host = f"{self.from_host}:{port}" if port else self.from_host
            leg = await self.manager.originate(uri, f"sip:{self.caller_id}@{host}", destination=dest,
                                               ring_timeout=run.ring_timeout,
                                               headers=[("X-Campaign-Attempt", key)])
        except OriginateFailed as exc:
            outcome, status = outcome_of_sip_status(exc.status), exc.status
            log.info("campaign %s: %s did not answer: %s %s", run.id, phone, exc.status, exc.reason)
        except asyncio.CancelledError:
            outcome, status = CallOutcome.NO_ANSWER, 487        # server stopping while it rang
        except Exception:
            log.exception("campaign %s: call to %s could not be placed", run.id, phone)
        else:
            status = 200
            self.stats["answered"] += 1
            self._drive(run, lambda now: run.dialer.call_answered(cid, now))
            self._submit(lambda s: store.mark_answered(s, cid, now=self.clock()))
            outcome = await self._survey(run, cid, key, leg, phone, customer_id, language)
        finally:
            if leg is not None:
                leg.hangup()
            run.tasks.pop(cid, None)
            CAMPAIGN_CALLS.labels(outcome=outcome.value).inc()
            run.finishing[cid] = status
            self._drive(run, lambda now: run.dialer.call_result(cid, outcome, now))

    async def _survey(self, run: _Run, cid: int, key: str, leg: Any, phone: str, customer_id: int | None,
                      language: str | None) -> CallOutcome:
        call = Call(id=key, leg=leg, identity=CallerIdentity(phone, phone, self.caller_id, None,
                                                             IdentitySource.NONE, False),
                    source=("0.0.0.0", 0))
        call.variables.update({"campaign_id": run.id, "contact_id": cid, "customer_id": customer_id})
        response_id: int | None = None
        result: Any = None
        try:
            if self.run_survey is None:
                raise RuntimeError("no survey runner is installed (ivr.survey)")
            script = self.scripts(run.survey)
            if self.recorder is not None:
                response_id = await self.recorder.begin(campaign_id=run.id, survey=run.survey,
                                                        customer_id=customer_id, phone=phone, call_id=key)
                if response_id is not None:
                    self._submit(lambda s: store.link_response(s, cid, response_id))

            async def on_answer(question_id: str, digit: str, value: Any) -> None:
                if self.recorder is not None:
                    try:
                        await self.recorder.answer(response_id, question_id, digit, value)
                    except Exception:
                        log.exception("campaign %s: answer to %s not recorded", run.id, question_id)

            result = await self.run_survey(call, script, self.prompts, language=language or run.language,
                                           on_answer=on_answer)
        except (CallerHungUp, asyncio.CancelledError):
            result = None
        except Exception:
            log.exception("campaign %s: survey on %s failed", run.id, key)
            result = None
        if self.recorder is not None:
            try:
                await self.recorder.end(response_id, result)
            except Exception:
                log.exception("campaign %s: survey end of %s not recorded", run.id, key)
        if result is not None and getattr(result, "opted_out", False):
            return CallOutcome.OPTED_OUT
        if result is not None and getattr(result, "completed", False):
            return CallOutcome.COMPLETED
        return CallOutcome.HUNG_UP

    # ------------------------------------------------------------------ for pages and tests

    def live(self) -> dict[int, dict[str, Any]]:
        return {cid: {"name": r.name, "state": r.dialer.state.value, "in_flight": len(r.dialer.in_flight),
                      "next_timer": r.dialer.get_timer()} for cid, r in self.runs.items()}
