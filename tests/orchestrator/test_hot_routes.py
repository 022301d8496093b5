"""The edges' hot routes (``routes.hot``) answer as the app's own routes do, without them."""

from __future__ import annotations

from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from oncofed.orchestrator.routes.hot import HotRoutes
from tests.support import State, auth, make_spec, without_hot_routes


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        ("GET", "/tasks/next?wait=0", None, None),
        ("GET", "/tasks/next?wait=0", {"Authorization": "Basic abc"}, None),
        ("GET", "/tasks/next?wait=0", {"Authorization": "Bearer"}, None),
        ("GET", "/tasks/next?wait=0", {"Authorization": "Bearer not-a-credential"}, None),
        ("GET", "/tasks/next?wait=0", "alpha", None),
        ("GET", "/tasks/next?wait=abc", "alpha", None),
        ("GET", "/tasks/next?wait=121", "alpha", None),
        ("GET", "/tasks/next?wait=-1", "alpha", None),
        ("GET", "/tasks/next?wait=nan", "alpha", None),
        ("POST", "/tasks/next", "alpha", b"{}"),
        ("POST", "/tasks/nope/update", "alpha", b"\x00" * 16),
        ("POST", "/tasks/nope/result", "alpha", b"{}"),
        ("GET", "/tasks/nope/result", "alpha", None),
        ("POST", "/tasks/TASK/result", "alpha", b"{not json"),
        ("POST", "/tasks/TASK/update", "alpha", b"not tensors"),
        ("POST", "/tasks/TASK/result", "beta", b"{}"),
        ("POST", "/tasks/TASK/update", None, b"{}"),
        ("POST", "/tasks/TASK/update?wait=abc", "alpha", b"not tensors"),
        ("POST", "/tasks/TASK/result?wait=121", "alpha", b"{}"),
        ("POST", "/tasks/TASK/result?wait=-1", None, b"{}"),
        ("POST", "/tasks/TASK/result?wait=0", "alpha", b"{not json"),
    ],
)
def test_hot_routes_answer_as_the_apps_routes(
    api: TestClient,
    state: State,
    method: str,
    path: str,
    headers: dict[str, str] | str | None,
    body: bytes | None,
) -> None:
    if isinstance(headers, str):
        headers = auth(state.credentials[headers])
    plain = TestClient(without_hot_routes(cast(FastAPI, api.app)), base_url=str(api.base_url))
    answers = []
    for client in (api, plain):  # each given a task of its own: an answer may end it
        state.coordinator.submit(make_spec(), state.admin_id)
        task = state.coordinator.next_task(state.sites["alpha"])
        assert task is not None
        sent = path.replace("TASK", task.task_id)
        answer = client.request(method, sent, headers=headers, content=body)
        content = answer.content.replace(task.task_id.encode(), b"TASK")
        answers.append((answer.status_code, content, answer.headers.get("content-type")))
    hot, fastapi = answers
    assert hot == fastapi


async def _not_the_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError(f"{scope['method']} {scope['path']} reached the app")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/tasks/next", 401),
        ("POST", "/v1/tasks/abc/update", 401),
        ("POST", "/v1/tasks/abc/result", 401),
    ],
)
def test_hot_routes_never_reach_the_app(method: str, path: str, status: int) -> None:
    client = TestClient(HotRoutes(_not_the_app))
    assert client.request(method, path).status_code == status


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks/abc/update"),
        ("POST", "/v1/tasks/next"),
        ("GET", "/v1/tasks/abc/secure/keys"),
        ("GET", "/v1/tasks/a/b/update"),
        ("GET", "/v1/health"),
    ],
)
def test_other_requests_go_to_the_app(method: str, path: str) -> None:
    with pytest.raises(AssertionError, match="reached the app"):
        TestClient(HotRoutes(_not_the_app)).request(method, path)
