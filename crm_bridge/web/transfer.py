"""Transfers from the agent desktop: blind, or warm (consult, then complete or cancel).

Like every desktop endpoint, the agent is the session's own: an agent can only move the call they are talking
on (the call id is optional and must be theirs). The routing side (``deps.agents.transfers``, the queue
service) decides and moves the audio; these handlers only validate the request and map refusals to HTTP.

``POST /desktop/transfer`` ``{"mode": "blind"|"consult", "to_queue"|"to_agent": ..., "note": ..., "call_id"?}``;
``{"mode": "survey", "call_id"?}`` hangs up the agent's leg and lets the caller answer the post-call survey.
``POST /desktop/transfer/complete`` and ``/desktop/transfer/cancel`` ``{"call_id"?}`` end a consultation;
``GET /desktop/transfer/targets`` lists queues and agents for the picker.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..masking import redact_text
from .app import json_error, require_session
from .deps import DEPS
from .desktop import _json_body

log = logging.getLogger(__name__)

MAX_NOTE = 1000


def _service(request: web.Request) -> Any:
    agents = request.app[DEPS].agents
    service = getattr(agents, "transfers", None) if agents is not None else None
    if service is None:
        raise web.HTTPServiceUnavailable(text='{"error": "routing is not running: calls cannot be transferred now"}',
                                         content_type="application/json")
    return service


def _refusal(exc: Exception) -> web.Response:
    status = getattr(exc, "status", None)
    if not isinstance(status, int) or not 400 <= status < 500:
        status = 409
    return json_error(status, str(exc) or type(exc).__name__)


def _call_id(body: dict[str, Any]) -> str | None:
    value = body.get("call_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise web.HTTPBadRequest(text='{"error": "call_id must be text"}', content_type="application/json")
    return value


async def targets(request: web.Request) -> web.Response:
    session = require_session(request, agent=True)
    service = _service(request)
    data = service.transfer_targets()
    data["agents"] = [a for a in data["agents"] if a["id"] != session.agent_id]
    data["current_call"] = service.call_of_agent(session.agent_id)
    return web.json_response(data)


async def transfer(request: web.Request) -> web.Response:
    session = require_session(request, agent=True)
    service = _service(request)
    body = await _json_body(request)
    mode = body.get("mode", "blind")
    if mode not in ("blind", "consult", "survey"):
        return json_error(400, "mode must be blind, consult or survey")
    if mode == "survey":
        try:
            result = service.transfer_to_survey(_call_id(body), session.agent_id)
        except web.HTTPException:
            raise
        except Exception as exc:
            log.info("agent %s: transfer to the survey refused: %s", session.agent_id, exc)
            return _refusal(exc)
        log.info("agent %s: %s handed to the post-call survey", session.agent_id, result.get("call_id"))
        return web.json_response(result)
    to_queue, to_agent = body.get("to_queue") or None, body.get("to_agent") or None
    if (to_queue is None) == (to_agent is None):
        return json_error(400, "name exactly one of to_queue or to_agent")
    for value in (to_queue, to_agent):
        if value is not None and (not isinstance(value, str) or len(value) > 64):
            return json_error(400, "to_queue / to_agent must be a name of at most 64 characters")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        return json_error(400, f"note must be text of at most {MAX_NOTE} characters")
    note = redact_text(note.strip()) if note and note.strip() else None
    fn = service.transfer if mode == "blind" else service.consult
    try:
        result = await fn(_call_id(body), session.agent_id, to_queue=to_queue, to_agent=to_agent, note=note)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.info("agent %s: %s transfer refused: %s", session.agent_id, mode, exc)
        return _refusal(exc)
    log.info("agent %s: %s transfer of %s to %s", session.agent_id, mode, result.get("call_id"),
             to_queue or to_agent)
    return web.json_response(result)


async def _consult_step(request: web.Request, step: str) -> web.Response:
    session = require_session(request, agent=True)
    service = _service(request)
    body = await _json_body(request)
    fn = service.consult_complete if step == "complete" else service.consult_cancel
    try:
        result = await fn(_call_id(body), session.agent_id)
    except web.HTTPException:
        raise
    except Exception as exc:
        return _refusal(exc)
    return web.json_response(result)


async def complete(request: web.Request) -> web.Response:
    return await _consult_step(request, "complete")


async def cancel(request: web.Request) -> web.Response:
    return await _consult_step(request, "cancel")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/desktop/transfer/targets", targets)
    r.add_post("/desktop/transfer", transfer)
    r.add_post("/desktop/transfer/complete", complete)
    r.add_post("/desktop/transfer/cancel", cancel)
