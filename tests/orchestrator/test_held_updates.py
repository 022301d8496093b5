"""A small update of declared length is held in memory and kept in the database with the
transaction that accepts it (``db.UpdateBody``), within a budget of memory; past the budget,
or of unknown length, it is spooled to a blob. Either way the task's limit holds, and the
bodies go when their round is done with them (closed or cancelled)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from oncofed.orchestrator.db import UpdateBody
from oncofed.orchestrator.routes import edge
from oncofed.wire.messages import SHA256_HEADER
from tests.orchestrator.test_durability import kept, post, train_tasks, update_body
from tests.orchestrator.test_rounds import post_update, weights_like
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
