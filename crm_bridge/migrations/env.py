"""Alembic environment, driven programmatically by ``crm_bridge.migrate.upgrade_database``.

A connection handed in through ``config.attributes["connection"]`` is used as is; otherwise the URL in the
``sqlalchemy.url`` option. ``target_metadata`` is every MetaData registered with ``crm_bridge.migrate`` so that
other packages' tables (voiceauth) are compared by autogenerate too.
"""

from __future__ import annotations

from alembic import context

from crm_bridge.db import make_engine
from crm_bridge.migrate import all_metadata

config = context.config
target_metadata = all_metadata()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
