"""The orchestrator app under test, on the parametrized state (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from oncofed.orchestrator import Settings, create_app
from tests.support import State


@pytest.fixture
def api(state: State) -> Iterator[TestClient]:
    with TestClient(create_app(Settings.load(state.home)), base_url="http://test/v1") as client:
        yield client
