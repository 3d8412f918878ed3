"""Database fixtures: every test using ``db`` runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``CONTACT_SERVER_TEST_PG_URL`` (``.ci/run`` starts a server and sets it). Each test gets a
fresh schema of its own, so parallel packages sharing that database do not collide. Under CI (``CI=true``) a
missing URL fails the PostgreSQL variant instead of skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from crm_bridge.db import Database, make_engine, normalize_url
from crm_bridge.migrate import upgrade_database

PG_ENV = "CONTACT_SERVER_TEST_PG_URL"


def _pg_url_for_schema(base: str, schema: str) -> str:
    url = make_url(normalize_url(base))
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crm.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{PG_ENV} is not set under CI: the PostgreSQL variant must run there")
        pytest.skip(f"set {PG_ENV} to run against PostgreSQL")
    schema = f"crm_t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_url_for_schema(base, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    upgrade_database(db_url)
    database = Database.from_url(db_url, workers=2)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
async def fake_crm(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from .fake_crm import TOKEN, FakeCrm
    monkeypatch.setenv("CRM_API_TOKEN", TOKEN)
    crm = FakeCrm()
    await crm.start()
    try:
        yield crm
    finally:
        await crm.stop()
