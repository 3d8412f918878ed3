"""The post-call survey: when the agent hangs up first and the caller is still on the line, a share of the
queue's (or the service's) callers is asked the queue's survey script, and every answer is stored with the call,
the agent and the ticket.

``QueueService.post_call`` is set to a :class:`PostCallSurvey`; the routing keeps the agent in wrap-up and hangs
the caller up when it returns. Who is offered is decided by :class:`ShareSampler`, a hash of the call id: the
same call always gets the same answer (a replayed or retried step cannot offer twice by chance), and tests can
force it with share 1.0 or 0.0. Customers on the do-not-call list (``SurveyStore.opted_out``) are never asked.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .metrics import SURVEYS_COMPLETED, SURVEYS_OFFERED
from .runner import run_survey
from .script import SurveyScript

log = logging.getLogger(__name__)

CHANNEL = "post_call"


class Offer(Protocol):
    script: str | None
    share: float


@dataclass(frozen=True)
class _Requested:
    script: str
    share: float


class SurveyStoreLike(Protocol):
    """``crm_bridge.surveys.SurveyStore``."""

    async def begin(self, **kwargs: Any) -> int: ...

    async def answer(self, response_id: int, question_id: str, digit: str, value: Any) -> None: ...

    async def end(self, response_id: int, status: str) -> None: ...

    async def opted_out(self, customer_id: int | None, phone: str | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class ShareSampler:
    """``offered(call_id, share)``: True for about ``share`` of call ids, always the same for one call id."""

    seed: str = "post_call_survey"

    def offered(self, call_id: str, share: float) -> bool:
        if share >= 1.0:
            return True
        if share <= 0.0:
            return False
        digest = hashlib.sha256(f"{self.seed}\0{call_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < share


def _customer_id(call: Any, context: dict) -> int | None:
    for value in (context.get("customer_id"), (call.variables.get("customer") or {}).get("id"),
                  (context.get("customer") or {}).get("id")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


class PostCallSurvey:
    """``PostCallSurvey(offers, scripts, prompts, store, sampler=ShareSampler(), run=run_survey)``;
    ``await post_call(call, context, agent_id)`` is ``QueueService.post_call``.

    ``offers(queue, service)`` returns the offer (``script``, ``share``) or None (``RoutingConfig.survey_offer``);
    ``scripts(name)`` the :class:`SurveyScript` (KeyError when unknown); ``store`` a ``SurveyStore``."""

    def __init__(self, offers: Callable[[str | None, str | None], Offer | None],
                 scripts: Callable[[str], SurveyScript], prompts: Any, store: SurveyStoreLike, *,
                 sampler: ShareSampler | None = None, run: Callable[..., Any] = run_survey,
                 default_script: str = "csat"):
        self.offers = offers
        self.scripts = scripts
        self.prompts = prompts
        self.store = store
        self.sampler = sampler or ShareSampler()
        self.run = run
        self.default_script = default_script

    def choose(self, call_id: str, queue: str | None, service: str | None, *, requested: bool = False) -> Offer | None:
        """The offer this call gets, or None (no survey for its queue/service, or not in the sampled share).
        ``requested``: the agent handed the caller to the survey; the share does not apply and a queue without a
        survey of its own gets ``default_script``."""
        offer = self.offers(queue, service)
        if requested:
            script = offer.script if offer is not None and offer.script else self.default_script
            return _Requested(script, 1.0)
        if offer is None or not offer.script or not self.sampler.offered(call_id, offer.share):
            return None
        return offer

    async def __call__(self, call: Any, context: dict, agent_id: str) -> None:
        queue, service = context.get("queue"), context.get("service")
        offer = self.choose(call.id, queue, service, requested=bool(context.get("survey_requested")))
        if offer is None:
            return
        try:
            script = self.scripts(offer.script)  # type: ignore[arg-type]
        except Exception as exc:                # unknown or broken script: the call is not the place to fail
            log.error("call %s: post-call survey %r not offered: %s", call.id, offer.script, exc)
            return
        customer_id = _customer_id(call, context)
        phone = getattr(call, "ani", None)
        try:
            if await self.store.opted_out(customer_id, phone):
                log.info("call %s: customer opted out of surveys; none offered", call.id)
                return
        except Exception:
            log.exception("call %s: opt-out list not readable; no survey offered", call.id)
            return
        language = script.language(context.get("language"))
        try:
            response_id = await self.store.begin(
                survey=script.name, channel=CHANNEL, language=language, call_id=call.id, customer_id=customer_id,
                phone=phone, agent_id=agent_id, queue=queue, service=service, line=getattr(call, "dnis", None))
        except Exception:
            log.exception("call %s: survey response not stored; no survey offered", call.id)
            return
        SURVEYS_OFFERED.labels(channel=CHANNEL).inc()
        log.info("call %s: post-call survey %s offered (%s, agent %s, queue %s)", call.id, script.name, language,
                 agent_id, queue)
        answered: list[str] = []

        async def on_answer(question_id: str, digit: str, value: Any) -> None:
            answered.append(question_id)
            await self.store.answer(response_id, question_id, digit, value)

        status = "no_answer"
        try:
            outcome = await self.run(call, script, self.prompts, language=language, on_answer=on_answer)
            status = outcome.status
            if outcome.completed:
                SURVEYS_COMPLETED.labels(channel=CHANNEL).inc()
            log.info("call %s: post-call survey %s %s (%d answers)", call.id, script.name, status,
                     len(outcome.answers))
        except BaseException:
            status = "partial" if answered else "no_answer"
            raise
        finally:
            try:
                await self.store.end(response_id, status)
            except Exception:
                log.exception("call %s: survey end (%s) not stored", call.id, status)


def attach_post_call_survey(server: Any, queue_service: Any, prompts: Any, *,
                            clock: Callable[[], float] = time.time) -> PostCallSurvey | None:
    """Set ``queue_service.post_call`` for the server (scripts from the surveys folder, answers in the CRM
    database); offers naming an unknown script are logged once here and skipped at call time."""
    try:
        from crm_bridge.surveys import SurveyStore
        from ivr.campaign.wiring import script_source, surveys_dir
    except ImportError as exc:
        log.error("post-call surveys are off: the survey store is missing (%s)", exc)
        return None
    engine = queue_service.engine
    directory = surveys_dir(server.cfg)
    scripts = script_source(directory)
    cfg = engine.config
    named = {(q.survey.script, f"queue {name}") for name, q in cfg.queues.items() if q.survey and q.survey.script}
    named |= {(o.script, f"service {name}") for name, o in cfg.service_surveys.items() if o.script}
    for name, where in sorted(named):
        try:
            scripts(name)
        except Exception as exc:
            log.error("post-call survey of %s: %s; that survey is not offered until the script is fixed", where, exc)
    post = PostCallSurvey(lambda queue, service: engine.config.survey_offer(queue, service), scripts, prompts,
                          SurveyStore(server.db, clock=clock))
    queue_service.post_call = post
    server.extras["post_call_survey"] = post
    if named:
        log.info("post-call surveys: %s", ", ".join(f"{where} -> {name}" for name, where in sorted(named)))
    return post
