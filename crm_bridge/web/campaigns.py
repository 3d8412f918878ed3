"""Outbound survey campaigns in the admin API (``/api/v1/campaigns``, bearer token) and on the supervisor
pages (``/supervisor/campaigns``): create from JSON contacts, a CSV or a CRM query, list, progress, pause,
resume, stop; the do-not-call list (``/api/v1/opt-outs``).

Handlers only write the database (``crm_bridge.campaign_store``) and tell the dialer in this process
(``notify_changed``); a dialer in another process follows at its next poll.
"""

from __future__ import annotations

import logging
from html import escape
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.exc import IntegrityError

from .. import campaign_store as cs
from ..errors import NotFoundError
from ivr.campaign.rules import CampaignRules
from .api import PREFIX, ApiError, _body, _int_id, api_handler
from .app import now_of, require_supervisor_or_admin
from .deps import DEPS
from .importer import normalise_phone
from .pages import html_response, layout, supervisor_nav

log = logging.getLogger(__name__)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CampaignContactIn(_In):
    customer_id: int | None = Field(None, ge=1)
    phone: str | None = Field(None, min_length=3, max_length=32)
    language: Literal["it", "en"] | None = None

    @model_validator(mode="after")
    def _one(self) -> "CampaignContactIn":
        if self.customer_id is None and not self.phone:
            raise ValueError("give customer_id or phone")
        return self


class CampaignQuery(_In):
    segment: Literal["retail", "business", "critical"] | None = None
    language: Literal["it", "en"] | None = None


class CampaignCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    survey: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                        description="survey script name (config/surveys)")
    language: Literal["it", "en"] = "it"
    rules: CampaignRules = Field(default_factory=CampaignRules,
                                 description="window (timezone, hours, holidays), pacing, retries")
    contacts: list[CampaignContactIn] | None = Field(None, max_length=cs.MAX_CONTACTS)
    contacts_csv: str | None = Field(None, max_length=8 * 1024 * 1024,
                                     description="CSV text with a header: customer_id and/or phone, language")
    query: CampaignQuery | None = Field(None, description="every CRM customer matching the filter")
    region: str = Field("IT", min_length=2, max_length=2, description="region of numbers written without +")
    start: bool = Field(False, description="start at once (else a draft, started with /resume)")

    @model_validator(mode="after")
    def _one_source(self) -> "CampaignCreate":
        given = [n for n in ("contacts", "contacts_csv", "query") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of contacts, contacts_csv, query (found "
                             f"{', '.join(given) or 'none'})")
        return self


class OptOutCreate(_In):
    customer_id: int | None = Field(None, ge=1)
    phone: str | None = Field(None, min_length=3, max_length=32)
    reason: str | None = Field(None, max_length=255)

    @model_validator(mode="after")
    def _one(self) -> "OptOutCreate":
        if self.customer_id is None and not self.phone:
            raise ValueError("give customer_id or phone")
        return self


REQUEST_MODELS: list[type[BaseModel]] = [CampaignContactIn, CampaignQuery, CampaignCreate, OptOutCreate]


async def _create_body(request: web.Request) -> CampaignCreate:
    """JSON, or ``text/csv`` with ``name``, ``survey`` (and ``language``, ``start``) in the query string."""
    if request.content_type == "text/csv":
        q = request.query
        text = (await request.read()).decode("utf-8-sig", errors="replace")
        data: dict[str, Any] = {"name": q.get("name", ""), "survey": q.get("survey", ""), "contacts_csv": text,
                                "start": q.get("start", "false").lower() in ("1", "true", "yes")}
        for k in ("language", "region"):
            if q.get(k):
                data[k] = q[k]
        try:
            return CampaignCreate.model_validate(data)
        except ValidationError as exc:
            raise ApiError(422, "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                                          for e in exc.errors())) from None
    return await _body(request, CampaignCreate)


@api_handler
async def create_campaign(request: web.Request) -> web.Response:
    body = await _create_body(request)
    deps = request.app[DEPS]
    now = now_of(request)
    if body.contacts_csv is not None:
        try:
            contacts = cs.parse_contacts_csv(body.contacts_csv)
        except cs.CampaignError as exc:
            raise ApiError(422, str(exc)) from None
        source: dict[str, Any] = {"kind": "csv"}
    elif body.contacts is not None:
        contacts = [cs.ContactIn(c.customer_id, c.phone, c.language, i + 1) for i, c in enumerate(body.contacts)]
        source = {"kind": "list"}
    else:
        assert body.query is not None
        source = {"kind": "query", **body.query.model_dump(exclude_none=True)}
        contacts = None

    def run(s) -> tuple[int, dict[str, Any], dict[str, Any]]:
        rows = contacts if contacts is not None else cs.contacts_from_query(
            s, segment=body.query.segment, language=body.query.language)
        cid, report = cs.create_campaign(s, name=body.name, survey=body.survey, rules=body.rules, contacts=rows,
                                         language=body.language, source=source, region=body.region,
                                         start=body.start, now=now)
        s.flush()
        return cid, report.as_dict(), cs.campaign_summary(s, cid)
    try:
        cid, report, summary = await deps.db.run(run)
    except cs.CampaignError as exc:
        raise ApiError(409 if "exists already" in str(exc) else 422, str(exc)) from None
    except IntegrityError:
        raise ApiError(409, f"a campaign named {body.name!r} exists already") from None
    cs.notify_changed(cid)
    log.info("admin API: campaign %s (%s) created with %d contacts", cid, body.name, report["added"])
    return web.json_response({**summary, "import": report}, status=201)


@api_handler
async def list_campaigns(request: web.Request) -> web.Response:
    return web.json_response({"items": await request.app[DEPS].db.read(cs.list_campaigns)})


async def _summary(request: web.Request, cid: int) -> dict[str, Any]:
    try:
        return await request.app[DEPS].db.read(lambda s: cs.campaign_summary(s, cid))
    except NotFoundError:
        raise ApiError(404, f"campaign {cid} does not exist") from None


@api_handler
async def get_campaign(request: web.Request) -> web.Response:
    return web.json_response(await _summary(request, _int_id(request, "id")))


@api_handler
async def campaign_contacts(request: web.Request) -> web.Response:
    cid = _int_id(request, "id")
    await _summary(request, cid)
    try:
        limit = min(1000, max(1, int(request.query.get("limit", 500))))
        offset = max(0, int(request.query.get("offset", 0)))
    except ValueError:
        raise ApiError(400, "limit and offset must be whole numbers") from None
    items = await request.app[DEPS].db.read(lambda s: cs.contact_rows(s, cid, limit=limit, offset=offset))
    return web.json_response({"items": items, "limit": limit, "offset": offset})


def _control(command: str):  # type: ignore[no-untyped-def]
    @api_handler
    async def handler(request: web.Request) -> web.Response:
        cid = _int_id(request, "id")
        now = now_of(request)
        try:
            await request.app[DEPS].db.run(lambda s: cs.change_state(s, cid, command, now=now))
        except NotFoundError:
            raise ApiError(404, f"campaign {cid} does not exist") from None
        except cs.CampaignError as exc:
            raise ApiError(409, str(exc)) from None
        cs.notify_changed(cid)
        log.info("admin API: campaign %s %s", cid, command)
        return web.json_response(await _summary(request, cid))
    handler.__name__ = f"{command}_campaign"
    return handler


@api_handler
async def add_opt_out(request: web.Request) -> web.Response:
    body: OptOutCreate = await _body(request, OptOutCreate)
    try:
        e164 = normalise_phone(body.phone) if body.phone else None
    except ValueError as exc:
        raise ApiError(422, f"phone: {exc}") from None
    now = now_of(request)
    try:
        oid = await request.app[DEPS].db.run(lambda s: cs.add_opt_out(
            s, customer_id=body.customer_id, e164=e164, reason=body.reason, source="admin", now=now))
    except NotFoundError as exc:
        raise ApiError(404, str(exc)) from None
    for cid in await request.app[DEPS].db.read(lambda s: list(cs.campaign_states(s))):
        cs.notify_changed(cid)
    return web.json_response({"id": oid, "customer_id": body.customer_id, "e164": e164}, status=201)


ROUTES = [
    ("GET", "/campaigns", list_campaigns),
    ("POST", "/campaigns", create_campaign),
    ("GET", "/campaigns/{id}", get_campaign),
    ("GET", "/campaigns/{id}/contacts", campaign_contacts),
    ("POST", "/campaigns/{id}/pause", _control("pause")),
    ("POST", "/campaigns/{id}/resume", _control("resume")),
    ("POST", "/campaigns/{id}/stop", _control("stop")),
    ("POST", "/opt-outs", add_opt_out),
]


# ------------------------------------------------------------------------------------------ supervisor page

def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def campaigns_html(items: list[dict[str, Any]]) -> str:
    states = ["pending", "dialing", "answered", "completed", "no_answer", "busy", "failed", "opted_out", "skipped"]
    head = "".join(f"<th>{escape(s.replace('_', ' '))}</th>" for s in states)
    rows = []
    for c in items:
        by = c["by_state"]
        done = c["done"] / c["contacts"] if c["contacts"] else 0.0
        rows.append(
            f'<tr data-campaign="{c["id"]}"><td>{c["id"]}</td><td>{escape(c["name"])}</td>'
            f'<td>{escape(c["survey"])}</td><td class="state">{escape(c["state"])}</td>'
            f'<td>{c["done"]}/{c["contacts"]} <progress max="1" value="{done:.3f}"></progress></td>'
            + "".join(f'<td class="n {s}">{by.get(s, 0)}</td>' for s in states)
            + f'<td>{c["attempts"]}</td><td class="rate">{_pct(c["response_rate"])}</td>'
              f'<td>{_pct(c["answer_rate"])}</td></tr>')
    table = (f'<table class="campaigns"><thead><tr><th>#</th><th>Campaign</th><th>Survey</th><th>State</th>'
             f'<th>Progress</th>{head}<th>Attempts</th><th>Response rate</th><th>Answer rate</th></tr></thead>'
             f'<tbody>{"".join(rows) or "<tr><td colspan=17>No campaigns yet.</td></tr>"}</tbody></table>')
    note = ('<p class="note">Response rate: completed surveys / customers called at least once. Answer rate: '
            'customers who answered / customers called. Pause, resume and stop: the admin API '
            '(<code>/api/v1/campaigns/{id}/pause</code>) or <code>contact-server campaign</code>.</p>')
    return f"<section><h1>Outbound survey campaigns</h1>{table}{note}</section>"


async def campaigns_page(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    items = await request.app[DEPS].db.read(cs.list_campaigns)
    return html_response(layout("Campaigns", campaigns_html(items), nav=supervisor_nav("supervisor")))


async def campaigns_json(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    return web.json_response({"items": await request.app[DEPS].db.read(cs.list_campaigns)})


def setup(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, handler)
    app.router.add_get("/supervisor/campaigns", campaigns_page)
    app.router.add_get("/supervisor/campaigns.json", campaigns_json)


# ------------------------------------------------------------------------------------------ OpenAPI

def openapi_schemas() -> dict[str, Any]:
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema([(mdl, "validation") for mdl in REQUEST_MODELS],
                                ref_template="#/components/schemas/{model}")
    schemas = dict(top.get("$defs", {}))
    schemas["CampaignProgress"] = {"type": "object", "description": "crm_bridge.campaign_store.campaign_summary",
                                   "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "survey": {"type": "string"},
        "state": {"type": "string", "enum": ["draft", "running", "paused", "stopped", "finished"]},
        "contacts": {"type": "integer"}, "done": {"type": "integer"}, "called": {"type": "integer"},
        "attempts": {"type": "integer"}, "by_state": {"type": "object", "additionalProperties": {"type": "integer"}},
        "response_rate": {"type": ["number", "null"]}, "answer_rate": {"type": ["number", "null"]},
        "rules": {"type": "object"}, "source": {"type": "object"}}}
    schemas["CampaignList"] = {"type": "object", "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/CampaignProgress"}}}}
    return schemas


