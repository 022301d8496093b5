"""Shared fixtures: an orchestrator state (SQLite, and PostgreSQL when reachable) with two
enrolled sites."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import uuid
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from oncofed._files import private_dir
from oncofed.orchestrator import identity
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Base, Principal, make_engine, migrate, session_factory
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.settings import Settings
from oncofed.orchestrator.setup import identity_key, initialise
from tests.support import State, declare_project

os.environ.pop("COLUMNS", None)  # pytest-xdist's workers set 80: rich would fix every console
os.environ.pop("LINES", None)  # at that width when the CLI is imported, whatever a test asks

REAL_PROCESSES = (
    "tests/test_chaos.py",
    "tests/test_secure_federation.py",
    "tests/test_federation.py",
    "tests/test_tls.py",
    "tests/test_memory.py",
    "tests/test_bench_smoke.py",
)
"""The suites that run federations of real processes, the longest files, in this order."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The suites on real processes first, each file's tests in their order: ``make test``'s
    two workers take a file at a time in this order, so the long ones start at once and the
    short ones fill the gaps, rather than one worker finishing the longest alone."""
    first = {name: rank for rank, name in enumerate(REAL_PROCESSES)}
    items.sort(key=lambda item: first.get(item.nodeid.partition("::")[0], len(first)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """What outlives a test (what collection made, some 670,000 objects, torch's most of
    them; then the modules each test imports and the caches it fills, some 1,400 objects a
    test) is frozen once the test is over and its own garbage collected: it is not walked
    again by each full collection, automatic or a database fixture's
    (``_collect_leftovers``). On 172 orchestrator tests the collector's full collections took
    3 s rather than 12.7 (the whole run 72 s rather than 83)."""
    result = yield
    gc.collect()
    gc.freeze()
    return result


POSTGRES_URL = os.environ.get(
    "ONCOFED_TEST_POSTGRES_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/test"
)


@contextlib.contextmanager
def _database(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of ``template``, or empty), dropped afterwards; its
    URL. Skips when no server answers."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"oncofed_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(_create(name, template)))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({exc.orig})")
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _collect_leftovers()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _create(name: str, template: str | None) -> str:
    """The statement creating database ``name``, a copy of ``template`` (or empty)."""
    return f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")


def _collect_leftovers() -> None:
    """Close, in the test that left them, the connections it left checked out when its engine
    (or an app's, at the end of its lifespan) was disposed, and those whose session the server
    cut: else each is closed when collected, with a ``ResourceWarning`` failing whichever
    later test the collector runs in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


SCHEMA = text(
    """SELECT md5(string_agg(format('%s %s %s %s', c.relname, c.relkind,
        coalesce(pg_get_indexdef(c.oid), (
            SELECT string_agg(format('%s %s %s', a.attname,
                                     format_type(a.atttypid, a.atttypmod), a.attnotnull),
                              ', ' ORDER BY a.attnum)
            FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)),
        (SELECT string_agg(format('%s %s', o.conname, pg_get_constraintdef(o.oid)), ', '
                           ORDER BY o.conname)
         FROM pg_constraint o WHERE o.conrelid = c.oid)),
        '; ' ORDER BY c.relname))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public'"""
)
"""A digest of the public schema: its tables, columns, indexes, constraints and sequences."""

OTHERS = text(
    """SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()"""
)
"""End every other session on the database (and so the locks, advisory too, they hold)."""


TABLES = [f'"{table.name}"' for table in Base.metadata.sorted_tables]
"""The orchestrator's tables."""


class WorkerDatabase:
    """This worker's PostgreSQL database holding the newest schema, emptied for each test
    (``TRUNCATE``, 35 to 80 ms: new, empty files, as a fresh database's, where ``DELETE``
    left rows that a query without an order returned in another order) but for the rows the
    migrations wrote, rather than copied from the template and dropped afterwards (0.3 to 0.6 s
    on 2 cores under load); copied again when a test changed its schema."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.name = f"oncofed_{uuid.uuid4().hex[:12]}"
        self.url = make_url(POSTGRES_URL).set(database=self.name)
        self._admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        self._engine = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._copy()
        try:
            self._inspect()
        except Exception:
            self.drop()
            raise

    def _inspect(self) -> None:
        with self._engine.connect() as conn:
            self._schema = conn.scalar(SCHEMA)
            # the rows the migrations write (0007's service row), kept aside and put back
            self._seeded = [t for t in TABLES if conn.scalar(text(f"SELECT count(*) FROM {t}"))]
        self._keep_seeds()
        self._refill = [
            text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"),
            *(text(f"INSERT INTO {table} TABLE seed.{table}") for table in self._seeded),
        ]

    def _copy(self) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            conn.execute(text(_create(self.name, self.template)))

    def _keep_seeds(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("CREATE SCHEMA seed"))
            for name in self._seeded:
                conn.execute(text(f"CREATE TABLE seed.{name} AS TABLE {name}"))

    def empty(self) -> str:
        """The database with no rows but the seeded and no other session; its URL."""
        with self._engine.connect() as conn:
            conn.execute(OTHERS)
            schema = conn.scalar(SCHEMA)
            if schema == self._schema:
                for statement in self._refill:
                    conn.execute(statement)
        if schema != self._schema:
            self._copy()
            self._keep_seeds()
        return self.url.render_as_string(hide_password=False)

    def drop(self) -> None:
        self._engine.dispose()
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards; skips when no server answers."""
    with _database() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database migrated to the newest revision once per session: each
    state starts from a copy (migrating again finds nothing to do)."""
    path = tmp_path_factory.mktemp("schema") / "oncofed.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str]:
    """An empty PostgreSQL database migrated once per session, the template each worker's
    database is copied from (``CREATE DATABASE ... TEMPLATE``); skips without a server."""
    with _database() as url:
        migrate(url)
        name = make_url(url).database
        assert name is not None
        yield name


@pytest.fixture(scope="session")
def worker_database(postgres_schema: str) -> Iterator[WorkerDatabase]:
    """This worker's database of the newest schema, dropped at the end of the session."""
    database = WorkerDatabase(postgres_schema)
    yield database
    database.drop()


@pytest.fixture
def migrated_postgres_url(worker_database: WorkerDatabase) -> Iterator[str]:
    """A PostgreSQL database holding the newest schema and no rows, no session but the
    test's on it."""
    yield worker_database.empty()
    _collect_leftovers()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[State]:
    """The orchestrator state, once on each database backend (its schema copied from one
    migrated once per session)."""
    home = tmp_path / "orchestrator"
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("migrated_postgres_url")
    else:
        private_dir(home)
        shutil.copyfile(request.getfixturevalue("sqlite_schema"), home / "oncofed.db")
    token = initialise(home, url)
    engine = make_engine(Settings.load(home).url)
    sessions = session_factory(engine)
    sites, credentials = {}, {}
    with sessions.begin() as session:
        for name in ("alpha", "beta"):
            created = identity.create_site(session, name)
            enrolled = identity.enrol(session, created.enrolment_token)
            credentials[name] = enrolled.credential
            sites[name] = identity.authenticate_site(session, enrolled.credential).id
        admin_id = session.query(Principal).one().id
        declare_project(session, admin_id, approved_by=sites.values())
    settings = Settings.load(home)
    coordinator = Coordinator(sessions, BlobStore(settings.blob_dir), key=identity_key(settings))
    yield State(home, token, sessions, coordinator, sites, credentials, admin_id)
    engine.dispose()
