"""The HTTP API in process: authentication, validation errors, enrolment, long poll, uploads."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from oncofed.client import Client
from oncofed.orchestrator import Settings, blobs, create_app, rounds
from oncofed.orchestrator.db import Task
from oncofed.orchestrator.setup import add_site
from oncofed.wire import tensors
from oncofed.wire.messages import INLINE_MODEL_BYTES, SHA256_HEADER, ResultAck, TaskAssignment
from tests.orchestrator.test_rounds import (
    encoded_update,
    post_update,
    stats,
    take,
    through_stats,
    weights_like,
)
from tests.support import State, auth, make_spec


def test_uploads_left_by_a_crash_are_removed_at_start(state: State) -> None:
    spool = Settings.load(state.home).blob_dir / "tmp"
    (spool / "half-written").write_bytes(b"\x00" * 10)
    with TestClient(create_app(Settings.load(state.home))):
        assert list(spool.iterdir()) == []


def test_health_needs_no_token(api: TestClient) -> None:
    assert api.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("path", ["/jobs", "/sites", "/tasks/next"])
def test_unauthenticated_calls_are_refused(api: TestClient, path: str) -> None:
    assert api.get(path).status_code == 401
    response = api.get(path, headers=auth("ofadm_not-a-real-token"))
    assert response.status_code == 401 and "unknown" in response.json()["detail"]


def test_site_credential_is_not_a_researcher_token(api: TestClient, state: State) -> None:
    assert api.get("/jobs", headers=auth(state.credentials["alpha"])).status_code == 401


def test_invalid_spec_is_refused_naming_the_field(api: TestClient, state: State) -> None:
    spec = make_spec().model_dump(mode="json")
    spec["model"]["type"] = "random_forest"
    response = api.post("/jobs", json=spec, headers=auth(state.admin_token))
    assert response.status_code == 422
    assert any(error["loc"][-2:] == ["model", "type"] for error in response.json()["detail"])


def test_submit_and_read_a_job(api: TestClient, state: State) -> None:
    spec = make_spec().model_dump(mode="json")
    created = api.post("/jobs", json=spec, headers=auth(state.admin_token))
    assert created.status_code == 201
    job = api.get(f"/jobs/{created.json()['id']}", headers=auth(state.admin_token)).json()
    assert job["status"] == "running" and job["sites"] == ["alpha", "beta"]
    assert job["rounds"][0]["kind"] == "stats"
    assert set(job["rounds"][0]["sites"]) == {"alpha", "beta"}


def test_enrolment_token_works_once(api: TestClient, state: State) -> None:
    token = add_site(state.home, "gamma").enrolment_token
    first = api.post("/enrol", json={"token": token})
    assert first.status_code == 200 and first.json()["site"] == "gamma"
    assert api.post("/enrol", json={"token": token}).status_code == 401
    credential = first.json()["credential"]
    assert api.get("/tasks/next", params={"wait": 0}, headers=auth(credential)).status_code == 204


def test_long_poll_returns_a_published_task(api: TestClient, state: State) -> None:
    api.post("/jobs", json=make_spec().model_dump(mode="json"), headers=auth(state.admin_token))
    response = api.get("/tasks/next", params={"wait": 5}, headers=auth(state.credentials["alpha"]))
    assert response.status_code == 200 and response.json()["kind"] == "stats"


@pytest.mark.parametrize("answer", ["result", "update"])
def test_an_answer_that_waits_comes_back_with_the_sites_next_task(
    http: TestClient, state: State, answer: str
) -> None:
    """An answer posted with ``wait`` is recorded at once and its acknowledgement held as a
    long poll: when the round closes meanwhile, it carries the site's task of the next round
    (a round costs a site one request, not an answer and a poll)."""
    job = state.coordinator.submit(make_spec(rounds=2), state.admin_id)
    if answer == "update":
        through_stats(state, job.id, {"alpha": 30, "beta": 10})
    alpha, beta = take(state, "alpha"), take(state, "beta")
    if answer == "update":
        body = {"content": encoded_update(alpha, weights_like(1.0), 30)}
    else:
        body = {"json": json.loads(stats(30).model_dump_json())}
    site = auth(state.credentials["alpha"])
    with ThreadPoolExecutor(1) as pool:
        path = f"/tasks/{alpha.task_id}/{answer}"
        acked = pool.submit(http.post, path, params={"wait": 20}, headers=site, **body)
        while recorded(state, alpha.task_id) != "accepted":  # recorded before the wait
            assert not acked.done(), acked.result().text
            time.sleep(0.01)
        assert not acked.done()  # held: nothing is open for alpha yet
        if answer == "update":
            post_update(state, "beta", beta, weights_like(3.0), 10)
        else:
            state.coordinator.accept_result(state.sites["beta"], beta.task_id, stats(10))
        ack = ResultAck.model_validate_json(acked.result(timeout=10).content)
    assert ack.status == "accepted" and ack.next_task is not None
    assert (ack.next_task.job_id, ack.next_task.round) == (job.id, alpha.round + 1)
    assert state.coordinator.next_task(state.sites["alpha"]) == ack.next_task  # its own task


@pytest.mark.parametrize("answer", ["result", "update"])
def test_only_an_answer_that_waits_for_its_next_task_may_wait_for_its_round(
    http: TestClient, state: State, answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer posted with ``wait`` is recorded as patient (its batch may wait for the
    others of its round, ``Coordinator._hold``); one posted without is recorded at once."""
    job = state.coordinator.submit(make_spec(rounds=2), state.admin_id)
    if answer == "update":
        through_stats(state, job.id, {"alpha": 30, "beta": 10})
    tasks = {name: take(state, name) for name in ("alpha", "beta")}
    coordinator, patience = state.coordinator, []
    record_soon = coordinator.record_soon

    async def noted(submission: rounds.Submission, patient: bool = False) -> ResultAck:
        patience.append(patient)
        return await record_soon(submission, patient)

    monkeypatch.setattr(coordinator, "record_soon", noted)
    for (name, task), wait in zip(tasks.items(), [0, 5], strict=True):
        body: dict[str, Any] = (
            {"content": encoded_update(task, weights_like(1.0), 30 if name == "alpha" else 10)}
            if answer == "update"
            else {"json": json.loads(stats(20).model_dump_json())}
        )
        path, site = f"/tasks/{task.task_id}/{answer}", auth(state.credentials[name])
        response = http.post(path, params={"wait": wait}, headers=site, **body)
        assert response.status_code == 200, response.text
    assert patience == [False, True]


