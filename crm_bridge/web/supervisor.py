"""Supervisor pages: the live wallboard (websocket), KPIs per queue/line/day with their formulas and charts,
and the call records with CSV export."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import WSMsgType, web

from .. import kpi, metrics
from .app import STATIC_DIR, json_error, now_of, require_session, require_supervisor_or_admin
from .auth import origin_allowed
from .charts import Series, bar_chart
from .deps import DEPS, SOCKETS, WebDeps
from .pages import html_response, layout, supervisor_nav
from .records import FilterError, calls_csv, list_calls, local_day_bounds, parse_filter, parse_when

log = logging.getLogger(__name__)

WALLBOARD_STATE = web.AppKey("wallboard_state", dict)


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _finite(v: Any) -> Any:
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    return v


async def today_by_queue(deps: WebDeps, now: float) -> dict[str, dict[str, Any]]:
    start, end = local_day_bounds(now, ZoneInfo(deps.tz))
    reports = await deps.db.read(lambda s: kpi.kpi_report(s, start, end, group_by="queue", tz=deps.tz,
                                                          sl_threshold=deps.sl_threshold))
    return {str(q): {"calls": r.calls, "offered": r.offered, "answered": r.answered, "abandoned": r.abandoned,
                     "service_level": r.service_level, "asa": r.asa}
            for q, r in reports.items() if q is not None}


async def wallboard_snapshot(app: web.Application) -> dict[str, Any]:
    deps = app[DEPS]
    state = app[WALLBOARD_STATE]
    now = deps.clock() if deps.clock else time.time()
    if now - state.get("today_at", -1e18) >= max(deps.wallboard_interval, 2.0) or state.get("dirty"):
        try:
            state["today"] = await today_by_queue(deps, now)
            state["today_at"] = now
            state["dirty"] = False
        except Exception as exc:
            log.warning("wallboard: today's figures not read (%s)", type(exc).__name__)
    today: dict[str, dict[str, Any]] = state.get("today", {})
    queues: list[dict[str, Any]] = []
    agents: list[dict[str, Any]] = []
    live = deps.wallboard is not None
    if live:
        assert deps.wallboard is not None
        whole = getattr(deps.wallboard, "snapshot", None)
        if callable(whole):        # one reading, with the source's own clock ("since" may be monotonic)
            snap = await _maybe(whole())
            raw_queues, raw_agents, source_now = snap["queues"], snap["agents"], snap.get("at", now)
        else:
            raw_queues = await _maybe(deps.wallboard.queues())
            raw_agents = await _maybe(deps.wallboard.agents())
            source_now = now
        queues = [{k: _finite(v) for k, v in dict(q).items()} for q in raw_queues]
        agents = [dict(a) for a in raw_agents]
        for a in agents:
            since = a.get("since")
            a["for_seconds"] = max(0.0, source_now - since) if isinstance(since, (int, float)) and since else None
        metrics.set_queue_sizes({str(q["queue"]): int(q.get("waiting") or 0) for q in queues})
    names = [q["queue"] for q in queues] + sorted(set(today) - {q["queue"] for q in queues})
    by_name = {q["queue"]: q for q in queues}
    rows = []
    for name in names:
        q = by_name.get(name, {"queue": name})
        t = today.get(name, {})
        rows.append({"queue": name, "waiting": q.get("waiting", 0), "longest_wait": q.get("longest_wait", 0.0),
                     "staffed": q.get("staffed"), "available": q.get("available"),
                     "ewt_seconds": q.get("ewt_seconds"),
                     "today_calls": t.get("offered", 0), "today_answered": t.get("answered", 0),
                     "today_abandoned": t.get("abandoned", 0), "service_level_today": t.get("service_level")})
    counts: dict[str, int] = {}
    for a in agents:
        counts[str(a.get("state"))] = counts.get(str(a.get("state")), 0) + 1
    return {"type": "wallboard", "at": now, "live": live, "queues": rows, "agents": agents,
            "agent_counts": counts,
            "totals": {"waiting": sum(int(r["waiting"] or 0) for r in rows),
                       "answered_today": sum(r["today_answered"] for r in rows),
                       "abandoned_today": sum(r["today_abandoned"] for r in rows)}}


async def _broadcaster(app: web.Application) -> AsyncIterator[None]:
    deps = app[DEPS]
    registry = app[SOCKETS]

    async def loop() -> None:
        while True:
            await asyncio.sleep(deps.wallboard_interval)
            try:
                if registry.wallboards:
                    snap = await wallboard_snapshot(app)
                    await registry.send_wallboards(json.dumps(snap, default=str))
                elif deps.wallboard is not None:      # nobody watching: keep the queue-size gauge current
                    queues = await _maybe(deps.wallboard.queues())
                    metrics.set_queue_sizes({str(q["queue"]): int(q.get("waiting") or 0) for q in queues})
            except Exception:
                log.exception("wallboard update failed")

    task = asyncio.create_task(loop(), name="wallboard broadcaster")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def mark_dirty(app: web.Application) -> None:
    """Today's figures are re-read at the next update (a call was wrapped up)."""
    app[WALLBOARD_STATE]["dirty"] = True


