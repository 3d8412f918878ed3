"""A small external CRM over HTTP for the adapter and outbox tests: real aiohttp on 127.0.0.1, with faults.

It applies each ``Idempotency-Key`` once (a repeat gets the first answer and is counted in ``duplicates``),
records the order in which ticket operations arrive, and can be made slow, failing (503) or stopped.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

from aiohttp import web

TOKEN = "s3cret-token"


class FakeCrm:
    def __init__(self) -> None:
        self.customers: dict[str, dict[str, Any]] = {}
        self.tickets: dict[str, dict[str, Any]] = {}
        self.interactions: list[dict[str, Any]] = []
        self.call_records: list[dict[str, Any]] = []
        self.pins: dict[str, tuple[str, str]] = {}
        self.ticket_ops: list[tuple[str, str]] = []
        self.applied: dict[str, tuple[int, Any]] = {}
        self.duplicates = 0
        self.requests: Counter[str] = Counter()
        self.delay = 0.0
        self.fail_status: int | None = None
        self.fail_next: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.runner: web.AppRunner | None = None
        self.port = 0

    # -- server control --

    async def start(self) -> None:
        app = web.Application(middlewares=[self._faults])
        r = app.router
        r.add_get("/customers/by-phone/{e164}", self.by_phone)
        r.add_get("/customers/{cid}/tickets", self.customer_tickets)
        r.add_get("/customers/{cid}/interactions", self.customer_interactions)
        r.add_get("/customers/{cid}", self.customer)
        r.add_post("/auth/pin", self.pin)
        r.add_post("/tickets", self.create_ticket)
        r.add_patch("/tickets/{tid}", self.update_ticket)
        r.add_post("/tickets/{tid}/close", self.close_ticket)
        r.add_post("/interactions", self.interaction)
        r.add_post("/call-records", self.call_record)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests[f"{request.method} {request.path}"] += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_status is not None:
            return web.json_response({"error": "down"}, status=self.fail_status)
        for prefix, n in list(self.fail_next.items()):
            if n > 0 and f"{request.method} {request.path}".startswith(prefix):
                self.fail_next[prefix] = n - 1
                return web.json_response({"error": "transient"}, status=503)
        key = request.headers.get("Idempotency-Key")
        if key and key in self.applied:
            self.duplicates += 1
            status, body = self.applied[key]
            return web.json_response(body, status=status)
        resp = await handler(request)
        if key and isinstance(resp, web.Response) and resp.status < 300:
            import json
            self.applied[key] = (resp.status, json.loads(resp.body) if resp.body else None)  # type: ignore[arg-type]
        return resp

    # -- handlers --

    def add_customer(self, cid: str, name: str, phones: list[str], pin: tuple[str, str] | None = None) -> None:
        self.customers[cid] = {"id": cid, "name": name, "segment": "business", "language": "en",
                               "first_name": name.split()[0], "last_name": name.split()[-1], "phones": phones,
                               "accounts": [{"iban_masked": "IT60***3456", "balance_bucket": "high",
                                             "products": ["conto"]}]}
        if pin:
            self.pins[pin[0]] = (pin[1], cid)

    async def by_phone(self, request: web.Request) -> web.Response:
        e164 = request.match_info["e164"]
        for c in self.customers.values():
            if e164 in c["phones"]:
                return web.json_response(c)
        return web.json_response({"error": "not found"}, status=404)

    async def customer(self, request: web.Request) -> web.Response:
        c = self.customers.get(request.match_info["cid"])
        return web.json_response(c) if c else web.json_response({}, status=404)

    async def customer_tickets(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        service = request.query.get("service")
        items = [t for t in self.tickets.values() if t["customer_id"] == cid and t["status"] != "closed"
                 and (service is None or t["service"] == service)]
        return web.json_response(items)

    async def customer_interactions(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        limit = int(request.query.get("limit", "5"))
        items = [i for i in self.interactions if i["customer_id"] == cid][::-1][:limit]
        return web.json_response({"items": items})

    async def pin(self, request: web.Request) -> web.Response:
        body = await request.json()
        entry = self.pins.get(body["account_number"])
        if entry is None:
            return web.json_response({"ok": False, "locked": False, "attempts_left": None})
        ok = entry[0] == body["pin"]
        return web.json_response({"ok": ok, "locked": False, "attempts_left": 3 if ok else 2,
                                  "customer": self.customers[entry[1]] if ok else None})

    async def create_ticket(self, request: web.Request) -> web.Response:
        body = await request.json()
        tid = f"T-{next(self._ids)}"
        self.tickets[tid] = {**body, "id": tid, "status": body.get("status") or "open",
                             "created_at": "2025-03-03T10:00:00+00:00"}
        self.ticket_ops.append((tid, "create"))
        return web.json_response({"id": tid}, status=201)

    async def update_ticket(self, request: web.Request) -> web.Response:
        tid = request.match_info["tid"]
        if tid not in self.tickets:
            return web.json_response({"error": "no such ticket"}, status=404)
        self.tickets[tid].update(await request.json())
        self.ticket_ops.append((tid, "update"))
        return web.json_response({"id": tid})

    async def close_ticket(self, request: web.Request) -> web.Response:
        tid = request.match_info["tid"]
        if tid not in self.tickets:
            return web.json_response({"error": "no such ticket"}, status=404)
        body = await request.json()
        self.tickets[tid].update(status="closed", disposition=body["disposition"], notes=body.get("notes"))
        self.ticket_ops.append((tid, "close"))
        return web.json_response({"id": tid})

    async def interaction(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.interactions.append(body)
        if body.get("ticket_id"):
            self.ticket_ops.append((body["ticket_id"], "interaction"))
        return web.json_response({"id": f"I-{len(self.interactions)}"}, status=201)

    async def call_record(self, request: web.Request) -> web.Response:
        self.call_records.append(await request.json())
        return web.json_response({"id": f"R-{len(self.call_records)}"}, status=201)
