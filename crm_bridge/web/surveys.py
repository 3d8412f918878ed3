"""Survey results in the admin API (``/api/v1/surveys``, bearer token) and on the supervisor pages
(``/supervisor/surveys``): distribution per question, response rate, CSAT by queue / agent / service / line, and
the CSV export.

Labels, the order of the questions and which question is the CSAT one come from the survey scripts
(``ivr.survey.script``), read again only when their files change. A response stored for a script that is gone
or broken still counts: its questions show by id, and everything but CSAT (which needs the script to say which
question and scale) is computed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select

from .. import models as m
from .. import surveys as sv
from .api import PREFIX, ApiError, api_handler
from .app import get_session, require_supervisor_or_admin
from .charts import Series, bar_chart
from .deps import DEPS, WebDeps
from .pages import html_response, layout, supervisor_nav
from .records import FilterError, parse_when

log = logging.getLogger(__name__)

DEFAULT_SURVEYS_DIR = Path(__file__).resolve().parents[2] / "config" / "surveys"
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
GROUP_TITLES = {"queue": "Queue", "agent": "Agent", "service": "Service", "line": "Line"}


# ------------------------------------------------------------------------------------------ scripts

@dataclass(frozen=True)
class QuestionInfo:
    id: str
    kind: str
    text: str
    options: dict[str, str]
    """digit -> label, in keypad order"""


@dataclass(frozen=True)
class ScriptInfo:
    """What the results need of a survey script."""

    name: str
    title: str
    questions: tuple[QuestionInfo, ...]
    csat_question: str | None
    csat_scale: tuple[int, int] | None
    opt_out_digit: str | None = None

    def question(self, qid: str) -> QuestionInfo | None:
        return next((q for q in self.questions if q.id == qid), None)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "csat_question": self.csat_question,
                "csat_scale": list(self.csat_scale) if self.csat_scale else None,
                "opt_out_digit": self.opt_out_digit,
                "questions": [{"id": q.id, "kind": q.kind, "text": q.text, "options": q.options}
                              for q in self.questions]}


def _prompt_text(prompt: Any, languages: tuple[str, ...]) -> str:
    variants = getattr(prompt, "variants", None)
    if isinstance(variants, dict) or hasattr(variants, "get"):
        for lang in (*languages, "*", *list(variants)):
            v = variants.get(lang)
            text = getattr(v, "text", None) if v is not None else None
            if text:
                return str(text)
    return ""


def script_info(script: Any) -> ScriptInfo:
    """A loaded ``SurveyScript`` as the results pages use it."""
    languages = tuple(getattr(script, "languages", ()) or ())
    questions = []
    for q in script.questions:
        kind = getattr(q.kind, "value", q.kind)
        options = {str(d): str(getattr(o, "label", d)) for d, o in dict(q.options).items()}
        questions.append(QuestionInfo(q.id, str(kind), _prompt_text(q.text, languages), options))
    try:
        scale = script.csat_scale()
    except (KeyError, ValueError, TypeError):
        scale = None
    return ScriptInfo(script.name, script.title or script.name, tuple(questions), script.csat_question, scale,
                      getattr(script, "opt_out_digit", None))


@dataclass
class ScriptCatalogue:
    """The scripts of ``directory``, loaded again when a file changes. A broken file does not hide the good
    ones: they are loaded one by one and the problems kept for the page."""

    directory: Path
    _stamp: Any = None
    _scripts: dict[str, ScriptInfo] = field(default_factory=dict)
    _problems: list[str] = field(default_factory=list)

    def _files_stamp(self) -> tuple:
        if not self.directory.is_dir():
            return ()
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.directory.glob("*.y*ml")))

    def scripts(self) -> tuple[dict[str, ScriptInfo], list[str]]:
        try:
            stamp = self._files_stamp()
        except OSError as exc:
            return {}, [f"{self.directory}: {exc}"]
        if stamp != self._stamp:
            self._scripts, self._problems = self._load()
            self._stamp = stamp
        return self._scripts, self._problems

    def _load(self) -> tuple[dict[str, ScriptInfo], list[str]]:
        try:
            from ivr.errors import ConfigError
            from ivr.survey import script as loader
        except ImportError as exc:
            return {}, [f"the survey package is not installed ({exc}): questions are shown by id"]
        try:
            return {n: script_info(s) for n, s in loader.load_survey_scripts(self.directory).items()}, []
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
        out: dict[str, ScriptInfo] = {}
        one = getattr(loader, "load_survey_script", None)
        if one is not None:
            for f in sorted(self.directory.glob("*.y*ml")):
                try:
                    s = one(f)
                except ConfigError:
                    continue
                out.setdefault(s.name, script_info(s))
        log.warning("survey scripts in %s have problems: %s", self.directory, "; ".join(problems))
        return out, problems


SCRIPTS = web.AppKey("survey_scripts", ScriptCatalogue)


def _catalogue(request: web.Request) -> ScriptCatalogue:
    return request.app[SCRIPTS]


# ------------------------------------------------------------------------------------------ queries

@dataclass(frozen=True)
class ResultFilter:
    since: datetime | None = None
    until: datetime | None = None
    channel: str | None = None
    campaign_id: int | None = None


def filter_query(raw: dict[str, str]) -> str:
    """The filters of a page's query string, for its CSV link."""
    return urlencode({k: v for k, v in raw.items() if k in ("since", "until", "channel", "campaign_id") and v})


