"""Shared fixtures: an orchestrator state directory with two enrolled sites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oncofed.orchestrator import identity
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Principal, make_engine, session_factory
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.settings import Settings
from oncofed.orchestrator.setup import initialise
from tests.support import State


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    home = tmp_path / "orchestrator"
    token = initialise(home)
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
    coordinator = Coordinator(sessions, BlobStore(Settings.load(home).blob_dir))
    yield State(home, token, sessions, coordinator, sites, credentials, admin_id)
    engine.dispose()