def openapi_paths() -> dict[str, Any]:
    err = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    def ok(description: str, ref: str, status: str = "200") -> dict[str, Any]:
        return {status: {"description": description,
                         "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}},
                "400": err, "401": err, "404": err, "409": err, "422": err}

    ident = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    control = {cmd: {"parameters": [ident], "post": {
        "summary": text, "operationId": f"{cmd}Campaign", "responses": ok("new state and progress",
                                                                          "CampaignProgress")}}
        for cmd, text in (("pause", "Pause: no new calls, calls in progress finish"),
                          ("resume", "Resume a paused campaign, or start a draft"),
                          ("stop", "Stop for good: contacts not reached become skipped"))}
    return {
        "/campaigns": {
            "get": {"summary": "Outbound survey campaigns with their progress", "operationId": "listCampaigns",
                    "responses": ok("campaigns", "CampaignList")},
            "post": {"summary": "Create a campaign (contacts as JSON, CSV text or a CRM query)",
                     "operationId": "createCampaign",
                     "description": "JSON body, or text/csv with name, survey, language, start in the query "
                                    "string. Customers on the do-not-call list are kept as opted_out.",
                     "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": "string"},
                                     "description": f"{n} (text/csv bodies only)"}
                                    for n in ("name", "survey", "language", "region", "start")],
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": {"$ref": "#/components/schemas/CampaignCreate"}},
                         "text/csv": {"schema": {"type": "string"}}}},
                     "responses": ok("created, with the contacts' import report", "CampaignProgress", "201")}},
        "/campaigns/{id}": {"parameters": [ident], "get": {
            "summary": "Progress: contacts by state, attempts, response and answer rates",
            "operationId": "getCampaign", "responses": ok("progress", "CampaignProgress")}},
        "/campaigns/{id}/contacts": {"parameters": [ident], "get": {
            "summary": "Contacts with their state, attempts and last outcome", "operationId": "listCampaignContacts",
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                       "maximum": 1000}},
                           {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": {"description": "contacts", "content": {"application/json": {
                "schema": {"type": "object"}}}}, "401": err, "404": err}}},
        **{f"/campaigns/{{id}}/{cmd}": spec for cmd, spec in control.items()},
        "/opt-outs": {"post": {"summary": "Put a customer or number on the do-not-call list",
                               "operationId": "addOptOut",
                               "requestBody": {"required": True, "content": {"application/json": {
                                   "schema": {"$ref": "#/components/schemas/OptOutCreate"}}}},
                               "responses": {"201": {"description": "added"}, "401": err, "404": err,
                                             "422": err}}},
    }
