"""The admin API under ``/api/v1`` (``Authorization: Bearer <admin token>``), described by ``openapi.json``.

Request bodies are pydantic models: their JSON schemas are the OpenAPI components, so the description cannot
drift from what the handlers accept. Errors are ``{"error": "..."}`` with a message saying what to change.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import wave
from typing import Any, Literal

import numpy as np
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from .. import models as m
from ..crm import customer_from_row
from ..masking import mask_iban
from ..security import hash_secret
from .app import json_error, now_of, require_admin
from .deps import DEPS
from .importer import ImportFormatError, import_phones, normalise_phone, read_rows
from .records import FilterError, calls_csv, list_calls, parse_filter

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_WAV_BYTES = 20 * 1024 * 1024


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PhoneIn(_In):
    number: str = Field(min_length=3, max_length=32, description="E.164 (+39...) or national in `region`")
    label: str | None = Field(None, max_length=50)
    region: str = Field("IT", min_length=2, max_length=2)


class CustomerCreate(_In):
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    segment: Literal["retail", "business", "critical"] = "retail"
    language: Literal["it", "en"] = "it"
    account_number: str | None = Field(None, pattern=r"^\d{6,20}$")
    pin: str | None = Field(None, pattern=r"^\d{4,8}$", description="stored as an argon2 hash only")
    external_id: str | None = Field(None, max_length=128)
    phones: list[PhoneIn] = Field(default_factory=list, max_length=20)


class CustomerUpdate(_In):
    first_name: str | None = Field(None, min_length=1, max_length=100)
    last_name: str | None = Field(None, min_length=1, max_length=100)
    segment: Literal["retail", "business", "critical"] | None = None
    language: Literal["it", "en"] | None = None
    pin: str | None = Field(None, pattern=r"^\d{4,8}$")
    unlock: bool | None = Field(None, description="true clears PIN failures and the lock")


class AgentCreate(_In):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    name: str = Field(min_length=1, max_length=200)
    login: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=8, max_length=256)
    extension: str | None = Field(None, max_length=32)
    sip_uri: str | None = Field(None, max_length=255)
    supervisor: bool = False
    skills: dict[str, int] = Field(default_factory=dict, description="skill name -> level 1..10")


class AgentUpdate(_In):
    name: str | None = Field(None, min_length=1, max_length=200)
    password: str | None = Field(None, min_length=8, max_length=256)
    extension: str | None = Field(None, max_length=32)
    sip_uri: str | None = Field(None, max_length=255)
    active: bool | None = None
    supervisor: bool | None = None
    skills: dict[str, int] | None = None


class SkillCreate(_In):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")
    description: str | None = Field(None, max_length=255)


REQUEST_MODELS: list[type[BaseModel]] = [PhoneIn, CustomerCreate, CustomerUpdate, AgentCreate, AgentUpdate,
                                         SkillCreate]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body must be JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, problems) from None


def _int_id(request: web.Request, key: str) -> int:
    raw = request.match_info[key]
    if not raw.isdigit():
        raise ApiError(404, f"{key} must be a number")
    return int(raw)


def api_handler(fn: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        require_admin(request)
        try:
            return await fn(request)
        except ApiError as exc:
            return json_error(exc.status, str(exc))
        except FilterError as exc:
            return json_error(400, str(exc))
    wrapped.__name__ = fn.__name__
    return wrapped


# ------------------------------------------------------------------------------------------- customers

def _customer_out(row: m.Customer) -> dict[str, Any]:
    c = customer_from_row(row)
    return {"id": row.id, "name": c.name, "first_name": c.first_name, "last_name": c.last_name,
            "segment": c.segment, "language": c.language, "account_number": c.account_number,
            "external_id": c.external_id, "has_pin": row.pin_hash is not None,
            "locked": row.locked_until is not None,
            "phones": [{"e164": p.e164, "label": p.label, "verified": p.verified} for p in row.phone_numbers],
            "accounts": [{"iban": mask_iban(a.iban_masked) if "*" not in a.iban_masked else a.iban_masked,
                          "balance_bucket": a.balance_bucket, "products": list(a.products or [])}
                         for a in row.accounts]}


def _customer_q():  # type: ignore[no-untyped-def]
    return select(m.Customer).options(selectinload(m.Customer.phone_numbers), selectinload(m.Customer.accounts))


@api_handler
async def list_customers(request: web.Request) -> web.Response:
    q = request.query
    text = (q.get("q") or "").strip()[:100]
    phone = q.get("phone")
    try:
        limit = min(500, max(1, int(q.get("limit", 50))))
        offset = max(0, int(q.get("offset", 0)))
    except ValueError:
        raise ApiError(400, "limit and offset must be whole numbers") from None
    e164 = normalise_phone(phone) if phone else None

    def run(s: Session) -> dict[str, Any]:
        query = _customer_q()
        if text:
            like = f"%{text.lower()}%"
            query = query.where(or_(func.lower(m.Customer.name).like(like), m.Customer.account_number == text))
        if e164:
            query = query.join(m.PhoneNumber).where(m.PhoneNumber.e164 == e164)
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = s.scalars(query.order_by(m.Customer.id).limit(limit).offset(offset)).unique()
        return {"total": total, "items": [_customer_out(r) for r in rows]}
    try:
        return web.json_response(await request.app[DEPS].db.read(run))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@api_handler
async def create_customer(request: web.Request) -> web.Response:
    body: CustomerCreate = await _body(request, CustomerCreate)
    deps = request.app[DEPS]
    try:
        phones = [(normalise_phone(p.number, p.region), p.label) for p in body.phones]
    except ValueError as exc:
        raise ApiError(422, f"phones: {exc}") from None
    pin_hash = await asyncio.get_running_loop().run_in_executor(None, hash_secret, body.pin, deps.hasher) \
        if body.pin else None

    def run(s: Session) -> dict[str, Any]:
        row = m.Customer(name=f"{body.first_name} {body.last_name}", first_name=body.first_name,
                         last_name=body.last_name, segment=m.Segment(body.segment), language=body.language,
                         account_number=body.account_number, pin_hash=pin_hash, external_id=body.external_id)
        row.phone_numbers = [m.PhoneNumber(e164=e, label=label) for e, label in phones]
        s.add(row)
        s.flush()
        return _customer_out(s.scalars(_customer_q().where(m.Customer.id == row.id)).one())
    try:
        out = await deps.db.run(run)
    except IntegrityError:
        raise ApiError(409, "account number, external id or a phone number is already used by another customer") \
            from None
    log.info("admin API: customer %s created", out["id"])
    return web.json_response(out, status=201)


async def _load_customer(request: web.Request, cid: int) -> dict[str, Any]:
    out = await request.app[DEPS].db.read(
        lambda s: (lambda r: _customer_out(r) if r else None)(s.scalars(_customer_q().where(m.Customer.id == cid))
                                                              .first()))
    if out is None:
        raise ApiError(404, f"customer {cid} does not exist")
    return out


@api_handler
async def get_customer(request: web.Request) -> web.Response:
    return web.json_response(await _load_customer(request, _int_id(request, "id")))


@api_handler
async def update_customer(request: web.Request) -> web.Response:
    cid = _int_id(request, "id")
    body: CustomerUpdate = await _body(request, CustomerUpdate)
    deps = request.app[DEPS]
    pin_hash = await asyncio.get_running_loop().run_in_executor(None, hash_secret, body.pin, deps.hasher) \
        if body.pin else None

    def run(s: Session) -> bool:
        row = s.get(m.Customer, cid, with_for_update=True)
        if row is None:
            return False
        for key in ("first_name", "last_name", "language"):
            value = getattr(body, key)
            if value is not None:
                setattr(row, key, value)
        if body.segment is not None:
            row.segment = m.Segment(body.segment)
        if body.first_name or body.last_name:
            row.name = f"{row.first_name or ''} {row.last_name or ''}".strip()
        if pin_hash is not None:
            row.pin_hash = pin_hash
        if body.unlock or pin_hash is not None:
            row.pin_failures, row.locked_until = 0, None
        return True
    if not await deps.db.run(run):
        raise ApiError(404, f"customer {cid} does not exist")
    return web.json_response(await _load_customer(request, cid))


@api_handler
async def add_phone(request: web.Request) -> web.Response:
    cid = _int_id(request, "id")
    body: PhoneIn = await _body(request, PhoneIn)
    try:
        e164 = normalise_phone(body.number, body.region)
    except ValueError as exc:
        raise ApiError(422, f"number: {exc}") from None

    def run(s: Session) -> str | None:
        if s.get(m.Customer, cid) is None:
            return "missing"
        owner = s.scalars(select(m.PhoneNumber.customer_id).where(m.PhoneNumber.e164 == e164)).first()
        if owner is not None:
            return None if owner == cid else f"{e164} already belongs to customer {owner}"
        s.add(m.PhoneNumber(e164=e164, customer_id=cid, label=body.label))
        return None
    problem = await request.app[DEPS].db.run(run)
    if problem == "missing":
        raise ApiError(404, f"customer {cid} does not exist")
    if problem:
        raise ApiError(409, problem)
    return web.json_response(await _load_customer(request, cid), status=201)


@api_handler
async def delete_phone(request: web.Request) -> web.Response:
    cid = _int_id(request, "id")
    try:
        e164 = normalise_phone(request.match_info["e164"])
    except ValueError as exc:
        raise ApiError(404, str(exc)) from None

    def run(s: Session) -> bool:
        row = s.scalars(select(m.PhoneNumber).where(m.PhoneNumber.e164 == e164,
                                                    m.PhoneNumber.customer_id == cid)).first()
        if row is None:
            return False
        s.delete(row)
        return True
    if not await request.app[DEPS].db.run(run):
        raise ApiError(404, f"customer {cid} has no number {e164}")
    return web.Response(status=204)


class _DryRun(Exception):
    def __init__(self, report: Any) -> None:
        self.report = report


@api_handler
async def import_phones_csv(request: web.Request) -> web.Response:
    dry_run = request.query.get("dry_run", "").lower() in ("1", "true", "yes")
    region = (request.query.get("region") or "IT").upper()
    if len(region) != 2 or not region.isalpha():
        raise ApiError(400, "region must be a two-letter country code such as IT")
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        data = b""
        while (part := await reader.next()) is not None:
            if getattr(part, "name", None) == "file":
                data = await part.read(decode=False)  # type: ignore[union-attr]
                break
        if not data:
            raise ApiError(400, "send the CSV as the multipart field 'file' (or as a text/csv body)")
    else:
        data = await request.read()
    try:
        rows = read_rows(data)
    except ImportFormatError as exc:
        raise ApiError(400, str(exc)) from None

    def run(s: Session) -> Any:
        report = import_phones(s, rows, region=region, dry_run=dry_run)
        if dry_run:
            raise _DryRun(report)
        return report
    try:
        report = await request.app[DEPS].db.run(run)
    except _DryRun as dry:
        report = dry.report
    log.info("admin API: phone import %s", {k: v for k, v in report.as_dict().items() if k != "errors"})
    return web.json_response(report.as_dict())


# ---------------------------------------------------------------------------------------- agents, skills

def _agent_out(row: m.Agent) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "login": row.login, "extension": row.extension, "sip_uri": row.sip_uri,
            "active": row.active, "supervisor": row.supervisor,
            "skills": {a.skill.name: a.level for a in row.skills}}


def _agent_q():  # type: ignore[no-untyped-def]
    return select(m.Agent).options(selectinload(m.Agent.skills).selectinload(m.AgentSkill.skill))


def _set_skills(s: Session, row: m.Agent, skills: dict[str, int]) -> None:
    bad = {k: v for k, v in skills.items() if not 1 <= int(v) <= 10}
    if bad:
        raise ApiError(422, f"skill levels must be 1..10: {bad}")
    known = {sk.name: sk for sk in s.scalars(select(m.Skill).where(m.Skill.name.in_(list(skills))))}
    unknown = sorted(set(skills) - set(known))
    if unknown:
        raise ApiError(422, f"unknown skills {unknown}: create them with POST {PREFIX}/skills first")
    row.skills = [m.AgentSkill(skill_id=known[name].id, level=int(level)) for name, level in skills.items()]


@api_handler
async def list_agents(request: web.Request) -> web.Response:
    items = await request.app[DEPS].db.read(
        lambda s: [_agent_out(r) for r in s.scalars(_agent_q().order_by(m.Agent.id))])
    return web.json_response({"items": items})


@api_handler
async def create_agent(request: web.Request) -> web.Response:
    body: AgentCreate = await _body(request, AgentCreate)
    deps = request.app[DEPS]
    pw = await asyncio.get_running_loop().run_in_executor(None, hash_secret, body.password, deps.hasher)

    def run(s: Session) -> dict[str, Any]:
        row = m.Agent(id=body.id, name=body.name, login=body.login, password_hash=pw, extension=body.extension,
                      sip_uri=body.sip_uri, supervisor=body.supervisor, active=True)
        s.add(row)
        _set_skills(s, row, body.skills)
        s.flush()
        return _agent_out(s.scalars(_agent_q().where(m.Agent.id == row.id)).one())
    try:
        out = await deps.db.run(run)
    except IntegrityError:
        raise ApiError(409, f"an agent with id {body.id!r} or login {body.login!r} already exists") from None
    log.info("admin API: agent %s created", body.id)
    return web.json_response(out, status=201)


@api_handler
async def update_agent(request: web.Request) -> web.Response:
    agent_id = request.match_info["id"]
    body: AgentUpdate = await _body(request, AgentUpdate)
    deps = request.app[DEPS]
    pw = await asyncio.get_running_loop().run_in_executor(None, hash_secret, body.password, deps.hasher) \
        if body.password else None

    def run(s: Session) -> dict[str, Any] | None:
        row = s.scalars(_agent_q().where(m.Agent.id == agent_id)).first()
        if row is None:
            return None
        for key in ("name", "extension", "sip_uri", "active", "supervisor"):
            value = getattr(body, key)
            if value is not None:
                setattr(row, key, value)
        if pw is not None:
            row.password_hash = pw
        if body.skills is not None:
            _set_skills(s, row, body.skills)
        s.flush()
        s.refresh(row)
        return _agent_out(row)
    out = await deps.db.run(run)
    if out is None:
        raise ApiError(404, f"agent {agent_id} does not exist")
    return web.json_response(out)


@api_handler
async def list_skills(request: web.Request) -> web.Response:
    items = await request.app[DEPS].db.read(lambda s: [{"id": k.id, "name": k.name, "description": k.description}
                                                       for k in s.scalars(select(m.Skill).order_by(m.Skill.name))])
    return web.json_response({"items": items})


@api_handler
async def create_skill(request: web.Request) -> web.Response:
    body: SkillCreate = await _body(request, SkillCreate)

    def run(s: Session) -> dict[str, Any]:
        row = m.Skill(name=body.name, description=body.description)
        s.add(row)
        s.flush()
        return {"id": row.id, "name": row.name, "description": row.description}
    try:
        return web.json_response(await request.app[DEPS].db.run(run), status=201)
    except IntegrityError:
        raise ApiError(409, f"skill {body.name!r} already exists") from None


# ------------------------------------------------------------------------------------- voice enrollment

def read_wav(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV (any rate, mono or stereo mixed down) as float32 in [-1, 1]."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise ApiError(422, f"{name}: not a PCM WAV file ({exc})") from None
    if width != 2:
        raise ApiError(422, f"{name}: {8 * width}-bit samples; convert to 16-bit PCM WAV")
    if not 8000 <= rate <= 48000:
        raise ApiError(422, f"{name}: sample rate {rate} Hz; use 8000..48000 Hz")
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        pcm = pcm[: len(pcm) - len(pcm) % channels].reshape(-1, channels).mean(axis=1)
    if pcm.size < rate // 2:
        raise ApiError(422, f"{name}: shorter than half a second")
    return pcm, rate


@api_handler
async def enroll_voice(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    if deps.voice is None:
        raise ApiError(503, "voice biometrics are not running on this server")
    cid = _int_id(request, "id")
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "send multipart/form-data: 'audio' WAV files and the consent fields")
    fields: dict[str, str] = {}
    recordings: list[tuple[np.ndarray, int]] = []
    reader = await request.multipart()
    total = 0
    while (part := await reader.next()) is not None:
        name = getattr(part, "name", None)
        if name == "audio":
            data = await part.read(decode=False)  # type: ignore[union-attr]
            total += len(data)
            if total > MAX_WAV_BYTES:
                raise ApiError(413, f"recordings over {MAX_WAV_BYTES // (1024 * 1024)} MiB in all")
            recordings.append(read_wav(data, getattr(part, "filename", None) or f"audio #{len(recordings) + 1}"))
        elif name in ("consent", "consent_channel", "actor"):
            fields[name] = (await part.text())[:200]  # type: ignore[union-attr]
    if not recordings:
        raise ApiError(400, "no 'audio' files in the upload")
    if await deps.db.read(lambda s: s.get(m.Customer, cid)) is None:
        raise ApiError(404, f"customer {cid} does not exist")
    actor = f"admin:{fields.get('actor') or 'api'}"
    now = now_of(request)
    store = deps.voice.store
    loop = asyncio.get_running_loop()
    consent = await loop.run_in_executor(None, store.active_consent, str(cid))
    if consent is None:
        if fields.get("consent", "").lower() not in ("true", "yes", "1"):
            raise ApiError(409, "the customer has no recorded consent to voice authentication: send consent=true "
                                "and consent_channel (how it was given) once it was given")
        channel = fields.get("consent_channel") or "written"
        await loop.run_in_executor(None, lambda: store.record_consent(str(cid), channel=channel, actor=actor,
                                                                      now=now))
    try:
        vp, session = await deps.voice.enroll_recordings(str(cid), recordings, actor=actor, now=now)
    except Exception as exc:
        log.warning("voice enrollment of customer %s failed: %s", cid, type(exc).__name__)
        raise ApiError(422, f"enrollment failed: {exc}") from None
    log.info("admin API: customer %s enrolled (%d recordings) by %s", cid, len(recordings), actor)
    return web.json_response({"customer_id": cid, "recordings": len(recordings),
                              "model": getattr(vp, "model", None),
                              "takes_accepted": getattr(session, "takes", None),
                              "flags": sorted(getattr(session, "flags", []) or [])}, status=201)


def _voice_store(request: web.Request) -> Any:
    deps = request.app[DEPS]
    if deps.voice is None:
        raise ApiError(503, "voice biometrics are not running on this server")
    return deps.voice.store


def _admin_actor(request: web.Request) -> str:
    """Who is behind the admin token, for the audit log: the caller's ``X-Actor`` header (an operator name)."""
    name = "".join(ch for ch in request.headers.get("X-Actor", "")[:64] if ch.isprintable()).strip()
    return f"admin:{name or 'api'}"


