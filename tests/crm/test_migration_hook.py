"""Another package's tables join the same upgrade through a registered alembic branch."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from crm_bridge import migrate
from crm_bridge.db import make_engine

REVISION = '''
import sqlalchemy as sa
from alembic import op

revision = "va_0001"
down_revision = None
branch_labels = ("voiceauth_test",)
depends_on = "0001_initial"


def upgrade() -> None:
    op.create_table("va_probe", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id")))


def downgrade() -> None:
    op.drop_table("va_probe")
'''


def test_registered_version_location_is_upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    versions = tmp_path / "va_migrations"
    versions.mkdir()
    (versions / "va_0001_probe.py").write_text(REVISION)
    monkeypatch.setattr(migrate, "_extra_locations", [])
    migrate.register_version_location(versions)
    url = f"sqlite:///{tmp_path / 'hook.db'}"
    migrate.upgrade_database(url)
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"va_probe", "customers", "call_records"} <= tables