def test_how_long_answers_may_wait_for_their_round_is_a_setting(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``answer_hold_seconds`` (``ONCOFED_ANSWER_HOLD_SECONDS``): 50 ms unless set, 0 for
    none, at most a second."""

    def served() -> float:
        app = create_app(Settings.load(state.home))
        with TestClient(app):  # its lifespan's end lets the database go
            return float(app.state.coordinator.hold_seconds)

    assert served() == 0.05
    monkeypatch.setenv("ONCOFED_ANSWER_HOLD_SECONDS", "0")
    assert served() == 0.0
    monkeypatch.setenv("ONCOFED_ANSWER_HOLD_SECONDS", "2")
    with pytest.raises(ValidationError, match="answer_hold_seconds"):
        Settings.load(state.home)


def test_a_rejected_answer_is_said_at_once_even_when_it_may_wait(
    api: TestClient, state: State
) -> None:
    bad = {"n": 10, "sums": ["NaN", 1.0], "sumsq": [1.0, 1.0]}
    with ThreadPoolExecutor(1) as pool:
        posted = pool.submit(
            post_to_first_task, api, state, "result", params={"wait": 60}, json=bad
        )
        status, detail = posted.result(timeout=10)  # not held for the next task
    assert status == 422 and "sums" in str(detail)


def recorded(state: State, task_id: str) -> str:
    with state.sessions() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.status


def test_sites_list_shows_connection(api: TestClient, state: State) -> None:
    sites = api.get("/sites", headers=auth(state.admin_token)).json()
    assert [s["name"] for s in sites] == ["alpha", "beta"]
    assert all(s["enrolled"] and s["connected"] for s in sites)


def test_only_the_operator_adds_sites(api: TestClient, state: State) -> None:
    researcher = state_token(state)
    refused = api.post("/sites", json={"name": "delta"}, headers=auth(researcher))
    assert refused.status_code == 403
    created = api.post("/sites", json={"name": "delta"}, headers=auth(state.admin_token))
    assert created.status_code == 201 and created.json()["enrolment_token"].startswith("ofenr_")
    again = api.post("/sites", json={"name": "delta"}, headers=auth(state.admin_token))
    assert again.status_code == 409


def post_to_first_task(
    api: TestClient,
    state: State,
    endpoint: str,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> tuple[int, object]:
    """Submit a job, take alpha's first (stats) task, post ``body`` to ``endpoint`` of it."""
    api.post("/jobs", json=make_spec().model_dump(mode="json"), headers=auth(state.admin_token))
    site = auth(state.credentials["alpha"])
    task = api.get("/tasks/next", params={"wait": 0}, headers=site).json()
    path = f"/tasks/{task['task_id']}/{endpoint}"
    response = api.post(path, headers={**site, **(headers or {})}, **body)
    return response.status_code, response.json()["detail"]


def test_update_with_a_wrong_digest_is_refused(api: TestClient, state: State) -> None:
    status, detail = post_to_first_task(
        api, state, "update", {SHA256_HEADER: "0" * 64}, content=tensors.encode({})
    )
    assert status == 400 and "SHA-256" in str(detail)


def test_tensors_for_a_json_task_are_refused(api: TestClient, state: State) -> None:
    status, detail = post_to_first_task(api, state, "update", content=tensors.encode({}))
    assert status == 400 and "stats task" in str(detail)


def test_malformed_json_result_is_a_422(api: TestClient, state: State) -> None:
    bad = {"n": 10, "sums": ["NaN", 1.0], "sumsq": [1.0, 1.0]}
    status, detail = post_to_first_task(api, state, "result", json=bad)
    assert status == 422 and "sums" in str(detail)


def state_token(state: State) -> str:
    from oncofed.orchestrator.setup import add_principal

    return add_principal(state.home, "rita", "researcher").token


def test_jobs_are_listed_a_page_at_a_time(api: TestClient, state: State) -> None:
    """The listing is paginated (a few thousand jobs never go in one response); the client
    walks the pages and gets every job, in the order submitted."""
    headers = auth(state.admin_token)
    names = [f"job-{i}" for i in range(5)]
    for name in names:
        api.post("/jobs", json=make_spec(name=name).model_dump(mode="json"), headers=headers)
    page = api.get("/jobs", params={"limit": 2, "offset": 2}, headers=headers).json()
    assert [j["name"] for j in page] == names[2:4]
    assert api.get("/jobs", params={"limit": 1001}, headers=headers).status_code == 422
    assert len(api.get("/jobs", headers=headers).json()) == 5  # a default page holds them

    def relay(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1")
        answer = api.request(request.method, path, params=request.url.params, headers=headers)
        return httpx.Response(answer.status_code, content=answer.content)

    client = Client("http://test", state.admin_token, transport=httpx.MockTransport(relay))
    assert [j.name for j in client.jobs(page=2)] == names


@pytest.mark.parametrize("small_blob", [4 << 20, 64], ids=["from-memory", "streamed"])
def test_a_site_downloads_the_model_it_was_sent_and_no_other_blob(
    http: TestClient, state: State, monkeypatch: pytest.MonkeyPatch, small_blob: int
) -> None:
    monkeypatch.setattr(blobs, "SMALL_BLOB", small_blob)
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    site = auth(state.credentials["alpha"])
    task = http.get("/tasks/next", params={"wait": 0}, headers=site).json()
    assert task["kind"] == "train"
    model = state.coordinator.blobs.path(task["model_sha256"]).read_bytes()
    assert len(model) > 64  # the streamed case streams it
    for _ in range(2):  # the second from memory, when small
        got = http.get(f"/blobs/{task['model_sha256']}", headers=site)
        assert got.status_code == 200 and got.content == model
    beta = take(state, "beta")
    assert post_update(state, "beta", beta, weights_like(1.0), 10)[0] == "accepted"
    with state.sessions() as session:
        sha = session.get(Task, beta.task_id).result_sha  # type: ignore[union-attr]
    assert http.get(f"/blobs/{sha}", headers=site).status_code == 404  # beta's update
    assert http.get(f"/blobs/{'f' * 64}", headers=site).status_code == 404


@pytest.mark.parametrize("limit", [INLINE_MODEL_BYTES, 64], ids=["inline", "too-large"])
def test_a_small_global_model_comes_with_its_task(
    http: TestClient, state: State, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """A global model of at most ``INLINE_MODEL_BYTES`` comes with the task (one request
    less per site and round); a larger one is named only, and downloaded."""
    monkeypatch.setattr(rounds, "INLINE_MODEL_BYTES", limit)
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    task = http.get("/tasks/next", params={"wait": 0}, headers=auth(state.credentials["alpha"]))
    assignment = TaskAssignment.model_validate_json(task.content)
    model = state.coordinator.blobs.path(task.json()["model_sha256"]).read_bytes()
    assert assignment.kind == "train" and len(model) > 64
    assert assignment.model == (model if limit == INLINE_MODEL_BYTES else None)