def parse_result_filter(q: Any, tz: str) -> ResultFilter:
    """``since`` / ``until``: a local day (``until`` inclusive) or an ISO date-time; ``channel``
    ``post_call`` / ``outbound``; ``campaign_id``."""
    zone = ZoneInfo(tz)
    since = parse_when(q["since"], zone) if q.get("since") else None
    until = parse_when(q["until"], zone, end=True) if q.get("until") else None
    if since is not None and until is not None and until <= since:
        raise FilterError("'until' must be after 'since'")
    channel = q.get("channel") or None
    if channel is not None and channel not in {c.value for c in sv.SurveyChannel}:
        raise FilterError("channel must be post_call or outbound")
    raw = q.get("campaign_id") or ""
    if raw and not raw.isdigit():
        raise FilterError("campaign_id must be a whole number")
    return ResultFilter(since, until, channel, int(raw) if raw else None)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise ApiError(404, f"{name!r} is not a survey name (letters, digits, '_', '-', '.')")
    return name


async def _agent_names(deps: WebDeps) -> dict[str, str]:
    col = m.Agent.extension if deps.agent_key == "extension" else m.Agent.id
    rows = await deps.db.read(lambda s: s.execute(select(col, m.Agent.name)).all())
    return {str(k): n for k, n in rows if k}


async def results_for(deps: WebDeps, name: str, script: ScriptInfo | None, f: ResultFilter) -> dict[str, Any]:
    data = await deps.db.read(lambda s: sv.survey_results(
        s, name, since=f.since, until=f.until, channel=f.channel, campaign_id=f.campaign_id,
        csat_question=script.csat_question if script else None,
        csat_scale=script.csat_scale if script else None))
    data["title"] = script.title if script else name
    data["script"] = script.as_dict() if script else None
    data["agent_names"] = await _agent_names(deps)
    return data


async def survey_catalogue(request: web.Request) -> list[dict[str, Any]]:
    """Every survey that has a script or responses, with its counts."""
    scripts, _ = _catalogue(request).scripts()
    stored = {x["survey"]: x for x in await request.app[DEPS].db.read(sv.list_surveys)}
    out = []
    for name in sorted(set(scripts) | set(stored)):
        st = stored.get(name, {})
        script = scripts.get(name)
        out.append({"survey": name, "title": script.title if script else name, "script": script is not None,
                    "questions": len(script.questions) if script else None,
                    "csat_question": script.csat_question if script else None,
                    "responses": st.get("responses", 0), "answered": st.get("answered", 0),
                    "completed": st.get("completed", 0), "first_at": st.get("first_at"),
                    "last_at": st.get("last_at")})
    return out


