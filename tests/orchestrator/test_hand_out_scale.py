"""Handing out a task reads a site's unanswered tasks, not every task the site ever had: an
orchestrator a consortium runs for years must not slow down with its history."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from oncofed.orchestrator.rehearsal import job_spec, play
from oncofed.orchestrator.rounds import _DELIVERABLE
from tests.orchestrator.test_rehearsal import engine_of
from tests.support import TEST_PROJECT, State

pytestmark = pytest.mark.parametrize("state", ["sqlite"], indirect=True)
"""SQLite counts the steps of its virtual machine, a measure of a query's work that does not
depend on the machine; PostgreSQL's plan depends on its table statistics (it gets the same
index from the same migration, ``test_migrations``)."""


def steps(engine: Engine, site_ids: list[int]) -> int:
    """The SQLite virtual-machine steps of the hand-out's query for ``site_ids``."""
    count = 0

    def step() -> int:
        nonlocal count
        count += 1
        return 0  # go on

    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        assert raw is not None
        raw.set_progress_handler(step, 1)
        try:
            found = connection.execute(_DELIVERABLE, {"sites": site_ids}).all()
        finally:
            raw.set_progress_handler(None, 1)
    assert {row.site_id for row in found} == set(site_ids)  # each has its task waiting
    return count


def waiting_after(state: State, jobs: int) -> int:
    """Play ``jobs`` whole jobs at alpha and beta, submit one more and count the steps of
    finding its first tasks (then cancel it, so more history can follow)."""
    sites = ["alpha", "beta"]
    ids = [state.sites[s] for s in sites]
    spec = job_spec(TEST_PROJECT, sites)
    for _ in range(jobs):
        assert play(state.coordinator, state.sessions, spec, state.admin_id, ids)[0] == "completed"
    job_id = state.coordinator.submit(spec, state.admin_id).id
    counted = steps(engine_of(state), ids)
    state.coordinator.cancel(job_id, "test")
    return counted


@pytest.mark.parametrize("index", ["site and status", "site only"])
def test_hand_out_at_scale(state: State, index: str) -> None:
    """After 20 more jobs (100 more tasks a site), finding a site's waiting task takes as
    many steps as before; with the index of site alone (the schema before migration 0013)
    it reads every task the site had, and takes several times as many."""
    if index == "site only":
        with engine_of(state).begin() as connection:
            connection.exec_driver_sql("DROP INDEX ix_task_site_id_status")
            connection.exec_driver_sql("CREATE INDEX ix_task_site_id ON task (site_id)")
    few = waiting_after(state, 1)
    many = waiting_after(state, 20)
    if index == "site and status":
        assert many <= few * 1.1, (few, many)
    else:
        assert many > few * 3, (few, many)