@api_handler
async def get_voice_enrollment(request: web.Request) -> web.Response:
    """What is held about a customer's voice (never the biometric data itself); the read is audited."""
    store = _voice_store(request)
    cid = _int_id(request, "id")
    deps = request.app[DEPS]
    if await deps.db.read(lambda s: s.get(m.Customer, cid)) is None:
        raise ApiError(404, f"customer {cid} does not exist")
    actor, now = _admin_actor(request), now_of(request)

    def read() -> dict[str, Any]:
        consent = store.active_consent(str(cid))
        models = store.voiceprint_models(str(cid))
        out = {"customer_id": cid,
               "consent": None if consent is None else {"granted_at": consent.granted_at, "channel": consent.channel,
                                                        "actor": consent.actor},
               "voiceprints": [{"model": md, "enrollment_takes": len(store.enrollment_takes(str(cid), md))}
                               for md in models],
               "recent_verifications": [{"call_id": a.call_id, "at": a.at, "decision": a.decision,
                                         "score": a.score, "model": a.model}
                                        for a in store.recent_attempts(str(cid), limit=20)]}
        store.audit(actor, "biometric_data_viewed", str(cid), now, what="enrollment and verifications")
        return out
    return web.json_response(await asyncio.get_running_loop().run_in_executor(None, read))


