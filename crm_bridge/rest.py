"""A generic REST adapter for an external CRM.

Each operation is an HTTP method and a URL template (``{e164}``, ``{customer_id}``, ``{ticket_id}``,
``{service}``, ``{n}``; values are URL-encoded). The auth header value comes from an environment variable so the
secret never sits in a config file. Timeouts bound each attempt, retries back off exponentially, lookups are
cached for a short TTL, and a circuit breaker makes a dead CRM cost nothing per call.

Expected JSON: a customer is ``{"id", "name", "segment", "language", "first_name", "last_name",
"account_number", "phones": [...], "accounts": [{"iban_masked", "balance_bucket", "products"}]}``; a created
ticket or interaction answers ``{"id": ...}``; lists answer a JSON array (or ``{"items": [...]}``); a PIN check
answers ``{"ok", "locked", "attempts_left", "customer"}``. A 404 on a lookup means "no such customer".
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import aiohttp

from .breaker import BreakerState, CircuitBreaker
from .cache import MISSING, TtlCache
from .crm import (AccountSummary, ContactInfo, Customer, Id, NewInteraction, NewTicket, PinCheck, TicketInfo,
                  TICKET_FIELDS)
from .errors import CrmConfigError, CrmRejectedError, CrmUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestOp:
    method: str
    path: str


DEFAULT_OPS: dict[str, RestOp] = {
    "lookup_by_phone": RestOp("GET", "/customers/by-phone/{e164}"),
    "get_customer": RestOp("GET", "/customers/{customer_id}"),
    "verify_pin": RestOp("POST", "/auth/pin"),
    "create_ticket": RestOp("POST", "/tickets"),
    "update_ticket": RestOp("PATCH", "/tickets/{ticket_id}"),
    "close_ticket": RestOp("POST", "/tickets/{ticket_id}/close"),
    "log_interaction": RestOp("POST", "/interactions"),
    "open_tickets": RestOp("GET", "/customers/{customer_id}/tickets?status=open"),
    "recent_contacts": RestOp("GET", "/customers/{customer_id}/interactions?limit={n}"),
    "find_open_ticket": RestOp("GET", "/customers/{customer_id}/tickets?status=open&service={service}"),
    "call_record": RestOp("POST", "/call-records"),
}

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RestCrmConfig:
    base_url: str
    ops: Mapping[str, RestOp] = field(default_factory=dict)
    auth_header: str = "Authorization"
    auth_env: str | None = "CRM_API_TOKEN"
    auth_prefix: str = "Bearer "
    timeout: float = 2.0
    retries: int = 2
    backoff: float = 0.2
    backoff_max: float = 2.0
    cache_ttl: float = 60.0
    breaker_failures: int = 5
    breaker_reset: float = 30.0

    def op(self, name: str) -> RestOp:
        op = self.ops.get(name) or DEFAULT_OPS.get(name)
        if op is None:
            raise CrmConfigError(f"no URL template for CRM operation {name!r}; add it under crm.rest.ops")
        return op


def _dt(value: Any) -> datetime:
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(0, timezone.utc)


def customer_from_json(d: Mapping[str, Any], *, stale: bool = False) -> Customer:
    try:
        return Customer(
            id=d["id"], name=str(d.get("name") or ""), segment=str(d.get("segment") or "retail"),
            language=str(d.get("language") or "it"), first_name=d.get("first_name"),
            last_name=d.get("last_name"), account_number=d.get("account_number"),
            phones=tuple(d.get("phones") or ()),
            accounts=tuple(AccountSummary(str(a.get("iban_masked", "")), a.get("balance_bucket"),
                                          tuple(a.get("products") or ())) for a in d.get("accounts") or ()),
            external_id=str(d["id"]), stale=stale,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise CrmRejectedError(f"CRM answered a customer without the expected fields: {exc}") from exc


def ticket_from_json(d: Mapping[str, Any]) -> TicketInfo:
    return TicketInfo(id=d["id"], customer_id=d.get("customer_id"), service=d.get("service"),
                      status=str(d.get("status") or "open"), created_at=_dt(d.get("created_at")),
                      updated_at=_dt(d.get("updated_at") or d.get("created_at")), call_id=d.get("call_id"),
                      line=d.get("line"), disposition=d.get("disposition"), notes=d.get("notes"),
                      linked_ticket_id=d.get("linked_ticket_id"))


def _items(body: Any) -> list[Mapping[str, Any]]:
    if isinstance(body, Mapping):
        body = body.get("items", [])
    if not isinstance(body, list):
        raise CrmRejectedError("CRM answered a list operation with something that is not a list")
    return body


class RestCrmAdapter:
    """``CrmAdapter`` over HTTP. Writes accept ``idempotency_key`` (sent as ``Idempotency-Key``)."""

    def __init__(self, config: RestCrmConfig, *, session: aiohttp.ClientSession | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not config.base_url.startswith(("http://", "https://")):
            raise CrmConfigError(f"CRM base URL {config.base_url!r} must start with http:// or https://")
        self.config = config
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset)
        self.cache: TtlCache[str, Customer] = TtlCache(config.cache_ttl)
        self._session = session
        self._own_session = session is None
        self._now = monotonic

    async def __aenter__(self) -> RestCrmAdapter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.auth_env:
            token = os.environ.get(self.config.auth_env)
            if token:
                headers[self.config.auth_header] = self.config.auth_prefix + token
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _url(self, op: RestOp, params: Mapping[str, Any]) -> str:
        try:
            path = op.path.format(**{k: quote(str(v), safe="") for k, v in params.items()})
        except KeyError as exc:
            raise CrmConfigError(f"URL template {op.path!r} uses {exc} which this operation does not have") from exc
        return self.config.base_url.rstrip("/") + path

    async def _call(self, name: str, params: Mapping[str, Any] | None = None, body: Any = None, *,
                    idempotency_key: str | None = None, not_found_ok: bool = False) -> Any:
        """One operation: breaker check, attempts with timeout and backoff, breaker bookkeeping."""
        if not self.breaker.allow(self._now()):
            raise CrmUnavailableError(f"CRM circuit is open; next probe in "
                                      f"{self.breaker.retry_after(self._now()):.1f} s")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        op = self.config.op(name)
        url = self._url(op, params or {})
        headers = self._headers(idempotency_key)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        last_error = "no attempt"
        for attempt in range(self.config.retries + 1):
            if attempt:
                await asyncio.sleep(min(self.config.backoff_max, self.config.backoff * 2 ** (attempt - 1)))
            try:
                async with self._session.request(op.method, url, json=body, headers=headers,
                                                 timeout=timeout) as resp:
                    if resp.status in RETRYABLE_STATUS:
                        last_error = f"HTTP {resp.status}"
                        continue
                    if resp.status == 404 and not_found_ok:
                        self.breaker.record_success(self._now())
                        return None
                    if resp.status >= 400:
                        self.breaker.record_success(self._now())
                        text = (await resp.text())[:200]
                        raise CrmRejectedError(f"CRM refused {name}: HTTP {resp.status} {text}", resp.status)
                    payload = await resp.json(content_type=None) if resp.status != 204 else None
                    self.breaker.record_success(self._now())
                    return payload
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
        self.breaker.record_failure(self._now())
        if self.breaker.state(self._now()) is BreakerState.OPEN:
            log.warning("CRM circuit opened after %s failed (%s)", name, last_error)
        raise CrmUnavailableError(f"CRM {name} failed after {self.config.retries + 1} attempts: {last_error}")

    async def _cached_customer(self, key: str, name: str, params: Mapping[str, Any]) -> Customer | None:
        cached = self.cache.get(key, self._now())
        if cached is not MISSING:
            return cached  # type: ignore[return-value]
        try:
            body = await self._call(name, params, not_found_ok=True)
        except CrmUnavailableError:
            stale = self.cache.get_stale(key)
            if stale is MISSING:
                raise
            return _as_stale(stale)  # type: ignore[arg-type]
        if body is None:
            return None
        customer = customer_from_json(body)
        self.cache.put(key, customer, self._now())
        return customer

    async def lookup_by_phone(self, e164: str) -> Customer | None:
        return await self._cached_customer(f"phone:{e164}", "lookup_by_phone", {"e164": e164})

    async def get_customer(self, customer_id: Id) -> Customer | None:
        return await self._cached_customer(f"id:{customer_id}", "get_customer", {"customer_id": customer_id})

    async def verify_pin(self, account_number: str, pin: str) -> PinCheck:
        body = await self._call("verify_pin", {"account_number": account_number},
                                {"account_number": account_number, "pin": pin})
        body = body or {}
        customer = body.get("customer")
        return PinCheck(ok=bool(body.get("ok")), customer=customer_from_json(customer) if customer else None,
                        locked=bool(body.get("locked")), attempts_left=body.get("attempts_left"))

    async def create_ticket(self, ticket: NewTicket, *, idempotency_key: str | None = None,
                            extra: Mapping[str, Any] | None = None) -> Id:
        body = asdict(ticket)
        body.update(extra or {})
        answer = await self._call("create_ticket", {}, body, idempotency_key=idempotency_key)
        if not isinstance(answer, Mapping) or "id" not in answer:
            raise CrmRejectedError("CRM answered create_ticket without an id")
        return answer["id"]

    async def update_ticket(self, ticket_id: Id, *, idempotency_key: str | None = None, **changes: Any) -> None:
        unknown = set(changes) - TICKET_FIELDS
        if unknown:
            raise ValueError(f"cannot update ticket fields {sorted(unknown)}")
        await self._call("update_ticket", {"ticket_id": ticket_id}, changes, idempotency_key=idempotency_key)

    async def close_ticket(self, ticket_id: Id, disposition: str, notes: str | None = None, *,
                           idempotency_key: str | None = None) -> None:
        await self._call("close_ticket", {"ticket_id": ticket_id}, {"disposition": disposition, "notes": notes},
                         idempotency_key=idempotency_key)

    async def log_interaction(self, interaction: NewInteraction, *, idempotency_key: str | None = None) -> Id:
        body = asdict(interaction)
        if body["at"] is not None:
            body["at"] = body["at"].isoformat()
        answer = await self._call("log_interaction", {}, body, idempotency_key=idempotency_key)
        return answer.get("id", "") if isinstance(answer, Mapping) else ""

    async def post(self, name: str, body: Any, *, idempotency_key: str | None = None) -> Any:
        """Send a write for an operation configured only in ``ops`` (e.g. ``call_record``)."""
        return await self._call(name, {}, body, idempotency_key=idempotency_key)

    async def open_tickets(self, customer_id: Id) -> list[TicketInfo]:
        body = await self._call("open_tickets", {"customer_id": customer_id}, not_found_ok=True)
        return [ticket_from_json(t) for t in _items(body or [])]

    async def recent_contacts(self, customer_id: Id, n: int = 5) -> list[ContactInfo]:
        body = await self._call("recent_contacts", {"customer_id": customer_id, "n": n}, not_found_ok=True)
        return [ContactInfo(at=_dt(c.get("at")), channel=str(c.get("channel", "voice")),
                            direction=str(c.get("direction", "inbound")), summary=str(c.get("summary", "")),
                            agent_id=c.get("agent_id"), ticket_id=c.get("ticket_id"), call_id=c.get("call_id"))
                for c in _items(body or [])][:n]

    async def find_open_ticket(self, customer_id: Id, service: str) -> TicketInfo | None:
        body = await self._call("find_open_ticket", {"customer_id": customer_id, "service": service},
                                not_found_ok=True)
        items = [ticket_from_json(t) for t in _items(body or [])]
        matching = [t for t in items if t.service == service and t.status != "closed"]
        return max(matching, key=lambda t: t.created_at) if matching else None


def _as_stale(c: Customer) -> Customer:
    return replace(c, stale=True)
