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
    _campaign_tables(db_url)
    database = Database.from_url(db_url, workers=2)
    try:
        yield database
    finally:
        database.close()


def _campaign_tables(url: str) -> None:
    """Until migration 0004_campaigns can land (it follows the surveys' 0003), create the campaign tables from
    the models. Removed once the migration is in place."""
    from sqlalchemy import inspect

    from crm_bridge.campaign_models import Campaign, CampaignAttempt, CampaignContact, ContactOptOut
    from crm_bridge.db import make_engine

    engine = make_engine(url)
    try:
        if "campaigns" not in inspect(engine).get_table_names():
            for model in (Campaign, CampaignContact, CampaignAttempt, ContactOptOut):
                model.__table__.create(engine)
    finally:
        engine.dispose()
