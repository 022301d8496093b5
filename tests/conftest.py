"""Shared fixtures: an orchestrator state (SQLite, and PostgreSQL when reachable) with two
enrolled sites."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from oncofed.orchestrator import identity
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Principal, make_engine, session_factory
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.settings import Settings
from oncofed.orchestrator.setup import identity_key, initialise
from tests.support import State, declare_project

POSTGRES_URL = os.environ.get(
    "ONCOFED_TEST_POSTGRES_URL", "postgresql+pg8000://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards; skips when no server answers."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"oncofed_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({exc.orig})")
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[State]:
    """The orchestrator state, once on each database backend."""
    home = tmp_path / "orchestrator"
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
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
