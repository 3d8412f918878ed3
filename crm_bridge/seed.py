"""Demo data: Italian bank customers, their numbers, accounts, tickets and history, and two desktop agents.

``seed_demo`` is idempotent: customers are keyed by account number, phones by E.164, agents by login and skills
by name; existing rows are left as they are, so running it at every start of a demo server is safe.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import phonenumbers
import yaml
from argon2 import PasswordHasher
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import models as m
from .coltypes import utcnow
from .errors import CrmConfigError
from .masking import mask_iban
from .security import hash_secret

log = logging.getLogger(__name__)

DEMO_SEED = Path(__file__).resolve().parents[1] / "config" / "demo_customers.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhoneIn(_Strict):
    e164: str
    label: str | None = None

    @field_validator("e164")
    @classmethod
    def _e164(cls, v: str) -> str:
        try:
            n = phonenumbers.parse(v)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"{v!r} is not a phone number in E.164 (+39...): {exc}") from exc
        if not phonenumbers.is_valid_number(n):
            raise ValueError(f"{v!r} is not a valid number")
        return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)


class AccountIn(_Strict):
    iban: str
    balance_bucket: str | None = None
    products: list[str] = Field(default_factory=list)


class TicketIn(_Strict):
    service: str
    status: Literal["open", "pending", "closed"] = "open"
    notes: str | None = None
    days_ago: float = 0


class InteractionIn(_Strict):
    summary: str
    days_ago: float = 0
    channel: str = "voice"
    direction: Literal["inbound", "outbound"] = "inbound"
    agent: str | None = None


class CustomerIn(_Strict):
    first_name: str
    last_name: str
    segment: m.Segment
    language: Literal["it", "en"]
    account_number: str = Field(pattern=r"^\d{6,20}$")
    pin: str = Field(pattern=r"^\d{4,8}$")
    phones: list[PhoneIn] = Field(default_factory=list)
    accounts: list[AccountIn] = Field(default_factory=list)
    tickets: list[TicketIn] = Field(default_factory=list)
    interactions: list[InteractionIn] = Field(default_factory=list)


class SkillIn(_Strict):
    name: str
    description: str | None = None


class AgentIn(_Strict):
    id: str
    name: str
    login: str
    password: str = Field(min_length=8)
    extension: str | None = None
    sip_uri: str | None = None
    skills: dict[str, int] = Field(default_factory=dict)


class SeedFile(_Strict):
    customers: list[CustomerIn] = Field(default_factory=list)
    skills: list[SkillIn] = Field(default_factory=list)
    agents: list[AgentIn] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SeedResult:
    customers_added: int
    phones_added: int
    agents_added: int
    skills_added: int


def load_seed(path: Path = DEMO_SEED) -> SeedFile:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return SeedFile.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise CrmConfigError(f"cannot read seed file {path}: {exc}") from exc
    except ValidationError as exc:
        raise CrmConfigError(f"seed file {path} is invalid:\n{exc}") from exc


def seed_demo(session: Session, path: Path = DEMO_SEED, *, hasher: PasswordHasher | None = None,
              now: datetime | None = None) -> SeedResult:
    """Insert what is missing from the seed file into the session's transaction (idempotent)."""
    data = load_seed(path)
    now = now or utcnow()
    customers = phones = agents = skills = 0
    for c in data.customers:
        row = session.scalars(select(m.Customer).where(m.Customer.account_number == c.account_number)).first()
        if row is None:
            row = m.Customer(name=f"{c.first_name} {c.last_name}", first_name=c.first_name, last_name=c.last_name,
                             segment=c.segment, language=c.language, account_number=c.account_number,
                             pin_hash=hash_secret(c.pin, hasher), created_at=now)
            row.accounts = [m.Account(iban_masked=mask_iban(a.iban), balance_bucket=a.balance_bucket,
                                      products=list(a.products)) for a in c.accounts]
            session.add(row)
            session.flush()
            customers += 1
            for t in c.tickets:
                at = now - timedelta(days=t.days_ago)
                session.add(m.Ticket(customer_id=row.id, service=t.service, status=m.TicketStatus(t.status),
                                     notes=t.notes, created_at=at, updated_at=at,
                                     closed_at=at if t.status == "closed" else None))
            for i in c.interactions:
                session.add(m.Interaction(customer_id=row.id, summary=i.summary, channel=i.channel,
                                          direction=i.direction, agent_id=i.agent,
                                          at=now - timedelta(days=i.days_ago)))
        for p in c.phones:
            if session.scalars(select(m.PhoneNumber.id).where(m.PhoneNumber.e164 == p.e164)).first() is None:
                session.add(m.PhoneNumber(e164=p.e164, customer_id=row.id, label=p.label, verified=True))
                phones += 1
    by_name: dict[str, m.Skill] = {s.name: s for s in session.scalars(select(m.Skill))}
    for s in data.skills:
        if s.name not in by_name:
            by_name[s.name] = m.Skill(name=s.name, description=s.description)
            session.add(by_name[s.name])
            skills += 1
    session.flush()
    for a in data.agents:
        if session.scalars(select(m.Agent.id).where(m.Agent.login == a.login)).first() is not None:
            continue
        unknown = set(a.skills) - set(by_name)
        if unknown:
            raise CrmConfigError(f"agent {a.login} has skills {sorted(unknown)} that the seed file does not define")
        agent = m.Agent(id=a.id, name=a.name, login=a.login, password_hash=hash_secret(a.password, hasher),
                        extension=a.extension, sip_uri=a.sip_uri)
        agent.skills = [m.AgentSkill(skill_id=by_name[name].id, level=level) for name, level in a.skills.items()]
        session.add(agent)
        agents += 1
    session.flush()
    return SeedResult(customers, phones, agents, skills)


def main(argv: list[str] | None = None) -> int:
    from .db import Database
    from .migrate import upgrade_database

    parser = argparse.ArgumentParser(prog="python -m crm_bridge.seed",
                                     description="Create/upgrade the database and load the demo customers")
    parser.add_argument("url", nargs="?", default="sqlite:///var/contact-server.db")
    parser.add_argument("--file", type=Path, default=DEMO_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    upgrade_database(args.url)
    db = Database.from_url(args.url)
    try:
        result = db.run_sync(lambda s: seed_demo(s, args.file))
    finally:
        db.close()
    log.info("seeded: %s", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
