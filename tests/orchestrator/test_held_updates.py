"""A small update of declared length is held in memory and kept in the database with the
transaction that accepts it (``db.UpdateBody``), within a budget of memory; past the budget,
or of unknown length, it is spooled to a blob. Either way the task's limit holds, and the
bodies go when their round is done with them (closed, cancelled, or its job failed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from oncofed.orchestrator.db import Job, Round, Task, UpdateBody, utcnow
from oncofed.orchestrator.progress import Progress
from oncofed.orchestrator.routes import edge
from oncofed.wire.messages import SHA256_HEADER, TaskAssignment
from tests.orchestrator.test_durability import kept, post, train_tasks, update_body
from tests.orchestrator.test_rounds import (
    make_spec,
    post_update,
    take,
    through_stats,
    weights_like,
)
from tests.support import State, auth


def held(state: State) -> int:
    with state.sessions() as session:
        return session.scalar(select(func.count()).select_from(UpdateBody)) or 0


def test_an_update_past_the_memory_budget_is_spooled_and_the_budget_comes_back(
    api: TestClient, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, alpha, beta = train_tasks(state)
    body = update_body(alpha, 0.1, 30)
    monkeypatch.setattr(edge, "INLINE_BUDGET", len(body) - 1)
    assert post(api, state, "alpha", alpha.task_id, body).json()["status"] == "accepted"
    assert kept(state, alpha.task_id, body, chunked=True)  # a blob, as if of unknown length
    monkeypatch.undo()
    lie = {**auth(state.credentials["beta"]), SHA256_HEADER: "0" * 64}
    refused = api.post(f"/tasks/{beta.task_id}/update", content=body, headers=lie)
    assert refused.status_code == 400 and "SHA-256" in refused.json()["detail"]
    assert edge._HELD.bytes == 0  # given back, refused or not
    assert held(state) == 0


def test_a_held_update_past_its_task_limit_is_refused(
    api: TestClient, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, alpha, _ = train_tasks(state)
    body = update_body(alpha, 0.1, 30)
    limit = len(body) - 1
    coordinator = api.app.state.coordinator  # type: ignore[attr-defined]
    monkeypatch.setattr(coordinator, "update_limit", lambda *_: limit)
    refused = post(api, state, "alpha", alpha.task_id, body)
    assert refused.status_code == 413
    assert refused.json()["detail"] == f"the body exceeds the {limit} bytes this task takes"
    assert edge._HELD.bytes == 0 and held(state) == 0


def test_cancelling_a_job_drops_the_updates_it_held(state: State) -> None:
    job_id, alpha, _ = train_tasks(state)
    weights = weights_like(0.1)
    assert post_update(state, "alpha", alpha, weights, 30, spooled=False)[0] == "accepted"
    assert held(state) == 1
    state.coordinator.cancel(job_id, "operator:operator")
    assert held(state) == 0


def _too_few(state: State, beta: TaskAssignment, _: pytest.MonkeyPatch) -> None:
    state.coordinator.decline(state.sites["beta"], beta.task_id, "cohort too small")


def _aggregation_fails(state: State, beta: TaskAssignment, patch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise ValueError("the mean is not finite")

    patch.setattr(Progress, "advance_model", fail)
    state.coordinator.decline(state.sites["beta"], beta.task_id, "cohort too small")


def _abandoned(state: State, _: TaskAssignment, patch: pytest.MonkeyPatch) -> None:
    def bug(*_: object) -> None:
        raise RuntimeError("a bug")

    patch.setattr(Progress, "after_train", bug)
    with state.sessions.begin() as session:  # beta never answers
        for rnd in session.query(Round).where(Round.status == "open"):
            rnd.deadline = utcnow() - timedelta(seconds=1)
    state.coordinator.expire()


@pytest.mark.parametrize("spooled", [False, True], ids=["held", "spooled"])
@pytest.mark.parametrize(
    ("end", "min_sites", "why"),
    [
        (_too_few, 2, "min_sites is 2"),
        (_aggregation_fails, 1, "aggregation failed"),
        (_abandoned, 1, "could not be closed"),
    ],
    ids=["too-few", "aggregation-fails", "abandoned"],
)
def test_a_round_that_ends_its_job_lets_its_updates_go(
    state: State,
    monkeypatch: pytest.MonkeyPatch,
    end: Callable[[State, TaskAssignment, pytest.MonkeyPatch], None],
    min_sites: int,
    why: str,
    spooled: bool,
) -> None:
    """A training round whose job fails as it closes (too few sites, its mean refused, an
    error no check foresaw) keeps none of its updates, as a round that moves on keeps none."""
    spec = make_spec(rounds=1, min_sites=min_sites)
    job = state.coordinator.submit(spec, state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    alpha, beta = take(state, "alpha"), take(state, "beta")
    weights = weights_like(0.1)
    assert post_update(state, "alpha", alpha, weights, 30, spooled=spooled)[0] == "accepted"
    with state.sessions() as session:
        sha = session.scalar(select(Task.result_sha).where(Task.id == alpha.task_id))
    assert sha is not None and (held(state) == 1) is not spooled
    assert state.coordinator.blobs.path(sha).exists() is spooled
    end(state, beta, monkeypatch)
    with state.sessions() as session:
        failed = session.get(Job, job.id)
        assert failed is not None and failed.status == "failed" and why in str(failed.error)
    assert held(state) == 0 and not state.coordinator.blobs.path(sha).exists()
