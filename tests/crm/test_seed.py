from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from crm_bridge import models as m
from crm_bridge.crm import SqlCrmAdapter
from crm_bridge.db import Database
from crm_bridge.errors import CrmConfigError
from crm_bridge.security import fast_hasher, verify_secret
from crm_bridge.seed import load_seed, seed_demo

H = fast_hasher()


async def test_demo_seed_is_complete_and_idempotent(db: Database) -> None:
    first = db.run_sync(lambda s: seed_demo(s, hasher=H))
    assert first.customers_added == 15 and first.agents_added == 2 and first.phones_added >= 15
    again = db.run_sync(lambda s: seed_demo(s, hasher=H))
    assert (again.customers_added, again.phones_added, again.agents_added, again.skills_added) == (0, 0, 0, 0)
    counts = db.run_sync(lambda s: {t: s.scalar(select(func.count()).select_from(t))
                                    for t in (m.Customer, m.Ticket, m.Interaction, m.Agent)})
    assert counts[m.Customer] == 15 and counts[m.Agent] == 2 and counts[m.Ticket] >= 3
    crm = SqlCrmAdapter(db, hasher=H)
    giulia = await crm.lookup_by_phone("+393471000001")
    assert giulia is not None and giulia.name == "Giulia Bianchi" and giulia.language == "it"
    assert giulia.accounts[0].iban_masked.startswith("IT60") and "0542811101" not in giulia.accounts[0].iban_masked
    assert len(await crm.open_tickets(giulia.id)) == 1 and len(await crm.recent_contacts(giulia.id)) == 1
    pin = await crm.verify_pin("10000001", "1357")  # documented in the seed file header
    assert pin.ok and pin.customer is not None and pin.customer.id == giulia.id
    segments = db.run_sync(lambda s: {c.segment for c in s.scalars(select(m.Customer))})
    assert segments == {m.Segment.RETAIL, m.Segment.BUSINESS, m.Segment.CRITICAL}
    agent = db.run_sync(lambda s: s.scalars(select(m.Agent).where(m.Agent.login == "a.ferrari")).one())
    assert verify_secret(agent.password_hash, "demo-agent-1", H) and "demo" not in agent.password_hash
    levels = db.run_sync(lambda s: {a.skill.name: a.level for a in s.get(m.Agent, "agent-1").skills})
    assert levels["cards"] == 8


def test_bad_seed_files_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("customers:\n  - {first_name: A, last_name: B, segment: vip, language: it, "
                   "account_number: '1234567', pin: '1234', phones: [{e164: '+39123'}]}\n")
    with pytest.raises(CrmConfigError) as err:
        load_seed(bad)
    assert "segment" in str(err.value) and "e164" in str(err.value)
    with pytest.raises(CrmConfigError, match="cannot read"):
        load_seed(tmp_path / "missing.yaml")
