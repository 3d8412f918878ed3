"""Engine and session plumbing: SQLite (WAL, foreign keys) by default, PostgreSQL by URL.

The server's loop never waits on the database: ``Database.run`` executes a function with its own session in a
small thread pool, inside one transaction that commits when the function returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .errors import CrmConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "sqlite:///var/contact-server.db"


def normalize_url(url: str) -> str:
    """Map plain ``postgresql://`` URLs to psycopg 3, the driver the project installs."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CrmConfigError(f"database URL {url!r} is not valid: use sqlite:///PATH or "
                             "postgresql://USER:PASSWORD@HOST:PORT/DB") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's implicit BEGIN is deferred: two threads that read then write the same row lose an update (or
    # fail with SQLITE_BUSY). We emit BEGIN IMMEDIATE ourselves (see _sqlite_begin), the SQLite equivalent of
    # the row locks PostgreSQL takes with SELECT ... FOR UPDATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=5000")
    finally:
        cur.close()


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str = DEFAULT_URL, *, echo: bool = False, immediate: bool = True) -> Engine:
    """Create an engine with the settings this project relies on (foreign keys enforced, WAL on SQLite).

    ``immediate=False`` gives SQLite read-only work deferred transactions, which in WAL mode never wait for a
    writer."""
    url = normalize_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        kwargs["connect_args"] = {"check_same_thread": False}
        if database in ("", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if immediate:
            event.listen(engine, "begin", _sqlite_begin)
    return engine


class Database:
    """A sync engine driven from asyncio through a bounded thread pool."""

    def __init__(self, engine: Engine, *, workers: int = 4, read_engine: Engine | None = None) -> None:
        self.engine = engine
        self.read_engine = read_engine or engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crm-db")

    @classmethod
    def from_url(cls, url: str = DEFAULT_URL, *, workers: int = 4) -> Database:
        engine = make_engine(url)
        reader = make_engine(url, immediate=False) if engine.dialect.name == "sqlite" else None
        return cls(engine, workers=workers, read_engine=reader)

    def run_sync(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one transaction: committed when it returns, rolled back when it raises."""
        with self.sessions.begin() as session:
            return fn(session)

    async def run(self, fn: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.run_sync, fn)

    def read_sync(self, fn: Callable[[Session], T]) -> T:
        """Run a read-only ``fn``; it is rolled back, never committed."""
        with self._read_sessions() as session:
            try:
                return fn(session)
            finally:
                session.rollback()

    async def read(self, fn: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.read_sync, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