async def _known(request: web.Request, name: str) -> ScriptInfo | None:
    scripts, _ = _catalogue(request).scripts()
    script = scripts.get(name)
    if script is None:
        stored = await request.app[DEPS].db.read(sv.list_surveys)
        if not any(x["survey"] == name for x in stored):
            raise ApiError(404, f"survey {name!r} has neither a script in the surveys folder nor responses")
    return script


def _csv_response(name: str, text: str) -> web.Response:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="survey-{name}-{stamp}.csv"'})


async def _csv_text(request: web.Request, name: str, script: ScriptInfo | None, f: ResultFilter) -> str:
    questions = [q.id for q in script.questions] if script else None
    return await request.app[DEPS].db.read(lambda s: sv.results_csv(
        s, name, since=f.since, until=f.until, channel=f.channel, campaign_id=f.campaign_id, questions=questions))


# ------------------------------------------------------------------------------------------ admin API

@api_handler
async def list_surveys(request: web.Request) -> web.Response:
    _, problems = _catalogue(request).scripts()
    return web.json_response({"items": await survey_catalogue(request), "script_problems": problems})


@api_handler
async def get_results(request: web.Request) -> web.Response:
    name = _name(request)
    f = parse_result_filter(request.query, request.app[DEPS].tz)
    script = await _known(request, name)
    return web.json_response(await results_for(request.app[DEPS], name, script, f))


@api_handler
async def get_results_csv(request: web.Request) -> web.Response:
    name = _name(request)
    f = parse_result_filter(request.query, request.app[DEPS].tz)
    script = await _known(request, name)
    return _csv_response(name, await _csv_text(request, name, script, f))


ROUTES = [
    ("GET", "/surveys", list_surveys),
    ("GET", "/surveys/{name}/results", get_results),
    ("GET", "/surveys/{name}/results.csv", get_results_csv),
]


# ------------------------------------------------------------------------------------------ supervisor pages

def _pct(v: float | None, *, ratio: bool = True) -> str:
    if v is None:
        return "–"
    return f"{v * 100:.1f} %" if ratio else f"{v:.1f} %"


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def surveys_index_html(items: list[dict[str, Any]], problems: list[str]) -> str:
    rows = []
    for it in items:
        rate = it["answered"] / it["responses"] if it["responses"] else None
        link = f'/supervisor/surveys/{escape(it["survey"])}'
        rows.append(f'<tr data-survey="{escape(it["survey"])}"><td><a href="{link}">{escape(it["survey"])}</a></td>'
                    f'<td>{escape(it["title"])}</td><td>{_num(it["questions"])}</td><td>{it["responses"]}</td>'
                    f'<td>{it["answered"]}</td><td>{it["completed"]}</td><td>{_pct(rate)}</td>'
                    f'<td>{escape((it["last_at"] or "")[:16].replace("T", " "))}</td></tr>')
    warn = "".join(f'<p class="error">{escape(p)}</p>' for p in problems)
    return (f'<section><h1>Customer-satisfaction surveys</h1>{warn}<table class="kpi" id="surveys">'
            f'<thead><tr><th>Survey</th><th>Title</th><th>Questions</th><th>Offered</th><th>Answered</th>'
            f'<th>Completed</th><th>Response rate</th><th>Last response (UTC)</th></tr></thead>'
            f'<tbody>{"".join(rows) or "<tr><td colspan=8>No survey scripts and no responses yet.</td></tr>"}'
            f'</tbody></table></section>')


def _option_rows(q: QuestionInfo | None, counts: dict[str, int],
                 opt_out_digit: str | None) -> list[tuple[str, str, int]]:
    """(digit, label, count): the script's options in keypad order (zero counts too), then digits it does not
    know (an opt-out key, an option removed since)."""
    rows = [(d, label, counts.get(d, 0)) for d, label in (q.options.items() if q else ())]
    known = {d for d, _, _ in rows}
    for d in sorted(set(counts) - known):
        rows.append((d, "opt-out" if d == opt_out_digit else (d if q is None else f"{d} (not in the script)"),
                     counts[d]))
    return rows


