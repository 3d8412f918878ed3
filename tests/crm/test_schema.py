from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from crm_bridge import models as m
from crm_bridge.db import Database, normalize_url
from crm_bridge.errors import CrmConfigError
from crm_bridge.migrate import upgrade_database


def test_migrations_match_models_and_are_rerunnable(db: Database, db_url: str) -> None:
    upgrade_database(db_url)  # second run at the next start is a no-op
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), m.Base.metadata)
        assert diff == []
        tables = set(inspect(conn).get_table_names())
    assert {"customers", "phone_numbers", "accounts", "tickets", "interactions", "call_records", "agents",
            "skills", "agent_skills", "agent_state_events", "queue_events", "outbox", "alembic_version"} <= tables


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError):
        db.run_sync(lambda s: (s.add(m.PhoneNumber(e164="+390000000", customer_id=999)), s.flush()))


def test_phone_numbers_are_unique(db: Database) -> None:
    def add(s):  # type: ignore[no-untyped-def]
        c = m.Customer(name="A B")
        s.add(c)
        s.flush()
        s.add_all([m.PhoneNumber(e164="+393331112222", customer_id=c.id),
                   m.PhoneNumber(e164="+393331112222", customer_id=c.id)])
        s.flush()
    with pytest.raises(IntegrityError):
        db.run_sync(add)


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade_database(url)
    database = Database.from_url(url)
    try:
        with database.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        database.close()


def test_naive_datetimes_are_refused(db: Database) -> None:
    from datetime import datetime
    with pytest.raises(Exception, match="naive datetime"):
        db.run_sync(lambda s: (s.add(m.Customer(name="x", created_at=datetime(2024, 1, 1))), s.flush()))


def test_url_normalisation() -> None:
    assert normalize_url("postgresql://u:p@h:5/db").startswith("postgresql+psycopg://u:p@h:5/db")
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(CrmConfigError, match="not valid"):
        normalize_url("not a url")
