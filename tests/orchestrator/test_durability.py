"""An accepted result is on disk before the site hears so: a small update's bytes in the
database commit that accepts it (SQLite ``synchronous=FULL``, PostgreSQL
``synchronous_commit=on``); a larger one's (or one of no declared length: chunked) blob's bytes
and directory entry are synced, then that commit; then the acknowledgement.

A power cut cannot be simulated here: killing the process (SIGKILL) right after the
acknowledgement shows that nothing acknowledged lives only in the process, and the recorded
``fsync`` calls show the syncs happen before the acknowledgement, in that order.
"""

from __future__ import annotations

import os
import socket

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from oncofed.demo.federation import free_port
from oncofed.orchestrator import Settings, create_app
from oncofed.orchestrator.db import Round, Site, Task, UpdateBody
from oncofed.wire import tensors
from oncofed.wire.messages import SHA256_HEADER, Evaluation, TaskAssignment, TrainResult
from tests.orchestrator.test_lease import serving
from tests.orchestrator.test_rounds import held_out, take, through_stats, weights_like
from tests.support import State, auth, make_spec


def update_body(task: TaskAssignment, value: float, n: int) -> bytes:
    """A site's training update: every weight ``value``, trained on ``n`` rows."""
    meta = TrainResult(
        task_id=task.task_id,
        n_train=n,
        train_loss=0.5,
        evaluation=Evaluation(n_eval=held_out(n), metrics={"auc": 0.6}),
        compute_seconds=0.01,
    )
    return tensors.encode(weights_like(value), meta)


def post(
    client: httpx.Client | TestClient,
    state: State,
    site: str,
    task_id: str,
    body: bytes,
    chunked: bool = False,
) -> httpx.Response:
    """Post an update: its length declared (kept in the database when small), or ``chunked``
    (of no declared length: spooled to a blob)."""
    headers = {**auth(state.credentials[site]), SHA256_HEADER: tensors.sha256(body)}
    content = iter([body]) if chunked else body
    return client.post(f"/tasks/{task_id}/update", content=content, headers=headers)


def kept(state: State, task_id: str, body: bytes, chunked: bool) -> bool:
    """Whether ``body`` is stored whole where its way of posting puts it, and nowhere else."""
    stored = state.coordinator.blobs.path(tensors.sha256(body))
    with state.sessions() as session:
        held = session.get(UpdateBody, task_id)
        if chunked:
            return held is None and stored.read_bytes() == body
        return held is not None and held.data == body and not stored.exists()


def train_tasks(state: State) -> tuple[str, TaskAssignment, TaskAssignment]:
    """A one-round job past its stats round; alpha's and beta's training tasks."""
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    return job.id, take(state, "alpha"), take(state, "beta")


@pytest.mark.parametrize("chunked", [False, True], ids=["held", "spooled"])
def test_the_update_and_the_commit_are_synced_before_the_acknowledgement(
    api: TestClient, state: State, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    _, alpha, _ = train_tasks(state)
    events: list[tuple[str, int]] = []  # ("fsync", inode) or ("commit", 0), in order
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.fstat(fd).st_ino))

    def committed(_: Session) -> None:
        events.append(("commit", 0))

    monkeypatch.setattr(os, "fsync", fsync)
    event.listen(Session, "after_commit", committed)
    try:
        body = update_body(alpha, 1.0, 30)
        response = post(api, state, "alpha", alpha.task_id, body, chunked)
        at_ack = list(events)
    finally:
        event.remove(Session, "after_commit", committed)
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert kept(state, alpha.task_id, body, chunked)
    if chunked:
        blob = state.coordinator.blobs.path(tensors.sha256(body))
        synced = at_ack.index(("fsync", blob.stat().st_ino))  # its bytes (before the rename)
        named = at_ack.index(("fsync", blob.parent.stat().st_ino), synced)  # the entry naming it
        assert ("commit", 0) in at_ack[named:]  # the task accepted, after both
    else:  # no file of its own: the commit holds it
        assert [e for e in at_ack if e[0] == "fsync"] == [] and ("commit", 0) in at_ack
    with api.app.state.engine.connect() as conn:  # type: ignore[attr-defined]
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        else:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


@pytest.mark.parametrize("chunked", [False, True], ids=["held", "spooled"])
def test_an_acknowledged_update_survives_a_kill_right_after(state: State, chunked: bool) -> None:
    """SIGKILL the real ``serve`` process as soon as alpha's update is acknowledged: after a
    restart the update is in the database (its bytes with it, or its blob on disk), and the
    round closes with it when beta answers (the restarted process rebuilds its sum from what
    was acknowledged); the bodies it held are gone once it closes."""
    job_id, alpha, beta = train_tasks(state)
    port = free_port()
    body = update_body(alpha, 0.1, 30)  # within the job's clip norm, as beta's
    with serving(state.home, port) as process:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1") as client:
            response = post(client, state, "alpha", alpha.task_id, body, chunked)
        process.kill()
        assert response.status_code == 200 and response.json()["status"] == "accepted"
    with state.sessions() as session:
        task = session.get(Task, alpha.task_id)
        assert task is not None and task.status == "accepted"
        assert task.result_sha == tensors.sha256(body)
    assert kept(state, alpha.task_id, body, chunked)
    with serving(state.home, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1") as client:
            again = post(client, state, "beta", beta.task_id, update_body(beta, 0.5, 10))
        assert again.status_code == 200 and again.json()["status"] == "accepted"
    with state.sessions() as session:
        trained = session.scalars(select(Round).filter_by(job_id=job_id, kind="train")).one()
        assert trained.status == "closed"
        assert sorted(t.status for t in trained.tasks) == ["accepted", "accepted"]
        assert session.scalars(select(UpdateBody)).all() == []
        model = state.coordinator.blobs.read(trained.job.model_sha or "")
    assert not state.coordinator.blobs.path(tensors.sha256(body)).exists()
    for weights in tensors.decode(model).values():  # alpha's 0.1 on 30 rows, beta's 0.5 on 10
        assert np.allclose(weights, 0.2)


def test_a_write_through_the_request_session_is_committed_before_the_response(
    state: State,
) -> None:
    """A route's one transaction commits before its response leaves: a commit that fails is
    a 500 for the caller, never a success it was told of and that is not stored."""

    def disk_full(session: Session) -> None:
        if any(isinstance(row, Site) and row.identity_key for row in session.dirty):
            raise OSError("disk full")

    event.listen(Session, "before_commit", disk_full)
    try:
        app = create_app(Settings.load(state.home))
        with TestClient(app, base_url="http://test/v1", raise_server_exceptions=False) as api:
            key = {"key": "ab" * 32}
            response = api.put("/identity", json=key, headers=auth(state.credentials["alpha"]))
    finally:
        event.remove(Session, "before_commit", disk_full)
    assert response.status_code == 500


def test_an_upload_cut_short_is_refused_quietly_and_the_retry_is_accepted(
    state: State,
) -> None:
    """An edge whose connection drops halfway through an update (it retries): no server error
    in the orchestrator's log, nothing recorded, and the whole update sent again is
    accepted."""
    _, alpha, _ = train_tasks(state)
    port = free_port()
    body = update_body(alpha, 1.0, 30)
    head = (
        f"POST /v1/tasks/{alpha.task_id}/update HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {state.credentials['alpha']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with serving(state.home, port) as process:
        with socket.create_connection(("127.0.0.1", port)) as cut:
            cut.sendall(head.encode() + body[: len(body) // 2])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1") as client:
            response = post(client, state, "alpha", alpha.task_id, body)
        process.terminate()
        log = process.communicate(timeout=30)[0].decode()
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log
