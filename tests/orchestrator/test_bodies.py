"""Request body limits: a huge body to the enrolment route (the attack that took the
orchestrator from 216 to 2,205 MiB) is read whole by a naive app and refused after at most
the limit under the defaults, with or without a Content-Length; every route has a limit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncofed.orchestrator import Settings, bodies, create_app
from oncofed.wire import tensors
from oncofed.wire.messages import API_PREFIX
from tests.orchestrator.test_api import post_to_first_task
from tests.support import State, auth, make_spec

CHUNK = 64 << 10
ATTACK = 16 << 20  # the body sent (400 MiB in the attack; the same shape, smaller)


@contextmanager
def served(state: State, naive: bool = False, **settings: Any) -> Iterator[TestClient]:
    """The app on ``state`` with ``settings`` changed; ``naive``: without ``BodyLimits``."""
    app = create_app(Settings.load(state.home).model_copy(update=settings))
    if naive:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not bodies.BodyLimits]
    with TestClient(app, base_url=f"http://test{API_PREFIX}") as client:
        yield client


def drive(
    client: TestClient, path: str, size: int, declared: bool, headers: dict[str, str] | None = None
) -> tuple[int, str, int]:
    """POST ``size`` bytes to ``path``, ``CHUNK`` at a time, straight through ASGI (the test
    client would read a body whole first): the status, the detail, and the body bytes the
    app's ``receive`` delivered."""
    app = client.app
    delivered = 0
    sent = {"start": {}, "body": b""}
    framing = [(b"content-length", str(size).encode())] if declared else []
    if not declared:
        framing = [(b"transfer-encoding", b"chunked")]
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API_PREFIX}{path}",
        "raw_path": f"{API_PREFIX}{path}".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *framing, *extra],
        "client": ("203.0.113.9", 40000),
        "server": ("test", 80),
    }
    piece = b" " * CHUNK  # whitespace: valid JSON padding, read until the end

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered >= size:
            return {"type": "http.disconnect"}
        delivered += CHUNK
        return {"type": "http.request", "body": piece, "more_body": delivered < size}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent["start"] = message
        else:
            sent["body"] += message.get("body", b"")

    async def call() -> None:
        await app(scope, receive, send)  # type: ignore[arg-type]

    assert client.portal is not None
    client.portal.call(call)
    detail = json.loads(sent["body"])["detail"]
    return sent["start"]["status"], str(detail), delivered


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_huge_enrolment_body_is_read_whole_by_a_naive_app(state: State, declared: bool) -> None:
    with served(state, naive=True) as client:
        status, _, delivered = drive(client, "/enrol", ATTACK, declared)
    assert status == 422 and delivered == ATTACK  # every byte read into memory


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_huge_enrolment_body_is_refused_after_at_most_the_limit(
    state: State, declared: bool
) -> None:
    limit = Settings.load(state.home).max_unauthenticated_body_bytes
    with served(state) as client:
        status, detail, delivered = drive(client, "/enrol", ATTACK, declared)
    assert status == 413 and "max_unauthenticated_body_bytes" in detail
    # Declared: refused before a byte is read; chunked: at the chunk that crossed the limit.
    assert delivered == (0 if declared else limit + CHUNK)


def test_an_authenticated_json_route_takes_the_json_limit(state: State) -> None:
    with served(state, max_json_body_bytes=4 << 10) as client:
        big = make_spec(name="x", features=[{"name": f"ext.f{i}"} for i in range(400)])
        refused = client.post(
            "/jobs", json=big.model_dump(mode="json"), headers=auth(state.admin_token)
        )
        assert refused.status_code == 413
        assert "max_json_body_bytes" in refused.json()["detail"]
        small = client.post(
            "/jobs", json=make_spec().model_dump(mode="json"), headers=auth(state.admin_token)
        )
        assert small.status_code == 201
        status, _, delivered = drive(
            client, "/jobs", 1 << 20, declared=False, headers=auth(state.admin_token)
        )
        assert status == 413 and delivered == CHUNK  # the first chunk crossed it


def test_uploads_take_the_upload_limit_not_the_json_one(state: State) -> None:
    """An update larger than the JSON limit reaches its route (which refuses tensors for a
    stats task); one larger than ``max_upload_bytes`` is refused before it is read."""
    with served(state, max_json_body_bytes=1 << 10, max_upload_bytes=64 << 10) as client:
        body = tensors.encode({"w": np.zeros(1000, "float32")})
        assert 1 << 10 < len(body) < 64 << 10
        status, detail = post_to_first_task(client, state, "update", content=body)
        assert status == 400 and "stats task" in str(detail)
        site = auth(state.credentials["alpha"])
        status, detail, delivered = drive(client, "/tasks/x/update", 1 << 20, True, site)
        assert (status, delivered) == (413, 0) and "max_upload_bytes" in detail


def test_every_route_has_a_limit_and_the_table_names_real_routes(state: State) -> None:
    with served(state) as client:
        app = client.app
        assert isinstance(app, FastAPI)
        table = bodies.RouteTable().routes(app)
        settings = Settings.load(state.home)
        operations = {(r.method, r.path): r.limit(settings)[1] for r in table}
        assert set(bodies.ROUTE_LIMITS) <= set(operations)  # no entry for a route gone
        assert operations[("POST", f"{API_PREFIX}/enrol")] == "max_unauthenticated_body_bytes"
        assert operations[("GET", f"{API_PREFIX}/health")] == "max_unauthenticated_body_bytes"
        assert operations[("POST", f"{API_PREFIX}/jobs")] == "max_json_body_bytes"
        assert operations[("POST", f"{API_PREFIX}/tasks/{{task_id}}/update")] == "max_upload_bytes"
        for path, methods in app.openapi()["paths"].items():  # documented everywhere
            for method, operation in methods.items():
                assert {"413", "429"} <= set(operation["responses"]), (method, path)