def _question_html(qid: str, q: QuestionInfo | None, counts: dict[str, int], csat: bool,
                   opt_out_digit: str | None) -> str:
    rows = _option_rows(q, counts, opt_out_digit)
    total = sum(c for _, _, c in rows)
    body = "".join(f'<tr data-digit="{escape(d)}"><td>{escape(label)}</td><td>{escape(d)}</td><td>{c}</td>'
                   f'<td>{_pct(c / total if total else None)}</td></tr>' for d, label, c in rows)
    chart = bar_chart(f"{qid}: answers", [label for _, label, _ in rows],
                      [Series("answers", [c for _, _, c in rows], "s-answered")], width=420, height=200) \
        if rows else ""
    title = f"{qid} — {q.text}" if q and q.text else qid
    kind = f' <span class="hint">{escape(q.kind)}{", CSAT question" if csat else ""}</span>' if q else ""
    return (f'<section class="question" id="q-{escape(qid)}"><h2>{escape(title)}{kind}</h2>'
            f'<div class="cols"><table class="kpi dist" id="dist-{escape(qid)}"><thead><tr><th>Answer</th>'
            f'<th>Key</th><th>Count</th><th>Share</th></tr></thead><tbody>{body}</tbody>'
            f'<tfoot><tr><td>Answered</td><td></td><td>{total}</td><td></td></tr></tfoot></table>'
            f'<div>{chart}</div></div></section>')


def _csat_table(group: str, cells: dict[str, dict[str, Any]], agent_names: dict[str, str]) -> str:
    rows = []
    for key, c in cells.items():
        label = f"{agent_names[key]} ({key})" if group == "agent" and key in agent_names else key
        rows.append(f'<tr data-key="{escape(key)}"><td>{escape(label)}</td><td>{c["responses"]}</td>'
                    f'<td>{c["satisfied"]}</td><td class="csat">{_pct(c["csat"], ratio=False)}</td>'
                    f'<td>{_num(c["mean"])}</td></tr>')
    return (f'<table class="kpi csat-by" id="csat-{group}"><thead><tr><th>{GROUP_TITLES[group]}</th>'
            f'<th>Responses</th><th>Satisfied</th><th>CSAT</th><th>Mean</th></tr></thead>'
            f'<tbody>{"".join(rows) or "<tr><td colspan=5>No answers.</td></tr>"}</tbody></table>')


