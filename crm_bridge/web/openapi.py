"""OpenAPI 3.1 description of the admin API. Request schemas come from the pydantic models the handlers
validate with; ``tests/crm/web/test_openapi.py`` checks that every route is described and no description lacks
a route."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from . import campaigns, surveys
from .api import PREFIX, REQUEST_MODELS

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _ok(description: str, ref: str | None = None, status: str = "200", csv: bool = False) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description}
    if ref:
        resp.update(_json(ref))
    if csv:
        resp["content"] = {"text/csv": {"schema": {"type": "string"}}}
    return {status: resp, "400": _ERR, "401": _ERR, "404": _ERR, "409": _ERR, "422": _ERR}


def _q(name: str, description: str, type_: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": type_, **extra}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_AGENT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_CALL_FILTERS = [_q("from", "first local day (YYYY-MM-DD) or ISO date-time; default 7 days ago"),
                 _q("to", "last local day (inclusive) or ISO date-time; default today"),
                 _q("queue", "queue name"), _q("line", "dialed line"), _q("agent", "agent id"),
                 _q("status", "active or ended", enum=["active", "ended"]),
                 _q("customer_id", "customer id", "integer"),
                 _q("limit", "page size (1..1000)", "integer", minimum=1, maximum=1000),
                 _q("offset", "rows to skip", "integer", minimum=0)]


def _components() -> dict[str, Any]:
    _, top = models_json_schema([(mdl, "validation") for mdl in REQUEST_MODELS],
                                ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    obj = {"type": "object"}
    schemas.update({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Phone": {"type": "object", "properties": {"e164": {"type": "string"}, "label": {"type": ["string", "null"]},
                                                   "verified": {"type": "boolean"}}},
        "Customer": {"type": "object", "required": ["id", "name", "segment", "phones"], "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "first_name": {"type": ["string", "null"]},
            "last_name": {"type": ["string", "null"]}, "segment": {"type": "string"},
            "language": {"type": "string"}, "account_number": {"type": ["string", "null"]},
            "external_id": {"type": ["string", "null"]}, "has_pin": {"type": "boolean"},
            "locked": {"type": "boolean"},
            "phones": {"type": "array", "items": {"$ref": "#/components/schemas/Phone"}},
            "accounts": {"type": "array", "items": obj}}},
        "CustomerList": {"type": "object", "properties": {
            "total": {"type": "integer"}, "items": {"type": "array", "items": {"$ref": "#/components/schemas/Customer"}}}},
        "ImportReport": {"type": "object", "required": ["rows", "added", "errors"], "properties": {
            "rows": {"type": "integer"}, "added": {"type": "integer"}, "unchanged": {"type": "integer"},
            "customers_created": {"type": "integer"}, "failed": {"type": "integer"}, "dry_run": {"type": "boolean"},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "row": {"type": "integer"}, "column": {"type": "string"}, "value": {"type": "string"},
                "error": {"type": "string"}}}}}},
        "Agent": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "login": {"type": "string"},
            "extension": {"type": ["string", "null"]}, "sip_uri": {"type": ["string", "null"]},
            "active": {"type": "boolean"}, "supervisor": {"type": "boolean"},
            "skills": {"type": "object", "additionalProperties": {"type": "integer"}}}},
        "AgentList": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Agent"}}}},
        "Skill": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                                   "description": {"type": ["string", "null"]}}},
        "SkillList": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Skill"}}}},
        "Enrollment": {"type": "object", "properties": {
            "customer_id": {"type": "integer"}, "recordings": {"type": "integer"},
            "model": {"type": ["string", "null"]}, "takes_accepted": {"type": ["integer", "null"]},
            "flags": {"type": "array", "items": {"type": "string"}}}},
        "ReloadResult": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "problems": {"type": "array", "items": {"type": "string"}}}},
        "CallRecord": {"type": "object", "description": "crm_bridge.recorder.record_snapshot", "properties": {
            "call_id": {"type": "string"}, "ani": {"type": ["string", "null"]}, "dnis": {"type": ["string", "null"]},
            "line": {"type": ["string", "null"]}, "customer_id": {"type": ["integer", "null"]},
            "ticket_id": {"type": ["integer", "null"]}, "identified_by": {"type": "string"},
            "verification": obj, "service": {"type": ["string", "null"]}, "queue": {"type": ["string", "null"]},
            "ivr_path": {"type": "array"}, "arrived_at": {"type": "string", "format": "date-time"},
            "answered_at": {"type": ["string", "null"]}, "ended_at": {"type": ["string", "null"]},
            "agent_id": {"type": ["string", "null"]}, "wait_seconds": {"type": ["number", "null"]},
            "talk_seconds": {"type": ["number", "null"]}, "status": {"type": "string"},
            "disposition": {"type": ["string", "null"]}}},
        "CallList": {"type": "object", "properties": {
            "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/CallRecord"}}}},
        "Kpis": {"type": "object", "description": "crm_bridge.kpi.KpiReport per group (formulas: crm_bridge.kpi)",
                 "properties": {"from": {"type": "string"}, "to": {"type": "string"},
                                "group_by": {"type": ["string", "null"]},
                                "groups": {"type": "array", "items": obj}}},
    })
    schemas.update(campaigns.openapi_schemas())
    schemas.update(surveys.openapi_schemas())
    return {"schemas": schemas,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer",
                                               "description": "web.admin_token (CONTACT_SERVER_ADMIN_TOKEN)"}}}


def spec() -> dict[str, Any]:
    body = lambda ref: {"required": True, **_json(ref)}  # noqa: E731
    paths: dict[str, Any] = {
        "/customers": {
            "get": {"summary": "List or search customers", "operationId": "listCustomers",
                    "parameters": [_q("q", "name contains / exact account number"),
                                   _q("phone", "phone number (any format)"),
                                   _q("limit", "page size", "integer", minimum=1, maximum=500),
                                   _q("offset", "rows to skip", "integer", minimum=0)],
                    "responses": _ok("customers", "CustomerList")},
            "post": {"summary": "Create a customer (with phone numbers)", "operationId": "createCustomer",
                     "requestBody": body("CustomerCreate"), "responses": _ok("created", "Customer", "201")}},
        "/customers/{id}": {
            "parameters": [_ID],
            "get": {"summary": "One customer", "operationId": "getCustomer", "responses": _ok("customer", "Customer")},
            "patch": {"summary": "Change names, segment, language, PIN; unlock", "operationId": "updateCustomer",
                      "requestBody": body("CustomerUpdate"), "responses": _ok("updated", "Customer")}},
        "/customers/{id}/phones": {
            "parameters": [_ID],
            "post": {"summary": "Add a phone number (normalised to E.164)", "operationId": "addPhone",
                     "requestBody": body("PhoneIn"), "responses": _ok("added", "Customer", "201")}},
        "/customers/{id}/phones/{e164}": {
            "parameters": [_ID, {"name": "e164", "in": "path", "required": True, "schema": {"type": "string"}}],
            "delete": {"summary": "Remove a phone number", "operationId": "deletePhone",
                       "responses": {"204": {"description": "removed"}, "401": _ERR, "404": _ERR}}},
        "/customers/{id}/voice-enrollment": {
            "parameters": [_ID],
            "post": {"summary": "Enroll a voiceprint from WAV recordings (consent required)",
                     "operationId": "enrollVoice",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                         "type": "object", "required": ["audio"], "properties": {
                             "audio": {"type": "array", "items": {"type": "string", "format": "binary"},
                                       "description": "16-bit PCM WAV files, one take each"},
                             "consent": {"type": "string", "enum": ["true", "false"],
                                         "description": "true records the customer's consent first"},
                             "consent_channel": {"type": "string", "description": "how consent was given"},
                             "actor": {"type": "string", "description": "who uploads (audit log)"}}}}}},
                     "responses": {**_ok("enrolled", "Enrollment", "201"), "413": _ERR, "503": _ERR}},
            "get": {"summary": "What is held about the customer's voice: consent, enrolled models, take counts, "
                               "recent verification outcomes (never biometric data); audited as a view",
                    "operationId": "getVoiceEnrollment",
                    "parameters": [{"name": "X-Actor", "in": "header", "required": False,
                                    "schema": {"type": "string"}, "description": "who reads (audit log)"}],
                    "responses": {**_ok("voice data held"), "503": _ERR}},
            "delete": {"summary": "Erase the customer's voice data (consent withdrawn, voiceprints, enrollment "
                                  "audio and attempt embeddings removed); audited",
                       "operationId": "eraseVoiceEnrollment",
                       "parameters": [{"name": "X-Actor", "in": "header", "required": False,
                                       "schema": {"type": "string"}, "description": "who erases (audit log)"}],
                       "responses": {**_ok("what was erased"), "503": _ERR}}},
        "/phones/import": {
            "post": {"summary": "Import phone numbers from CSV (per-row error report)", "operationId": "importPhones",
                     "description": "Columns: phone, label, customer_id or account_number; first_name, last_name, "
                                    "segment, language create unknown accounts; region for national numbers.",
                     "parameters": [_q("dry_run", "validate only", "boolean"),
                                    _q("region", "default region for numbers without +", pattern="^[A-Za-z]{2}$")],
                     "requestBody": {"required": True, "content": {
                         "text/csv": {"schema": {"type": "string"}},
                         "multipart/form-data": {"schema": {"type": "object", "properties": {
                             "file": {"type": "string", "format": "binary"}}}}}},
                     "responses": _ok("import report", "ImportReport")}},
        "/agents": {
            "get": {"summary": "List agents", "operationId": "listAgents", "responses": _ok("agents", "AgentList")},
            "post": {"summary": "Create an agent", "operationId": "createAgent", "requestBody": body("AgentCreate"),
                     "responses": _ok("created", "Agent", "201")}},
        "/agents/{id}": {
            "parameters": [_AGENT_ID],
            "patch": {"summary": "Change an agent (password, skills, supervisor, active)",
                      "operationId": "updateAgent", "requestBody": body("AgentUpdate"),
                      "responses": _ok("updated", "Agent")}},
        "/skills": {
            "get": {"summary": "List skills", "operationId": "listSkills", "responses": _ok("skills", "SkillList")},
            "post": {"summary": "Create a skill", "operationId": "createSkill", "requestBody": body("SkillCreate"),
                     "responses": _ok("created", "Skill", "201")}},
        "/config/reload": {
            "post": {"summary": "Reload the IVR/routing configuration", "operationId": "reloadConfig",
                     "responses": {**_ok("applied", "ReloadResult"), "503": _ERR}}},
        "/calls": {
            "get": {"summary": "Call records, newest first", "operationId": "listCalls", "parameters": _CALL_FILTERS,
                    "responses": _ok("call records", "CallList")}},
        "/calls.csv": {
            "get": {"summary": "Call records as CSV, oldest first", "operationId": "exportCalls",
                    "parameters": _CALL_FILTERS[:-2], "responses": _ok("CSV", csv=True)}},
        "/kpis": {
            "get": {"summary": "KPIs per queue/line/day", "operationId": "getKpis",
                    "parameters": [_q("from", "first local day"), _q("to", "last local day"),
                                   _q("group_by", "grouping", enum=["queue", "line", "day", "none"]),
                                   _q("queue", "only this queue"), _q("line", "only this line")],
                    "responses": _ok("KPIs", "Kpis")}},
        "/openapi.json": {
            "get": {"summary": "This document", "operationId": "openapi", "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }
    paths.update(campaigns.openapi_paths())
    paths.update(surveys.openapi_paths())
    return {"openapi": "3.1.0",
            "info": {"title": "Contact server admin API", "version": "1.0.0",
                     "description": "Customers, phone numbers, agents, skills, voice enrollment, configuration "
                                    "reload, call records and KPIs. Authenticate with the admin token."},
            "servers": [{"url": PREFIX}], "security": [{"adminToken": []}], "paths": paths,
            "components": _components()}
