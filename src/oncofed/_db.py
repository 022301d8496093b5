"""Database helpers both databases share: the orchestrator's and each edge's ledger.

Typed SQLAlchemy 2 models on a ``MetaData`` with one naming convention, UTC timestamps,
engines with SQLite's pragmas set on every connection, and Alembic migrations run from code.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    Engine,
    MetaData,
    TypeDecorator,
    create_engine,
    engine_from_config,
    event,
    make_url,
    pool,
)
from sqlalchemy.orm import Session, sessionmaker

from oncofed._files import private_file

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def metadata() -> MetaData:
    """A fresh ``MetaData`` with the shared constraint naming convention."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store timezone-aware UTC timestamps only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


POOL_SIZE = 40
"""SQLite connections an engine keeps: one per worker thread of the server (anyio's 40)."""


def make_engine(url: str, synchronous: Literal["NORMAL", "FULL"] = "FULL") -> Engine:
    """An engine; SQLite gets WAL, a busy timeout, enforced foreign keys and ``synchronous``
    (``FULL``: a commit survives a power cut, at the cost of an fsync of the log per commit,
    so what the orchestrator acknowledges is on disk; ``NORMAL`` may lose the last commits).
    PostgreSQL's own default (``synchronous_commit=on``) already syncs every commit."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    private_database(url)
    engine = create_engine(  # connections kept for every worker thread: no reconnecting
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=POOL_SIZE,
        max_overflow=POOL_SIZE,
        # the connection returned last, whose page cache is warm: SQLite empties a
        # connection's cache whenever another one wrote (``synced``)
        pool_use_lifo=True,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    return engine


@contextmanager
def synced(engine: Engine) -> Iterator[Connection]:
    """A transaction on ``engine`` whose commit survives a power cut: on SQLite, its
    connection made ``synchronous=FULL`` for this transaction alone (the commit syncs the
    write-ahead log, and with it every commit before), then set back to the engine's level.
    The same connections as the engine's other transactions: a second engine for synced
    commits kept second connections, and SQLite empties a connection's page cache whenever
    another one wrote (an edge read back about 30 pages a task). PostgreSQL syncs every
    commit already."""
    with engine.connect() as connection:
        if engine.dialect.name != "sqlite":
            with connection.begin():
                yield connection
            return
        driver = connection.connection.driver_connection
        assert driver is not None  # a connection checked out
        # outside a transaction (the DBAPI begins one only before a write; inside one SQLite
        # refuses the change, and the audit entry with it)
        (level,) = driver.execute("PRAGMA synchronous").fetchone()
        driver.execute("PRAGMA synchronous=FULL")
        try:
            with connection.begin():
                yield connection
        finally:  # the engine's own level again; left FULL should this fail (slower, as safe)
            with contextlib.suppress(sqlite3.Error):
                driver.execute(f"PRAGMA synchronous={int(level)}")


def private_database(url: str) -> None:
    """A SQLite database's file created owner-only before SQLite would create it readable by
    all (its journal, write-ahead log and shared memory take its mode); nothing for another
    database, an in-memory one or a ``file:`` URI (a source opened read-only)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if not database.startswith("file:"):
        private_file(Path(database))


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str, location: Path) -> None:
    """Bring the database at ``url`` to the newest Alembic revision in ``location``."""
    private_database(url)
    config = Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def run_migrations(metadata: MetaData) -> None:
    """What an Alembic ``env.py`` does here: run the migrations of ``metadata`` on the URL the
    caller set (``migrate``), in batch mode so SQLite can alter tables."""
    from alembic import context

    config = context.config
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    connectable.dispose()


def sync(path: Path) -> None:
    """Flush a file's bytes, or a directory's entries (a rename in it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
