"""Voicemails for supervisors: the list (page and JSON), one message with its call record, and its audio.

A supervisor session or the admin bearer token is required for all of them. The box itself
(``ivr.voicemail.VoicemailBox``) is reached through the routing control (``deps.agents.voicemail``); without
routing the pages answer 503.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from html import escape
from typing import Any

from aiohttp import web
from sqlalchemy import select

from .. import models as m
from ..recorder import record_snapshot
from .app import json_error, require_session, require_supervisor_or_admin
from .deps import DEPS
from .pages import html_response, layout, supervisor_nav

log = logging.getLogger(__name__)


def _box(request: web.Request) -> Any:
    agents = request.app[DEPS].agents
    box = getattr(agents, "voicemail", None) if agents is not None else None
    if box is None:
        raise web.HTTPServiceUnavailable(text='{"error": "routing is not running: no voicemail box"}',
                                         content_type="application/json")
    return box


async def list_json(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    return web.json_response({"items": [v.as_dict() for v in _box(request).list()]})


async def one_json(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    box = _box(request)
    try:
        vm = box.get(request.match_info["id"])
    except Exception as exc:
        return json_error(404, str(exc))

    def q(s: Any) -> dict[str, Any] | None:
        rec = s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == vm.call_id)).first()
        return record_snapshot(rec) if rec is not None else None
    record = await request.app[DEPS].db.read(q)
    return web.json_response({**vm.as_dict(), "call_record": record})


async def audio(request: web.Request) -> web.StreamResponse:
    require_supervisor_or_admin(request)
    box = _box(request)
    try:
        path = box.wav_path(request.match_info["id"])
    except Exception as exc:
        return json_error(404, str(exc))
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-store"})


async def page(request: web.Request) -> web.Response:
    session = require_session(request, supervisor=True)
    items = _box(request).list()
    rows = []
    for v in items:
        when = datetime.fromtimestamp(v.at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        d = v.as_dict()
        rows.append(
            f"<tr><td>{escape(when)}</td><td>{escape(v.ani or 'withheld')}</td><td>{escape(v.queue)}</td>"
            f"<td>{v.seconds:.1f} s</td><td>{escape(str(v.ticket_id or ''))}</td>"
            f"<td><audio controls preload=\"none\" src=\"{escape(d['audio_url'])}\"></audio></td>"
            f"<td><a href=\"{escape(d['record_url'])}\">call record</a></td></tr>")
    body = ("<section class='voicemail'><h1>Voicemail</h1>"
            + (f"<p>{len(items)} messages, newest first.</p><table class='kpi'><thead><tr><th>left at</th>"
               "<th>caller</th><th>queue</th><th>length</th><th>ticket</th><th>message</th><th></th></tr></thead>"
               f"<tbody>{''.join(rows)}</tbody></table>" if items else "<p>No voicemail.</p>")
            + "</section>")
    nav = supervisor_nav(session.name).replace(
        '<a href="/supervisor/calls">Call records</a>',
        '<a href="/supervisor/calls">Call records</a><a href="/supervisor/voicemail">Voicemail</a>')
    return html_response(layout("Voicemail", body, nav=nav))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/supervisor/voicemail", page)
    r.add_get("/supervisor/voicemail.json", list_json)
    r.add_get("/supervisor/voicemail/{id}.json", one_json)
    r.add_get("/supervisor/voicemail/{id}.wav", audio)
