"""Campaign tests share the CRM's database fixtures: every storage test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crm_bridge.db import Database
from crm_bridge.migrate import upgrade_database
from tests.crm.conftest import db_url  # noqa: F401  (the sqlite/postgres parametrised URL)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:  # noqa: F811
    upgrade_database(db_url)
    database = Database.from_url(db_url, workers=2)
    try:
        yield database
    finally:
        database.close()

