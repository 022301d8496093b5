"""The orchestrator app under test, on the parametrized state (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncofed.orchestrator import Settings, create_app
from tests.support import State


@pytest.fixture
def api(state: State) -> Iterator[TestClient]:
    with TestClient(create_app(Settings.load(state.home)), base_url="http://test/v1") as client:
        yield client


@pytest.fixture
def http(state: State, api: TestClient) -> TestClient:
    """The API, whose coordinator the sites played in the test process use too."""
    state.coordinator = cast(FastAPI, api.app).state.coordinator
    return api
