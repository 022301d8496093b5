"""Shared fixtures: an orchestrator state (SQLite, and PostgreSQL when reachable) with two
enrolled sites."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from oncofed._files import private_dir
from oncofed.orchestrator import identity
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Principal, make_engine, migrate, session_factory
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


POSTGRES_URL = os.environ.get(
    "ONCOFED_TEST_POSTGRES_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/test"
)


@contextlib.contextmanager
def _database(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of ``template``, or empty), dropped afterwards; its
    URL. Skips when no server answers."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"oncofed_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({exc.orig})")
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with warnings.catch_warnings():
            # A connection a test left checked out when its engine (or an app's, at the end of
            # its lifespan) was disposed, or one whose session the server cut, is closed only
            # when collected: collect it here, in the test that left it, not as an error in
            # whichever test the collector next runs.
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
    """An empty PostgreSQL database migrated once per session, the template each state's
    database is copied from (``CREATE DATABASE ... TEMPLATE``); skips without a server."""
    with _database() as url:
        migrate(url)
        name = make_url(url).database
        assert name is not None
        yield name


@pytest.fixture
def migrated_postgres_url(postgres_schema: str) -> Iterator[str]:
    """A fresh PostgreSQL database holding the newest schema, dropped afterwards."""
    with _database(postgres_schema) as url:
        yield url


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