async def wallboard_page(request: web.Request) -> web.FileResponse:
    require_session(request, supervisor=True)
    return web.FileResponse(STATIC_DIR / "wallboard.html", headers={"Content-Type": "text/html; charset=utf-8"})


async def wallboard_json(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    return web.json_response(await wallboard_snapshot(request.app), dumps=lambda o: json.dumps(o, default=str))


async def wallboard_ws(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    if not origin_allowed(request, frozenset(deps.allowed_origins)):
        return json_error(403, "websocket origin not allowed")
    require_session(request, supervisor=True)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
    await ws.prepare(request)
    registry = request.app[SOCKETS]
    registry.add_wallboard(ws)
    try:
        await ws.send_str(json.dumps(await wallboard_snapshot(request.app), default=str))
        async for msg in ws:
            if msg.type is WSMsgType.ERROR:
                break
    except (ConnectionError, RuntimeError):
        pass
    finally:
        registry.remove_wallboard(ws)
    return ws


# ------------------------------------------------------------------------------------------------- KPIs

_COLUMNS = [("calls", "Calls", "n"), ("offered", "Offered", "n"), ("answered", "Answered", "n"),
            ("abandoned", "Abandoned", "n"), ("service_level", "Service level", "%"), ("asa", "ASA", "s"),
            ("abandon_rate", "Abandon rate", "%"), ("aht", "AHT", "s"), ("ivr_time", "IVR time", "s"),
            ("containment", "Containment", "%"), ("transfer_rate", "Transfer rate", "%"), ("fcr", "FCR", "%"),
            ("identification_rate", "Identified", "%"), ("verification_rate", "Voice verified", "%")]


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "%":
        return f"{v * 100:.1f} %"
    if kind == "s":
        return f"{v:.0f} s"
    return str(v)


def _kpi_params(request: web.Request) -> tuple[datetime, datetime, str | None, str, str]:
    deps = request.app[DEPS]
    zone = ZoneInfo(deps.tz)
    q = request.query
    group = q.get("group_by", "day")
    if group not in ("queue", "line", "day", "none"):
        raise FilterError("group_by must be queue, line, day or none")
    start_d, end_d = local_day_bounds(now_of(request), zone, 7)
    start = parse_when(q["from"], zone) if q.get("from") else start_d
    end = parse_when(q["to"], zone, end=True) if q.get("to") else end_d
    if end <= start or end - start > timedelta(days=400):
        raise FilterError("'to' must be after 'from', at most 400 days later")
    return start, end, None if group == "none" else group, start.astimezone(zone).date().isoformat(), \
        (end - timedelta(seconds=1)).astimezone(zone).date().isoformat()


async def kpi_data(deps: WebDeps, start: datetime, end: datetime, group: str | None,
                   queue: str | None = None, line: str | None = None) -> dict[str | None, kpi.KpiReport]:
    return await deps.db.read(lambda s: kpi.kpi_report(s, start, end, group_by=group, queue=queue, line=line,  # type: ignore[arg-type]
                                                       tz=deps.tz, sl_threshold=deps.sl_threshold))


async def kpi_page(request: web.Request) -> web.Response:
    session = require_session(request, supervisor=True)
    deps = request.app[DEPS]
    try:
        start, end, group, d_from, d_to = _kpi_params(request)
    except FilterError as exc:
        return html_response(layout("KPIs", f'<p class="error">{escape(str(exc))}</p>',
                                    nav=supervisor_nav(session.name)), status=400)
    queue = request.query.get("queue") or None
    line = request.query.get("line") or None
    reports = await kpi_data(deps, start, end, group, queue, line)
    keys = sorted(reports, key=lambda k: "" if k is None else str(k))
    head = "".join(f"<th>{escape(label)}</th>" for _, label, _ in _COLUMNS)
    body_rows = []
    for k in keys:
        r = asdict(reports[k])
        cells = "".join(f"<td>{_fmt(r[key], kind)}</td>" for key, _, kind in _COLUMNS)
        body_rows.append(f"<tr><th>{escape('(none)' if k is None else str(k))}</th>{cells}</tr>")
    labels = ["all" if k is None else str(k) for k in keys]
    charts = bar_chart("Calls offered: answered and abandoned", labels, [
        Series("answered", [reports[k].answered for k in keys], "s-answered"),
        Series("abandoned", [reports[k].abandoned for k in keys], "s-abandoned")], stacked=True)
    charts += bar_chart(f"Service level (answered within {deps.sl_threshold:g} s)", labels, [
        Series("service level", [reports[k].service_level for k in keys], "s-sl")], percent=True, y_max=1.0,
        target=0.8)
    sel = {g: " selected" if (group or "none") == g else "" for g in ("day", "queue", "line", "none")}
    form = (f'<form method="get" class="filters"><label>From <input type="date" name="from" value="{d_from}">'
            f'</label><label>To <input type="date" name="to" value="{d_to}"></label>'
            f'<label>Group by <select name="group_by"><option value="day"{sel["day"]}>day</option>'
            f'<option value="queue"{sel["queue"]}>queue</option><option value="line"{sel["line"]}>line</option>'
            f'<option value="none"{sel["none"]}>all together</option></select></label>'
            f'<label>Queue <input name="queue" value="{escape(queue or "")}" size="12"></label>'
            f'<label>Line <input name="line" value="{escape(line or "")}" size="12"></label>'
            f'<button type="submit">Show</button>'
            f' <a href="/supervisor/calls.csv?from={d_from}&amp;to={d_to}">Export call records (CSV)</a></form>')
    body = (f"{form}<div class='charts'>{charts}</div>"
            f"<table class='kpi' id='kpi-table'><thead><tr><th>{escape(group or 'all')}</th>{head}</tr></thead>"
            f"<tbody>{''.join(body_rows) or '<tr><td colspan=15>No calls in this period.</td></tr>'}</tbody>"
            f"</table><h2>How these figures are computed</h2><pre class='formulas'>{escape(kpi.__doc__ or '')}"
            f"</pre>")
    return html_response(layout("KPIs", body, nav=supervisor_nav(session.name)))


async def calls_page(request: web.Request) -> web.Response:
    session = require_session(request, supervisor=True)
    deps = request.app[DEPS]
    try:
        f = parse_filter(request.query, now=now_of(request), tz=deps.tz)
    except FilterError as exc:
        return html_response(layout("Call records", f'<p class="error">{escape(str(exc))}</p>',
                                    nav=supervisor_nav(session.name)), status=400)
    total, items = await deps.db.read(lambda s: list_calls(s, f))
    cols = ["arrived_at", "ani", "line", "service", "queue", "agent_id", "wait_seconds", "talk_seconds", "status",
            "disposition"]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
    rows = "".join("<tr>" + "".join(f"<td>{escape(_cell(it.get(c)))}</td>" for c in cols) + "</tr>"
                   for it in items)
    qs = escape(request.query_string)
    body = (f"<p>{total} calls (showing {len(items)}). <a href='/supervisor/calls.csv?{qs}'>Export CSV</a></p>"
            f"<table class='kpi'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return html_response(layout("Call records", body, nav=supervisor_nav(session.name)))


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.0f}"
    return str(v)[:19] if isinstance(v, str) and "T" in v and v[:4].isdigit() else str(v)


async def calls_csv_export(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    deps = request.app[DEPS]
    try:
        f = parse_filter(request.query, now=now_of(request), tz=deps.tz)
    except FilterError as exc:
        return json_error(400, str(exc))
    text = await deps.db.read(lambda s: "".join(calls_csv(s, f)))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="call-records-{stamp}.csv"'})


async def supervisor_home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/supervisor/wallboard")


def setup(app: web.Application) -> None:
    app[WALLBOARD_STATE] = {}
    app.cleanup_ctx.append(_broadcaster)
    r = app.router
    r.add_get("/supervisor", supervisor_home)
    r.add_get("/supervisor/wallboard", wallboard_page)
    r.add_get("/supervisor/wallboard.json", wallboard_json)
    r.add_get("/ws/wallboard", wallboard_ws)
    r.add_get("/supervisor/kpi", kpi_page)
    r.add_get("/supervisor/calls", calls_page)
    r.add_get("/supervisor/calls.csv", calls_csv_export)


__all__ = ["setup", "wallboard_snapshot", "mark_dirty"]