@api_handler
async def erase_voice_enrollment(request: web.Request) -> web.Response:
    """Right to erasure: consent withdrawn and every biometric copy removed in one transaction, audited."""
    store = _voice_store(request)
    cid = _int_id(request, "id")
    actor, now = _admin_actor(request), now_of(request)
    report = await asyncio.get_running_loop().run_in_executor(
        None, lambda: store.withdraw_consent(str(cid), actor=actor, now=now))
    log.info("admin API: voice data of customer %s erased by %s", cid, actor)
    return web.json_response({"customer_id": cid, "voiceprints": report.voiceprints,
                              "enrollment_takes": report.enrollment_takes,
                              "attempt_embeddings": report.attempt_embeddings})


# ----------------------------------------------------------------------------------- config, calls, KPIs

@api_handler
async def reload_config(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    if deps.reload_config is None:
        raise ApiError(503, "configuration reload is not available on this server")
    ok, problems = await deps.reload_config()
    log.info("admin API: configuration reload %s", "applied" if ok else "refused")
    return web.json_response({"ok": bool(ok), "problems": [str(p) for p in problems]}, status=200 if ok else 422)


@api_handler
async def list_calls_api(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    f = parse_filter(request.query, now=now_of(request), tz=deps.tz)
    total, items = await deps.db.read(lambda s: list_calls(s, f))
    return web.json_response({"total": total, "items": items, "limit": f.limit, "offset": f.offset})


@api_handler
async def calls_csv_api(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    f = parse_filter(request.query, now=now_of(request), tz=deps.tz)
    text = await deps.db.read(lambda s: "".join(calls_csv(s, f)))
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="call-records.csv"'})


@api_handler
async def kpis_api(request: web.Request) -> web.Response:
    from dataclasses import asdict

    from .supervisor import _kpi_params, kpi_data

    deps = request.app[DEPS]
    start, end, group, _, _ = _kpi_params(request)
    reports = await kpi_data(deps, start, end, group, request.query.get("queue") or None,
                             request.query.get("line") or None)
    return web.json_response({"from": start.isoformat(), "to": end.isoformat(), "group_by": group,
                              "groups": [{"key": k, **asdict(r)} for k, r in sorted(
                                  reports.items(), key=lambda kv: "" if kv[0] is None else str(kv[0]))]})


async def openapi_json(request: web.Request) -> web.Response:
    from .openapi import spec

    return web.json_response(spec())


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/customers", list_customers), ("POST", "/customers", create_customer),
    ("GET", "/customers/{id}", get_customer), ("PATCH", "/customers/{id}", update_customer),
    ("POST", "/customers/{id}/phones", add_phone), ("DELETE", "/customers/{id}/phones/{e164}", delete_phone),
    ("POST", "/customers/{id}/voice-enrollment", enroll_voice),
    ("GET", "/customers/{id}/voice-enrollment", get_voice_enrollment),
    ("DELETE", "/customers/{id}/voice-enrollment", erase_voice_enrollment),
    ("POST", "/phones/import", import_phones_csv),
    ("GET", "/agents", list_agents), ("POST", "/agents", create_agent), ("PATCH", "/agents/{id}", update_agent),
    ("GET", "/skills", list_skills), ("POST", "/skills", create_skill),
    ("POST", "/config/reload", reload_config),
    ("GET", "/calls", list_calls_api), ("GET", "/calls.csv", calls_csv_api), ("GET", "/kpis", kpis_api),
    ("GET", "/openapi.json", openapi_json),
]


def setup(app: web.Application) -> None:
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, handler)
