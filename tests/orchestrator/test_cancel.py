"""Cancelling a job: its open tasks are withdrawn, a late answer is refused with the reason,
secure rounds in progress are abandoned with their masked inputs, and the job stays
``cancelled`` across a restart (SQLite and PostgreSQL; over HTTP where a route is called)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from oncofed.audit import Filters
from oncofed.edge import LocalStore
from oncofed.orchestrator import projects
from oncofed.orchestrator.db import AUDIT, Task
from oncofed.orchestrator.errors import Conflict
from oncofed.orchestrator.setup import add_principal
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import JobPublic, SiteState, StatsResult
from oncofed.wire.spec import JobSpec
from tests.sites import Site, drive, enrol, job, play, sites, sixty_each
from tests.support import State, auth, in_project

NAMES = ["alpha", "beta", "gamma"]
BREAST = {"primary_site": "C50", "time_origin": "diagnosis"}
KM = {"type": "kaplan_meier", "outcome": {"time": "rfs_days", "event": "rfs_event"}}
SQLITE = pytest.mark.parametrize("state", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocalStore]:
    return sixty_each(tmp_path_factory.mktemp("cancel"), NAMES)


@pytest.fixture
def three(state: State, stores: dict[str, LocalStore], tmp_path: Path) -> Iterator[dict[str, Site]]:
    """alpha, beta and gamma (enrolled here): three, as a secure round needs."""
    enrol(state, ["gamma"])
    with ExitStack() as stack:
        yield sites(state, stores, stack, tmp_path / "edges")


def training(**extra: Any) -> dict[str, Any]:
    """A three-round logistic training job on GBSG2, as JSON."""
    return {
        "name": "t",
        "dataset": "gbsg2",
        "cohort": BREAST,
        "features": ["age_at_diagnosis", "treatment.endocrine"],
        "outcome": {"type": "binary", "label": "rfs_event"},
        "model": {"type": "logistic"},
        "rounds": 3,
        "local": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        **extra,
    }


def researcher(state: State, project: str) -> str:
    """rita's token; she is a member of ``project``."""
    token = add_principal(state.home, "rita", "researcher").token
    with state.sessions.begin() as session:
        projects.add_member(session, project, "rita", state.admin_id, "operator")
    return token


def test_a_job_cancelled_mid_round_withdraws_its_tasks_and_stays_cancelled(
    state: State, http: TestClient, three: dict[str, Site]
) -> None:
    spec = in_project(state, training())
    rita = auth(researcher(state, spec["project"]))
    job_id = http.post("/jobs", json=spec, headers=rita).json()["id"]
    assert three["alpha"].act()  # alpha answers the statistics round; beta is working on it
    beta = three["beta"]
    task = state.coordinator.next_task(beta.id)
    assert task is not None
    late = beta.runner.run(task, beta.fetch)
    assert isinstance(late, StatsResult)

    answer = http.post(f"/jobs/{job_id}/cancel", headers=rita)
    assert answer.status_code == 200, answer.text
    cancelled = JobPublic.model_validate_json(answer.content)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert cancelled.error == f"job {job_id} was cancelled by researcher:rita"
    (stats,) = cancelled.rounds
    assert stats.status == "closed"
    assert {n: s.status for n, s in stats.sites.items()} == {
        "alpha": "accepted",
        "beta": "cancelled",
        "gamma": "cancelled",
    }
    beta = cancelled.participation.sites["beta"]
    assert beta.state == SiteState.CANCELLED and "was cancelled" in beta.reason  # not its failure

    edge = auth(state.credentials["beta"])
    refused = http.post(
        f"/tasks/{task.task_id}/result", content=late.model_dump_json(), headers=edge
    )
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"task {task.task_id} was withdrawn: job {job_id} was cancelled by researcher:rita"
    )
    for name in NAMES:
        polled = http.get("/tasks/next", params={"wait": 0}, headers=auth(state.credentials[name]))
        assert polled.status_code == 204
    with state.sessions() as session:
        ended = AUDIT.read(session, Filters(action="job.cancelled"))
    assert [(e.actor, e.detail["job"]) for e in ended] == [("researcher:rita", job_id)]

    restarted = state.restart()
    assert job(state, job_id).status == "cancelled"
    assert all(restarted.next_task(site.id) is None for site in three.values())
    with pytest.raises(Conflict, match=re.escape("has ended (cancelled): only a running job")):
        restarted.cancel(job_id, "operator:operator")


@SQLITE
def test_cancelling_an_ended_job_is_a_one_line_error(
    state: State, http: TestClient, three: dict[str, Site]
) -> None:
    done = play(state, three, JobSpec.model_validate(training(rounds=1)))
    assert done.status == "completed", done.error
    answer = http.post(f"/jobs/{done.id}/cancel", headers=auth(state.admin_token))
    assert answer.status_code == 409
    assert answer.json()["detail"] == (
        f"job {done.id} has ended (completed): only a running job is cancelled"
    )
    assert http.post("/jobs/nope/cancel", headers=auth(state.admin_token)).status_code == 404


def test_a_secure_round_in_progress_is_abandoned_with_its_masked_inputs(
    state: State, three: dict[str, Site]
) -> None:
    spec = AnalysisSpec.model_validate(
        {"name": "km", "dataset": "gbsg2", "cohort": BREAST, "analysis": KM,
         "privacy": {"secure_aggregation": True}}
    )  # fmt: skip
    job_id = state.coordinator.submit(spec, state.admin_id).id
    drive(state, three, job_id, until=lambda j: j.rounds[-1].phase == "masked")
    alpha, beta = three["alpha"], three["beta"]
    assert alpha.act()  # its masked input is in
    task = state.coordinator.next_task(beta.id)
    assert task is not None and task.secure is not None
    masked = beta.secure.step(task, task.secure, lambda: beta.runner.run(task, beta.fetch))
    with state.sessions() as session:
        sha = session.scalar(select(Task.result_sha).where(Task.site_id == alpha.id))
    assert sha is not None and state.coordinator.blobs.path(sha).exists()

    state.coordinator.cancel(job_id, "operator:operator")

    public = job(state, job_id)
    assert public.status == "cancelled"
    assert public.rounds[-1].status == "closed"
    assert public.rounds[-1].sites["beta"].status == "cancelled"
    assert not state.coordinator.blobs.path(sha).exists()
    with pytest.raises(Conflict, match=r"was withdrawn: job \w+ was cancelled by operator"):
        beta.deliver(task, masked)
    assert not any([site.act() for site in three.values()])
