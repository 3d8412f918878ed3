"""The sans-IO flow interpreter: one :class:`FlowRun` per call, events in, actions out (h11 style).

Timeouts: digit timeouts are delegated to the media layer's ``collect_digits(max_digits, first_timeout,
inter_digit_timeout, terminator)`` through :class:`CollectDigits`, which answers with ``DigitsCollected(reason=
timeout)``. DTMF arrives with RTP timing in the media layer; a second timer here would race with digits already in
flight (a key pressed just as our timer fires) and the media layer must stop collecting anyway. The run keeps one
coarse timer of its own (``get_timer``/``handle_timer``): the maximum time a call may spend in the IVR, a safety
net against a stuck external step.

``now`` is POSIX time (``time.time()``), not a monotonic clock: schedules (business hours, holidays) need the wall
clock, and trace timestamps go into call records.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ivr.errors import IvrError
from ivr.flow.actions import (AWAITING, Action, CallerHungUp, CallerLookedUp, CollectDigits, CollectEnd,
                              DigitsCollected, EnrollVoice, Event, Finished, Hangup, IvrExit, LookupCaller,
                              PinResult, Play, PlayFinished, PromptRef, Queue, Transfer, VerifyPin, VerifyVoice,
                              VoiceResult)
from ivr.flow.config import FlowDef, IvrConfig
from ivr.flow.context import TEMPLATE_RE, CallContext, evaluate, fill_template
from ivr.flow.model import (VOICE_OUTCOMES, BranchNode, CollectNode, EnrollVoiceNode, GotoNode, HangupNode,
                            IdentifyNode, LanguageMenuNode, MenuNode, Prompt, QueueNode, SayNode, SetNode,
                            TransferNode, Validation, VerifyVoiceNode)
from ivr.flow.trace import IvrTrace, TraceDigits, TracePrompt, TraceResult, TraceStep

log = logging.getLogger(__name__)

MAX_HOPS_WITHOUT_WAIT = 200
_NO_INPUT = (CollectEnd.TIMEOUT, CollectEnd.CLOSED)


class FlowProtocolError(IvrError):
    """The call layer sent an event the run is not waiting for: a wiring bug, fix the caller of handle()."""


def luhn_ok(digits: str) -> bool:
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def digits_valid(digits: str, min_len: int, max_len: int, rule: Validation) -> bool:
    if not (min_len <= len(digits) <= max_len):
        return False
    if rule.luhn and not luhn_ok(digits):
        return False
    if rule.regex is not None and not re.fullmatch(rule.regex, digits):
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Spec:
    max_digits: int
    first_timeout: float
    inter_digit_timeout: float
    terminator: str | None = None
    secret: bool = False


Cont = Callable[[Event], None]


class FlowRun:
    """Runs one call through the flow that its dialed number selects, on the config version given at creation.

    Usage: ``actions = run.start(now)``, then for each answer ``actions = run.handle(event, now)`` until a
    :class:`Finished` action; ``run.trace`` is the call's IVR path, ``run.context`` what was learnt (customer,
    service, verification...). ``handle_timer(now)`` when ``get_timer()`` passes.
    """

    def __init__(self, config: IvrConfig, context: CallContext, now: float, flow: str | None = None):
        self.config = config
        self.context = context
        self.entry_flow = flow or config.flow_for(context.dnis)
        self.trace = IvrTrace(call_id=context.call_id, config_version=config.version, dnis=context.dnis,
                              ani=context.ani_e164 or context.ani_raw, entry_flow=self.entry_flow,
                              started_at=now, language=context.language)
        self._now = now
        self._deadline = now + config.settings.max_ivr_seconds
        self._out: list[Action] = []
        self._expect: tuple[type, ...] = ()
        self._cont: Cont | None = None
        self._finished: Finished | None = None
        self._started = False
        self._typeahead: str | None = None
        self._language_chosen = False
        self._flow: FlowDef = config.flows[self.entry_flow]
        self._node = self._flow.flow.start
        self._hops = 0

    # ------------------------------------------------ public API

    @property
    def finished(self) -> bool:
        return self._finished is not None

    @property
    def outcome(self) -> Finished | None:
        return self._finished

    @property
    def current_node(self) -> str:
        return f"{self._flow.name}.{self._node}"

    @property
    def awaiting(self) -> tuple[type, ...]:
        """Event types accepted next (besides CallerHungUp); empty when finished."""
        return self._expect

    def start(self, now: float) -> list[Action]:
        if self._started:
            raise FlowProtocolError("start() called twice: create a new FlowRun per call")
        self._started = True
        self._now = now
        self._advance(self._flow, self._flow.flow.start)
        return self._flush()

    def handle(self, event: Event, now: float) -> list[Action]:
        self._now = now
        if self._finished is not None:
            log.debug("call %s: %s after the IVR finished; ignored", self.context.call_id, type(event).__name__)
            return []
        if not self._started:
            raise FlowProtocolError("handle() before start()")
        if isinstance(event, CallerHungUp):
            self._finish(IvrExit.ABANDONED, f"caller hung up at {self.current_node}")
            return self._flush()
        if not isinstance(event, self._expect):
            raise FlowProtocolError(f"got {type(event).__name__} at {self.current_node} while waiting for "
                                    f"{' or '.join(t.__name__ for t in self._expect) or 'nothing'}")
        cont, self._cont, self._expect = self._cont, None, ()
        self._hops = 0
        cont(event)
        return self._flush()

    def get_timer(self) -> float | None:
        return None if self._finished is not None else self._deadline

    def handle_timer(self, now: float) -> list[Action]:
        self._now = now
        if self._finished is None and now >= self._deadline:
            log.warning("call %s: maximum IVR time reached at %s", self.context.call_id, self.current_node)
            self._terminal(Hangup("max_ivr_time"), IvrExit.HUNG_UP, "max_ivr_time")
        return self._flush()

    # ------------------------------------------------ plumbing

    def _flush(self) -> list[Action]:
        out, self._out = self._out, []
        return out

    def _await(self, action: Action, cont: Cont) -> None:
        self._out.append(action)
        self._expect = AWAITING[type(action)]
        self._cont = cont

    def _finish(self, outcome: IvrExit, detail: str) -> None:
        self._finished = Finished(outcome, detail)
        self._expect, self._cont = (), None
        self.trace.ended_at = self._now
        self.trace.exit = outcome.value
        self.trace.exit_detail = detail
        c = self.context
        self.trace.customer_id = c.customer_id
        self.trace.identified_by = c.identified_by
        self.trace.verified = c.verified
        self.trace.language = self._language()
        self.trace.service = c.service
        self._out.append(self._finished)

    def _terminal(self, action: Action, outcome: IvrExit, detail: str) -> None:
        self._out.append(action)
        self._finish(outcome, detail)

    def _language(self) -> str:
        return self.context.language or self._flow.flow.language or self.config.settings.default_language

    def _prompt_refs(self, prompts: list[Prompt]) -> tuple[PromptRef, ...]:
        lang = self._language()
        fallback_langs = [lang, "*", self._flow.flow.language, self.config.settings.default_language]
        refs = []
        scope = self.context.template_scope()
        for p in prompts:
            key = next((k for k in fallback_langs if k in p.variants), next(iter(p.variants)))
            v = p.variants[key]
            voice = lang if key == "*" else key
            text = template = None
            if v.text:
                text = fill_template(v.text, scope) if TEMPLATE_RE.search(v.text) else v.text
                template = v.text if TEMPLATE_RE.search(v.text) else None
            wav = os.path.normpath(self._flow.prompt_dir / v.wav) if v.wav else None
            refs.append(PromptRef(text=text, wav=wav, language=voice, template=template))
        return tuple(refs)

    def _play(self, prompts: list[Prompt], barge_in: bool, then: Callable[[str | None], None]) -> None:
        """Play, then continue with the barge-in digit (or None). No prompts: continue at once."""
        if not prompts:
            then(None)
            return
        refs = self._prompt_refs(prompts)
        node = self._node
        for r in refs:
            self.trace.prompts.append(TracePrompt(self._now, node, r.text, r.wav, r.language))
        first = len(self.trace.prompts) - len(refs)

        def done(ev: Event) -> None:
            assert isinstance(ev, PlayFinished)
            digit = ev.interrupted_digit if barge_in else None
            if digit:
                for tp in self.trace.prompts[first:]:
                    tp.interrupted = True
            then(digit)
        self._await(Play(refs, barge_in), done)

    def _ask(self, prompts: list[Prompt], spec: _Spec, barge_in: bool,
             then: Callable[[str, str], None]) -> None:
        """Prompt then collect; a barge-in digit (or type-ahead from a previous prompt) starts the entry."""
        node = self._node

        def record(digits: str, reason: str) -> None:
            shown = "*" * len(digits) if spec.secret else digits
            self.trace.digits.append(TraceDigits(self._now, node, shown, str(reason)))
            then(digits, str(reason))

        def collect(first: str | None) -> None:
            if first is not None:
                if first == spec.terminator:
                    record("", CollectEnd.TERMINATOR)
                    return
                if spec.max_digits <= 1:
                    record(first, CollectEnd.MAX_DIGITS)
                    return
                rest = _Spec(spec.max_digits - 1, spec.inter_digit_timeout, spec.inter_digit_timeout,
                             spec.terminator, spec.secret)
            else:
                rest = spec

            def got(ev: Event) -> None:
                assert isinstance(ev, DigitsCollected)
                record((first or "") + (ev.digits or ""), ev.reason)
            self._await(CollectDigits(rest.max_digits, rest.first_timeout, rest.inter_digit_timeout,
                                      rest.terminator, rest.secret), got)

        if self._typeahead is not None:
            first, self._typeahead = self._typeahead, None
            collect(first)
        else:
            self._play(prompts, barge_in, collect)

    # ------------------------------------------------ node dispatch

    def _advance(self, fd: FlowDef, name: str) -> None:
        self._hops += 1
        if self._hops > MAX_HOPS_WITHOUT_WAIT:
            log.error("call %s: %d nodes without waiting at %s.%s; ending the IVR", self.context.call_id,
                      self._hops, fd.name, name)
            self._terminal(Hangup("flow_loop"), IvrExit.ERROR, f"flow loop at {fd.name}.{name}")
            return
        self._flow, self._node = fd, name
        node = fd.flow.nodes[name]
        self.trace.steps.append(TraceStep(self._now, fd.name, name, node.kind))
        handler = getattr(self, "_n_" + node.kind.replace("play", "say"))
        handler(fd, node)

    def _go(self, target: str) -> None:
        self._advance(self._flow, target)

    def _n_say(self, fd: FlowDef, node: SayNode) -> None:
        if self._typeahead is not None and node.barge_in:
            # The caller is already keying ahead: don't make them sit through (or lose digits to) this prompt.
            self._go(node.next)
            return

        def then(digit: str | None) -> None:
            if digit is not None and self._typeahead is None:
                self._typeahead = digit
            self._go(node.next)
        self._play(node.prompt, node.barge_in, then)

    def _failure(self, target: str | None, reason: str) -> None:
        if target is not None:
            self._go(target)
        else:
            self._terminal(Hangup(reason), IvrExit.HUNG_UP, f"{reason} at {self.current_node}")

    def _n_menu(self, fd: FlowDef, node: MenuNode) -> None:
        errors = 0
        spec = _Spec(1, node.timeout, node.timeout)

        def ask(prefix: list[Prompt]) -> None:
            self._ask(prefix + node.prompt, spec, node.barge_in, got)

        def got(digits: str, reason: str) -> None:
            nonlocal errors
            if digits and digits == node.repeat_key:
                ask([])
            elif digits in node.options:
                self._go(node.options[digits])
            else:
                errors += 1
                if errors > node.max_retries:
                    self._failure(node.on_failure, "max_retries")
                else:
                    ask(node.no_input_prompt if not digits and reason in _NO_INPUT
                        else node.invalid_prompt)
        ask([])

    def _n_language_menu(self, fd: FlowDef, node: LanguageMenuNode) -> None:
        errors = 0
        spec = _Spec(1, node.timeout, node.timeout)

        def got(digits: str, reason: str) -> None:
            nonlocal errors
            if digits in node.options:
                self.context.language = node.options[digits]
                self._language_chosen = True
                self._go(node.next)
                return
            errors += 1
            if errors > node.max_retries:
                self._go(node.next)
            else:
                self._ask(node.prompt, spec, True, got)
        self._ask(node.prompt, spec, True, got)

    def _n_collect(self, fd: FlowDef, node: CollectNode) -> None:
        errors = 0
        spec = _Spec(node.max_length, node.first_timeout, node.inter_digit_timeout, node.terminator, node.secret)

        def got(digits: str, reason: str) -> None:
            nonlocal errors
            if digits_valid(digits, node.min_length, node.max_length, node.validate_):
                self.context.variables[node.variable] = digits
                self._go(node.next)
                return
            errors += 1
            if errors > node.max_retries:
                self._failure(node.on_failure, "max_retries")
            else:
                no_input = not digits and reason in _NO_INPUT
                self._ask((node.no_input_prompt if no_input else node.invalid_prompt) + node.prompt, spec,
                          node.barge_in, got)
        self._ask(node.prompt, spec, node.barge_in, got)

    def _identified(self, customer: dict[str, Any], how: str) -> None:
        self.context.customer = dict(customer)
        self.context.identified_by = how
        lang = customer.get("language")
        if lang and not self._language_chosen and lang in self.config.settings.languages:
            self.context.language = lang

    def _n_identify(self, fd: FlowDef, node: IdentifyNode) -> None:
        ctx = self.context
        if ctx.identified:
            self._go(node.on_found)
            return

        def not_found() -> None:
            if node.on_not_found is not None:
                self._go(node.on_not_found)
            else:
                self._pin_fallback(node)

        if not ctx.ani_e164:
            self.trace.results.append(TraceResult(self._now, self._node, "lookup", "withheld"))
            not_found()
            return

        def looked_up(ev: Event) -> None:
            assert isinstance(ev, CallerLookedUp)
            if ev.customer and ev.customer.get("id") is not None:
                self.trace.results.append(TraceResult(self._now, self._node, "lookup", "found"))
                self._identified(ev.customer, "ani")
                self._go(node.on_found)
            else:
                self.trace.results.append(TraceResult(self._now, self._node, "lookup", "not_found"))
                not_found()
        self._await(LookupCaller(ctx.ani_e164), looked_up)

    def _pin_fallback(self, node: IdentifyNode) -> None:
        fb = node.fallback
        attempts = 0
        acc_spec = _Spec(fb.account.max_length, fb.account.first_timeout, fb.account.inter_digit_timeout,
                         fb.account.terminator)
        pin_spec = _Spec(fb.pin.max_length, fb.pin.first_timeout, fb.pin.inter_digit_timeout, fb.pin.terminator,
                         secret=True)

        def failed(no_input: bool) -> None:
            nonlocal attempts
            attempts += 1
            if attempts >= fb.max_attempts:
                self._go(node.on_failed)
            else:
                begin(fb.no_input_prompt if no_input else fb.invalid_prompt)

        def begin(prefix: list[Prompt]) -> None:
            self._ask(prefix + fb.account_prompt, acc_spec, True, got_account)

        def got_account(digits: str, reason: str) -> None:
            if not digits_valid(digits, fb.account.min_length, fb.account.max_length, fb.account_validate):
                failed(not digits and reason in _NO_INPUT)
                return

            def got_pin(pin: str, reason2: str) -> None:
                if not digits_valid(pin, fb.pin.min_length, fb.pin.max_length, Validation()):
                    failed(not pin and reason2 in _NO_INPUT)
                    return

                def verified(ev: Event) -> None:
                    assert isinstance(ev, PinResult)
                    if ev.ok:
                        self.trace.results.append(TraceResult(self._now, self._node, "pin", "ok"))
                        self._identified(ev.customer or {"id": digits, "account": digits}, "pin")
                        self._go(node.on_found)
                    elif ev.locked:
                        self.trace.results.append(TraceResult(self._now, self._node, "pin", "locked"))
                        self._go(node.on_locked or node.on_failed)
                    else:
                        self.trace.results.append(TraceResult(self._now, self._node, "pin", "wrong"))
                        failed(False)
                self._await(VerifyPin(digits, pin), verified)
            self._ask(fb.pin_prompt, pin_spec, True, got_pin)
        begin([])

    def _voice_branch(self, node: VerifyVoiceNode | EnrollVoiceNode, decision: str) -> None:
        self._go(node.branches.get(decision, node.fallback))

    def _n_verify_voice(self, fd: FlowDef, node: VerifyVoiceNode) -> None:
        cid = self.context.customer_id
        if cid is None:
            self.trace.results.append(TraceResult(self._now, self._node, "verify_voice", "not_identified"))
            self._voice_branch(node, "not_enrolled")
            return
        attempt = 0

        def ask(prefix: list[Prompt]) -> None:
            nonlocal attempt
            attempt += 1
            self._play(prefix + node.prompt, False,
                       lambda _d: self._await(VerifyVoice(cid, attempt), result))

        def result(ev: Event) -> None:
            assert isinstance(ev, VoiceResult)
            decision = ev.decision if ev.decision in VOICE_OUTCOMES else "error"
            self.trace.results.append(TraceResult(self._now, self._node, "verify_voice", decision, ev.score))
            if decision == "accept":
                self.context.verified = True
                self._voice_branch(node, "accept")
            elif decision in node.retry_on and attempt < node.max_attempts:
                ask(node.retry_prompts.get(decision, []))
            else:
                self._voice_branch(node, decision)
        ask([])

    def _n_enroll_voice(self, fd: FlowDef, node: EnrollVoiceNode) -> None:
        cid = self.context.customer_id
        if cid is None:
            self.trace.results.append(TraceResult(self._now, self._node, "enroll_voice", "not_identified"))
            self._voice_branch(node, "error")
            return
        take, tries = 1, 0

        def ask(prefix: list[Prompt]) -> None:
            nonlocal tries
            tries += 1
            self._play(prefix + node.prompt, False,
                       lambda _d: self._await(EnrollVoice(cid, take, node.takes), result))

        def result(ev: Event) -> None:
            nonlocal take, tries
            assert isinstance(ev, VoiceResult)
            decision = ev.decision if ev.decision in VOICE_OUTCOMES else "error"
            self.trace.results.append(TraceResult(self._now, self._node, f"enroll_voice take {take}", decision,
                                                  ev.score))
            if decision == "accept":
                if take >= node.takes or "ENROLLED" in ev.flags:  # enough net speech can end it early
                    self.context.variables["voice_enrolled"] = True
                    self._voice_branch(node, "accept")
                else:
                    take, tries = take + 1, 0
                    ask([])
            elif decision in node.retry_on and tries < node.max_attempts:
                ask(node.retry_prompts.get(decision, []))
            else:
                self._voice_branch(node, decision)
        ask([])

    def _n_set(self, fd: FlowDef, node: SetNode) -> None:
        c = self.context
        if node.service is not None:
            c.service = node.service
        if node.skills is not None:
            c.skills = tuple(node.skills)
        if node.priority is not None:
            c.priority = node.priority
        if node.queue is not None:
            c.queue = node.queue
        if node.language is not None:
            c.language = node.language
            self._language_chosen = True
        c.variables.update(node.variables)
        self._go(node.next)

    def _n_branch(self, fd: FlowDef, node: BranchNode) -> None:
        for case in node.cases:
            if evaluate(case.if_, self.context, self._now, self.config.schedules, self.config.settings.region):
                self._go(case.next)
                return
        self._go(node.else_)

    def _n_goto(self, fd: FlowDef, node: GotoNode) -> None:
        target = self.config.flows[node.flow or fd.name]
        self._advance(target, node.node or target.flow.start)

    def _n_queue(self, fd: FlowDef, node: QueueNode) -> None:
        c = self.context
        queue = node.queue or c.queue
        if queue is None:
            log.error("call %s: queue node %s without a queue and none set before", c.call_id, self.current_node)
            self._terminal(Hangup("no_queue"), IvrExit.ERROR, f"no queue at {self.current_node}")
            return
        service = node.service or c.service
        skills = tuple(node.skills) if node.skills is not None else c.skills
        priority = node.priority if node.priority is not None else c.priority
        c.queue, c.service, c.skills, c.priority = queue, service, skills, priority

        def hand_off(_d: str | None) -> None:
            self.trace.queue = queue
            self._terminal(Queue(queue=queue, service=service, skills=skills, priority=priority,
                                 variables=dict(c.variables), customer_id=c.customer_id, language=self._language(),
                                 identified_by=c.identified_by, verified=c.verified),
                           IvrExit.QUEUED, queue)
        self._play(node.prompt, False, hand_off)

    def _n_transfer(self, fd: FlowDef, node: TransferNode) -> None:
        self._play(node.prompt, False,
                   lambda _d: self._terminal(Transfer(node.uri), IvrExit.TRANSFERRED, node.uri))

    def _n_hangup(self, fd: FlowDef, node: HangupNode) -> None:
        self._play(node.prompt, False,
                   lambda _d: self._terminal(Hangup(node.reason), IvrExit.HUNG_UP, node.reason))
