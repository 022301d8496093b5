"""The edges' hot routes (``routes.hot``) answer as the app's own routes do, without them."""

from __future__ import annotations

from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from oncofed.orchestrator import blobs
from oncofed.orchestrator.routes.hot import HotRoutes
from tests.orchestrator.test_rounds import through_stats
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
        ("GET", "/tasks/next?wait=120.5", "alpha", None),
        ("GET", "/tasks/next?wait=999", "alpha", None),
        ("GET", "/tasks/next?wait=0.000", "alpha", None),
        ("GET", "/tasks/next?wait=0&wait=121", "alpha", None),
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
        ("POST", "/tasks/TASK/result?wait=0.25", "alpha", b"{not json"),
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


@pytest.mark.parametrize("small_blob", [4 << 20, 64], ids=["from-memory", "streamed"])
def test_a_blob_download_answers_as_the_apps_route(
    http: TestClient, state: State, monkeypatch: pytest.MonkeyPatch, small_blob: int
) -> None:
    """``GET /blobs/{sha}``: the model a site was sent (alpha's, and beta's in the same
    round), and what every other caller gets."""
    monkeypatch.setattr(blobs, "SMALL_BLOB", small_blob)
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    task = state.coordinator.next_task(state.sites["alpha"])
    assert task is not None and task.model_sha256 is not None
    model = state.coordinator.blobs.path(task.model_sha256).read_bytes()
    plain = TestClient(without_hot_routes(cast(FastAPI, http.app)), base_url=str(http.base_url))
    alpha, beta = auth(state.credentials["alpha"]), auth(state.credentials["beta"])
    bearer = {"Authorization": "Bearer not-a-credential"}
    asked = [(task.model_sha256, alpha), (task.model_sha256, beta), (task.model_sha256, None),
             (task.model_sha256, bearer), ("f" * 64, alpha), ("not-a-sha", alpha)]  # fmt: skip
    for sha, headers in asked:
        hot, fastapi = (client.get(f"/blobs/{sha}", headers=headers) for client in (http, plain))
        assert (hot.status_code, hot.content, hot.headers.get("content-type")) == (
            fastapi.status_code, fastapi.content, fastapi.headers.get("content-type"),
        )  # fmt: skip
    assert http.get(f"/blobs/{task.model_sha256}", headers=alpha).content == model
    assert http.get(f"/blobs/{'f' * 64}", headers=alpha).status_code == 404


async def _not_the_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError(f"{scope['method']} {scope['path']} reached the app")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/tasks/next", 401),
        ("POST", "/v1/tasks/abc/update", 401),
        ("POST", "/v1/tasks/abc/result", 401),
        ("GET", "/v1/blobs/abc", 401),
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
        ("POST", "/v1/blobs/abc"),
        ("GET", "/v1/blobs/a/b"),
        ("GET", "/v1/blobs/"),
    ],
)
def test_other_requests_go_to_the_app(method: str, path: str) -> None:
    with pytest.raises(AssertionError, match="reached the app"):
        TestClient(HotRoutes(_not_the_app)).request(method, path)
