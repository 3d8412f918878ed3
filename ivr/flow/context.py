"""Per-call state the flow reads and writes, conditions over it, and prompt templates filled from it."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ivr.flow.config import number_forms
from ivr.flow.model import Condition, Schedule
from ivr.flow.schedule import is_holiday, is_open

log = logging.getLogger(__name__)

TEMPLATE_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")
TEMPLATE_ROOTS = ("customer", "var", "call")


@dataclass(slots=True)
class CallContext:
    """What the call layer knows when the IVR starts; the run then fills customer, service, skills...

    ``ani_e164`` is None for withheld or unparsable numbers: identification then goes straight to the PIN path.
    """

    call_id: str
    ani_e164: str | None
    ani_raw: str | None
    dnis: str
    language: str | None = None
    customer: dict[str, Any] | None = None
    identified_by: str | None = None
    verified: bool = False
    service: str | None = None
    skills: tuple[str, ...] = ()
    priority: int = 0
    queue: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def identified(self) -> bool:
        return self.customer is not None

    @property
    def customer_id(self) -> str | None:
        return None if self.customer is None or self.customer.get("id") is None else str(self.customer["id"])

    def template_scope(self) -> dict[str, Any]:
        cust = dict(self.customer or {})
        if "first_name" not in cust and cust.get("name"):
            cust["first_name"] = str(cust["name"]).split()[0]
        return {
            "customer": cust,
            "var": dict(self.variables),
            "call": {"ani": self.ani_e164 or "", "dnis": self.dnis, "language": self.language or "",
                     "service": self.service or ""},
        }


def fill_template(text: str, scope: Mapping[str, Any]) -> str:
    """Replace ``{customer.first_name}``-style placeholders; a missing value becomes empty, never the braces."""
    def sub(m: re.Match) -> str:
        cur: Any = scope
        for part in m.group(1).split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                log.debug("template value %s missing; left empty", m.group(1))
                return ""
            cur = cur[part]
        return "" if cur is None else str(cur)
    out = TEMPLATE_RE.sub(sub, text)
    return re.sub(r"\s+([,.!?;:])", r"\1", re.sub(r"\s{2,}", " ", out)).strip()


def strip_placeholders(text: str) -> str:
    """The fixed part of a template ("Buongiorno {customer.first_name}." -> "Buongiorno.")."""
    return fill_template(text, {})


def evaluate(cond: Condition, ctx: CallContext, now: float, schedules: Mapping[str, Schedule],
             region: str = "IT") -> bool:
    """Evaluate a structured condition. Unknown schedules evaluate closed (the validator rejects them first)."""
    if cond.all is not None:
        return all(evaluate(c, ctx, now, schedules, region) for c in cond.all)
    if cond.any is not None:
        return any(evaluate(c, ctx, now, schedules, region) for c in cond.any)
    if cond.not_ is not None:
        return not evaluate(cond.not_, ctx, now, schedules, region)
    if cond.identified is not None:
        return ctx.identified == cond.identified
    if cond.verified is not None:
        return ctx.verified == cond.verified
    if cond.ani_withheld is not None:
        return (ctx.ani_e164 is None) == cond.ani_withheld
    if cond.segment is not None:
        wanted = [cond.segment] if isinstance(cond.segment, str) else cond.segment
        seg = (ctx.customer or {}).get("segment")
        return seg is not None and str(seg) in wanted
    if cond.language is not None:
        wanted = [cond.language] if isinstance(cond.language, str) else cond.language
        return ctx.language in wanted
    if cond.var is not None:
        value = _lookup_var(ctx, cond.var)
        if cond.equals is not None:
            return _same(value, cond.equals)
        if cond.in_ is not None:
            return any(_same(value, x) for x in cond.in_)
        return bool(value)
    if cond.open is not None:
        s = schedules.get(cond.open)
        return s is not None and is_open(s, now)
    if cond.holiday is not None:
        s = schedules.get(cond.holiday)
        return s is not None and is_holiday(s, now)
    if cond.dnis is not None:
        pats = [cond.dnis] if isinstance(cond.dnis, str) else cond.dnis
        forms = number_forms(ctx.dnis, region)
        for p in pats:
            if p.endswith("*"):
                if any(f.startswith(p[:-1].replace(" ", "")) for f in forms):
                    return True
            elif forms & number_forms(p, region):
                return True
        return False
    return False


def _lookup_var(ctx: CallContext, name: str) -> Any:
    if name in ctx.variables:
        return ctx.variables[name]
    return {"service": ctx.service, "queue": ctx.queue, "priority": ctx.priority,
            "language": ctx.language}.get(name)


def _same(a: Any, b: Any) -> bool:
    """YAML gives ``1`` and ``"1"`` for the same admin intent; collected digits are strings."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    return a == b or (a is not None and str(a) == str(b))