def results_html(data: dict[str, Any], *, name: str, raw_query: dict[str, str], problems: list[str]) -> str:
    script = data["script"]
    info = None
    if script:
        info = ScriptInfo(script["name"], script["title"],
                          tuple(QuestionInfo(q["id"], q["kind"], q["text"], q["options"])
                                for q in script["questions"]),
                          script["csat_question"], tuple(script["csat_scale"]) if script["csat_scale"] else None,
                          script["opt_out_digit"])
    f = data["filters"]
    sel = {c: " selected" if raw_query.get("channel") == c else "" for c in ("", "post_call", "outbound")}
    qs = filter_query(raw_query)
    form = (f'<form method="get" class="filters">'
            f'<label>Since <input type="date" name="since" value="{escape(raw_query.get("since", ""))}"></label>'
            f'<label>Until <input type="date" name="until" value="{escape(raw_query.get("until", ""))}"></label>'
            f'<label>Channel <select name="channel"><option value=""{sel[""]}>all</option>'
            f'<option value="post_call"{sel["post_call"]}>after a call</option>'
            f'<option value="outbound"{sel["outbound"]}>outbound campaigns</option></select></label>'
            f'<label>Campaign <input name="campaign_id" size="6" value="{escape(raw_query.get("campaign_id", ""))}">'
            f'</label><button type="submit">Show</button> '
            f'<a id="csv-export" href="/supervisor/surveys/{escape(name)}/results.csv{"?" + escape(qs) if qs else ""}">'
            f'Export responses (CSV)</a></form>')
    warn = "".join(f'<p class="error">{escape(p)}</p>' for p in problems)
    if info is None:
        warn += (f'<p class="crm-warn" id="no-script">No script named {escape(name)!s} in the surveys folder: '
                 'questions are shown by id and CSAT cannot be computed (the script says which question and '
                 'scale).</p>')
    csat = data["csat"]
    tiles = [("Offered", str(data["offered"]), "t-offered"),
             ("Answered", f'{data["answered"]} ({_pct(data["response_rate"])})', "t-answered"),
             ("Completed", f'{data["completed"]} ({_pct(data["completion_rate"])})', "t-completed"),
             ("Opted out", str(data["opted_out"]), "t-opted-out"),
             ("CSAT", _pct(csat["csat"], ratio=False) if csat else "–", "t-csat"),
             ("Mean rating", _num(csat["mean"]) if csat else "–", "t-mean")]
    tiles_html = "".join(f'<div class="tile"><span class="num" id="{tid}">{escape(v)}</span>{escape(label)}</div>'
                         for label, v, tid in tiles)
    order = [q.id for q in info.questions] if info else []
    order += sorted(set(data["distribution"]) - set(order))
    questions = "".join(_question_html(qid, info.question(qid) if info else None, data["distribution"].get(qid, {}),
                                       bool(info and qid == info.csat_question), info.opt_out_digit if info else None)
                        for qid in order)
    csat_part = ""
    if data["csat_by"] is not None:
        lo, hi = data["csat_scale"]
        csat_part = (f'<h2>CSAT by queue, agent, service and line</h2><p class="hint">CSAT = answers to '
                     f'{escape(data["csat_question"])} of {hi - 1} or {hi} on its {lo}-{hi} scale, as a share of '
                     f'the answers to it; mean = their average.</p><div class="cols">'
                     + "".join(_csat_table(g, data["csat_by"][g], data["agent_names"]) for g in GROUP_TITLES)
                     + "</div>")
    period = f'{(f["since"] or "the first response")[:10]} – {(f["until"] or "now")[:10]}'
    note = ('<p class="note hint">Offered: surveys started (after a call or on a campaign call). Answered: at least '
            'one question answered; response rate = answered / offered. Completed: every question answered.</p>')
    return (f'<section><h1>{escape(data["title"])} <span class="hint">({escape(name)}, {escape(period)})</span>'
            f'</h1>{form}{warn}<div class="tiles">{tiles_html}</div>{questions}{csat_part}{note}</section>')


async def surveys_page(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    _, problems = _catalogue(request).scripts()
    items = await survey_catalogue(request)
    return html_response(layout("Surveys", surveys_index_html(items, problems), nav=_nav(request)))


def _nav(request: web.Request) -> str:
    session = get_session(request)
    return supervisor_nav(session.name if session else "admin")


async def survey_page(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    deps = request.app[DEPS]
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise web.HTTPNotFound(text="no such survey")
    try:
        f = parse_result_filter(request.query, deps.tz)
        script = await _known(request, name)
    except FilterError as exc:
        return html_response(layout("Survey results", f'<p class="error">{escape(str(exc))}</p>',
                                    nav=_nav(request)), status=400)
    except ApiError as exc:
        return html_response(layout("Survey results", f'<p class="error">{escape(str(exc))}</p>',
                                    nav=_nav(request)), status=404)
    _, problems = _catalogue(request).scripts()
    data = await results_for(deps, name, script, f)
    body = results_html(data, name=name, raw_query=dict(request.query), problems=problems)
    return html_response(layout(f"Survey {name}", body, nav=_nav(request)))


async def survey_csv_page(request: web.Request) -> web.Response:
    require_supervisor_or_admin(request)
    deps = request.app[DEPS]
    name = request.match_info["name"]
    try:
        if not NAME_RE.match(name):
            raise ApiError(404, "no such survey")
        f = parse_result_filter(request.query, deps.tz)
        script = await _known(request, name)
    except FilterError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except ApiError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    return _csv_response(name, await _csv_text(request, name, script, f))


def setup(app: web.Application) -> None:
    deps = app[DEPS]
    app[SCRIPTS] = ScriptCatalogue(Path(deps.surveys_dir) if deps.surveys_dir else DEFAULT_SURVEYS_DIR)
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, handler)
    app.router.add_get("/supervisor/surveys", surveys_page)
    app.router.add_get("/supervisor/surveys/{name}", survey_page)
    app.router.add_get("/supervisor/surveys/{name}/results.csv", survey_csv_page)


# ------------------------------------------------------------------------------------------ OpenAPI

def openapi_schemas() -> dict[str, Any]:
    csat = {"type": "object", "properties": {"responses": {"type": "integer"}, "satisfied": {"type": "integer"},
                                             "csat": {"type": ["number", "null"], "description": "percent"},
                                             "mean": {"type": ["number", "null"]}}}
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "SurveyCsat": csat,
        "SurveySummary": {"type": "object", "properties": {
            "survey": {"type": "string"}, "title": {"type": "string"}, "script": {"type": "boolean"},
            "questions": {"type": ["integer", "null"]}, "csat_question": {"type": ["string", "null"]},
            "responses": {"type": "integer"}, "answered": {"type": "integer"}, "completed": {"type": "integer"},
            "first_at": {"type": ["string", "null"]}, "last_at": {"type": ["string", "null"]}}},
        "SurveyList": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/SurveySummary"}},
            "script_problems": {"type": "array", "items": {"type": "string"}}}},
        "SurveyResults": {"type": "object", "description": "crm_bridge.surveys.survey_results (formulas there)",
                          "properties": {
            "survey": {"type": "string"}, "title": {"type": "string"}, "filters": {"type": "object"},
            "offered": {"type": "integer"}, "answered": {"type": "integer"}, "completed": {"type": "integer"},
            "partial": {"type": "integer"}, "no_answer": {"type": "integer"}, "opted_out": {"type": "integer"},
            "in_progress": {"type": "integer"}, "by_status": counts,
            "response_rate": {"type": ["number", "null"], "description": "answered / offered"},
            "completion_rate": {"type": ["number", "null"]},
            "distribution": {"type": "object", "description": "question id -> key pressed -> count",
                             "additionalProperties": counts},
            "answers_by_question": counts,
            "csat_question": {"type": ["string", "null"]}, "csat_scale": {"type": ["array", "null"]},
            "csat": {"oneOf": [{"$ref": "#/components/schemas/SurveyCsat"}, {"type": "null"}]},
            "csat_by": {"type": ["object", "null"], "description": "queue / agent / service / line / channel -> "
                                                                  "key -> CSAT"},
            "script": {"type": ["object", "null"], "description": "questions with their labels"},
            "agent_names": {"type": "object", "additionalProperties": {"type": "string"}}}},
    }


def openapi_paths() -> dict[str, Any]:
    err = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": NAME_RE.pattern}}
    filters = [
        {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "first local day (YYYY-MM-DD) or ISO date-time; default: the first response"},
        {"name": "until", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "last local day (inclusive) or ISO date-time; default: now"},
        {"name": "channel", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["post_call", "outbound"]}},
        {"name": "campaign_id", "in": "query", "required": False, "schema": {"type": "integer"}}]
    return {
        "/surveys": {"get": {
            "summary": "Survey scripts and surveys with responses, with their counts", "operationId": "listSurveys",
            "responses": {"200": {"description": "surveys", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/SurveyList"}}}}, "401": err}}},
        "/surveys/{name}/results": {"parameters": [name], "get": {
            "summary": "Results: distribution per question, response rate, CSAT by queue/agent/service/line",
            "operationId": "getSurveyResults", "parameters": filters,
            "responses": {"200": {"description": "results", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/SurveyResults"}}}},
                "400": err, "401": err, "404": err}}},
        "/surveys/{name}/results.csv": {"parameters": [name], "get": {
            "summary": "Responses as CSV, one row per response with its answers as columns",
            "operationId": "getSurveyResultsCsv", "parameters": filters,
            "responses": {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                          "400": err, "401": err, "404": err}}},
    }
