"""A site that sends numbers no site can have: each answer is refused with a clear error and
recorded as that site's failure of its task; the round, the job, the other jobs and the
listings go on (SQLite and PostgreSQL). Every test here failed before the orchestrator
range-checked what sites send (issue 10)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from oncofed.learning.registry import parameter_shapes
from oncofed.orchestrator.db import Round, Task, utcnow
from oncofed.orchestrator.progress import Progress
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import StatsResult
from tests.orchestrator.test_rounds import held_out, post_update
from tests.support import State, auth, in_project, make_spec, sample_profile

HUGE = "1" + "0" * 400
"""10^400: valid JSON, an integer Python reads exactly."""
RFS = {"time": "rfs_days", "event": "rfs_event"}


def analysis(kind: dict[str, Any]) -> dict[str, Any]:
    return AnalysisSpec.model_validate(
        {"name": "hostile", "dataset": "gbsg2", "analysis": kind}
    ).model_dump(mode="json")


def submit(api: TestClient, state: State, spec: dict[str, Any]) -> str:
    spec = in_project(state, spec)
    created = api.post("/jobs", json=spec, headers=auth(state.admin_token))
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def task_of(api: TestClient, state: State, site: str) -> dict[str, Any]:
    response = api.get("/tasks/next", params={"wait": 0}, headers=auth(state.credentials[site]))
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def post(api: TestClient, state: State, site: str, task_id: str, body: str | dict[str, Any]) -> Any:
    text = body if isinstance(body, str) else json.dumps(body)
    headers = {**auth(state.credentials[site]), "Content-Type": "application/json"}
    return api.post(f"/tasks/{task_id}/result", content=text, headers=headers)


def refused(response: Any, *words: str) -> str:
    """A refusal recorded as the site's failure: 422 with a rejected acknowledgement; its
    reason."""
    assert response.status_code == 422, response.text
    ack = response.json()
    assert ack["status"] == "rejected", ack
    for word in words:
        assert word in ack["detail"], ack
    return str(ack["detail"])


def job_view(api: TestClient, state: State, job_id: str) -> dict[str, Any]:
    """The job as a researcher reads it; the listing must answer too."""
    listing = api.get("/jobs", headers=auth(state.admin_token))
    assert listing.status_code == 200, listing.text
    one = api.get(f"/jobs/{job_id}", headers=auth(state.admin_token))
    assert one.status_code == 200, one.text
    view: dict[str, Any] = one.json()
    return view


def stats(n: int) -> dict[str, Any]:
    return {"n": n, "sums": [float(n), 2.0 * n], "sumsq": [2.0 * n, 5.0 * n]}


def test_a_count_of_ten_to_the_400_is_refused_and_the_round_goes_on(
    api: TestClient, state: State
) -> None:
    job_id = submit(api, state, make_spec().model_dump(mode="json"))
    alpha, beta = task_of(api, state, "alpha"), task_of(api, state, "beta")
    body = f'{{"n": {HUGE}, "sums": [1.0, 2.0], "sumsq": [2.0, 5.0]}}'
    refused(post(api, state, "alpha", alpha["task_id"], body), "invalid result", "n:")
    accepted = post(api, state, "beta", beta["task_id"], stats(10))
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    view = job_view(api, state, job_id)
    assert view["status"] == "running" and view["rounds"][1]["kind"] == "train"
    assert view["rounds"][0]["sites"]["alpha"]["status"] == "rejected"
    assert "n: " in view["rounds"][0]["sites"]["alpha"]["detail"]


@pytest.mark.parametrize(
    ("declared", "n", "words"),
    [
        (None, 10**12, ("n 1000000000000 is above 1000000000", "sane maximum")),
        (50, 100, ("n 100 is above 50", "declared")),
        ("<11", 30, ("n 30 is above 10",)),
    ],
)
def test_counts_above_the_declared_cohort_or_the_maximum_are_refused(
    api: TestClient, state: State, declared: int | str | None, n: int, words: tuple[str, ...]
) -> None:
    """Consistent sums do not help: a site cannot weigh more than the patients it declared
    in its data profile, nor more than 10^9."""
    if declared is not None:
        profile = sample_profile("data", patients=declared).model_dump_json()
        put = api.put("/profiles/data", content=profile, headers=auth(state.credentials["alpha"]))
        assert put.status_code == 204, put.text
    submit(api, state, make_spec().model_dump(mode="json"))
    task = task_of(api, state, "alpha")
    refused(post(api, state, "alpha", task["task_id"], stats(n)), *words)


def test_sums_no_rows_can_have_are_refused(api: TestClient, state: State) -> None:
    submit(api, state, make_spec().model_dump(mode="json"))
    task = task_of(api, state, "alpha")
    body = {"n": 10, "sums": [1e100, 1.0], "sumsq": [1.0, 1.0]}  # mean 1e99, variance < 0
    refused(post(api, state, "alpha", task["task_id"], body), "sum^2 is above n * sum of squares")


@pytest.mark.parametrize("field", ["sums", "sumsq"])
def test_a_sum_beyond_the_largest_statistic_is_refused_by_its_place(
    api: TestClient, state: State, field: str
) -> None:
    """Sums are checked as a list (no call per number): the refusal still names the item."""
    submit(api, state, make_spec().model_dump(mode="json"))
    task = task_of(api, state, "alpha")
    body = stats(10) | {field: [1.0, 1e101]}
    refused(post(api, state, "alpha", task["task_id"], body), f"{field}:", "item 1", "1e+100")


def finish_one_round(api: TestClient, state: State, job_id: str, good: dict[str, Any]) -> None:
    """beta answers ``good``; the job completes with beta alone."""
    task = task_of(api, state, "beta")
    assert post(api, state, "beta", task["task_id"], good).status_code == 200
    view = job_view(api, state, job_id)
    assert view["status"] == "completed", view["error"]
    assert view["participation"]["sites"]["alpha"]["state"] == "failed"


KM = {"type": "kaplan_meier", "outcome": RFS}
KM_GOOD = {
    "part": {"type": "kaplan_meier", "groups": {"all": {"at_risk": [40, 20], "events": [11, 0]}}},
    "cohort": 40,
}


@pytest.mark.parametrize(
    ("series", "words"),
    [
        ({"at_risk": [2**63, 20], "events": [11, 0]}, ("invalid result", "less than or equal")),
        ({"at_risk": [10**10, 20], "events": [11, 0]}, ("more patients at risk than 40",)),
        ({"at_risk": [40, 20], "events": [41, 0]}, ("more events than patients at risk",)),
        ({"at_risk": [40] * 300, "events": [0] * 300}, ("longer than the 244 bins",)),
    ],
)
def test_kaplan_meier_counts_that_cannot_be_are_refused(
    api: TestClient, state: State, series: dict[str, list[int]], words: tuple[str, ...]
) -> None:
    job_id = submit(api, state, analysis(KM))
    task = task_of(api, state, "alpha")
    body = {"part": {"type": "kaplan_meier", "groups": {"all": series}}, "cohort": 40}
    refused(post(api, state, "alpha", task["task_id"], body), *words)
    finish_one_round(api, state, job_id, KM_GOOD)


SUMMARY = {"type": "summary", "variable": "age_at_diagnosis", "bins": [0, 50, 100]}


@pytest.mark.parametrize(
    ("total", "squares", "words"),
    [
        (1e308, 1e308, ("invalid result", "part.summary.total")),
        (1e100, 1e100, ("sum^2 is above n * sum of squares",)),
    ],
)
def test_summary_totals_that_would_overflow_are_refused(
    api: TestClient, state: State, total: float, squares: float, words: tuple[str, ...]
) -> None:
    job_id = submit(api, state, analysis(SUMMARY))
    task = task_of(api, state, "alpha")
    part = {"type": "summary", "n": 20, "total": total, "total_squares": squares}
    body = {"part": {**part, "histogram": [0, 10, 10, 0, 0]}, "cohort": 20}
    refused(post(api, state, "alpha", task["task_id"], body), *words)
    good = {"type": "summary", "n": 20, "total": 800.0, "total_squares": 34000.0}
    finish_one_round(api, state, job_id, {"part": {**good, "histogram": [0, 10, 10, 0, 0]}})


def derivatives(beta: float) -> dict[str, Any]:
    """Of the log-likelihood -2 (b - 0.25)^2 - 10: Newton converges in two steps."""
    return {
        "loglik": -2 * (beta - 0.25) ** 2 - 10,
        "gradient": [-4 * (beta - 0.25)],
        "hessian": [[-4.0]],
    }


def test_newton_derivatives_of_the_wrong_length_are_refused(api: TestClient, state: State) -> None:
    job_id = submit(
        api, state, analysis({"type": "cox", "outcome": RFS, "covariates": ["age_at_diagnosis"]})
    )
    task = task_of(api, state, "alpha")
    wrong = {**derivatives(0.0), "gradient": [1.0, 0.0]}
    part = {"type": "regression", "n": 30, "events": 11, "pooled": wrong, "own": wrong}
    refused(post(api, state, "alpha", task["task_id"], {"part": part}), "of the model's 1 terms")
    for _ in range(10):
        view = job_view(api, state, job_id)
        if view["status"] != "running":
            break
        task = task_of(api, state, "beta")
        pooled, own = task["params"]["pooled"][0], task["params"]["own"][0]
        part = {
            "type": "regression",
            "n": 30,
            "events": 11,
            "pooled": derivatives(pooled),
            "own": derivatives(own),
        }
        assert post(api, state, "beta", task["task_id"], {"part": part}).status_code == 200
    assert view["status"] == "completed", view["error"]
    assert view["report"]["terms"][0]["coef"] == pytest.approx(0.25)


def train_through(state: State, job_id: str, sizes: dict[str, int]) -> None:
    """The stats round and one training round, each site sending ``sizes`` rows."""
    coordinator = state.coordinator
    for site, n in sizes.items():
        task = coordinator.next_task(state.sites[site])
        assert task is not None and task.job_id == job_id
        coordinator.accept_result(state.sites[site], task.task_id, StatsResult(**stats(n)))
    shapes = parameter_shapes(make_spec().model, 2)
    for site, n in sizes.items():
        task = coordinator.next_task(state.sites[site])
        assert task is not None and task.kind == "train"
        ones = {k: np.ones(s, np.float32) for k, s in shapes.items()}
        status, detail = post_update(state, site, task, ones, n)
        assert status == "accepted", detail


def test_metrics_of_1e308_are_refused_and_the_listings_answer(
    api: TestClient, state: State
) -> None:
    job_id = submit(api, state, make_spec(rounds=1).model_dump(mode="json"))
    train_through(state, job_id, {"alpha": 30, "beta": 10})
    alpha, beta = task_of(api, state, "alpha"), task_of(api, state, "beta")
    assert alpha["kind"] == "evaluate"
    bad = {"evaluation": {"n_eval": held_out(30), "metrics": {"auc": 1e308}}, "compute_seconds": 0}
    refused(post(api, state, "alpha", alpha["task_id"], bad), "metrics.auc")
    n = held_out(10)
    scores = {"edges": [0, 2048], "positive": [1], "negative": [n - 1]}  # 1 of n positive
    evaluation = {"n_eval": n, "metrics": {"auc": 0.5}, "scores": scores}
    good = {"evaluation": evaluation, "compute_seconds": 0}
    assert post(api, state, "beta", beta["task_id"], good).status_code == 200
    view = job_view(api, state, job_id)
    assert view["status"] == "completed"
    assert view["rounds"][-1]["metrics"]["auc"] == pytest.approx(0.5)


def stored_as_accepted(state: State, site: str, kind: str, result: str) -> None:
    """Store ``result`` as ``site``'s accepted answer to its open ``kind`` task, as an
    orchestrator without today's checks did."""
    with state.sessions.begin() as session:
        task = (
            session.query(Task)
            .join(Round)
            .filter(Task.site_id == state.sites[site], Round.kind == kind, Round.status == "open")
            .one()
        )
        task.status, task.result_json, task.finished_at = "accepted", result, utcnow()


def test_answers_stored_before_the_checks_neither_break_listings_nor_stick_the_job(
    api: TestClient, state: State
) -> None:
    """An orchestrator upgraded with a poisoned row in its database: a count of 10^400 in an
    open round, metrics of 1e308 in a finished one. The listings answer, the open round closes
    with a clean failure of its job when the other site answers."""
    finished = submit(api, state, make_spec(rounds=1).model_dump(mode="json"))
    train_through(state, finished, {"alpha": 30, "beta": 10})
    for site, n in (("alpha", 30), ("beta", 10)):
        evaluation = {"n_eval": held_out(n), "metrics": {"auc": 1e308}}
        stored_as_accepted(
            state, site, "evaluate", json.dumps({"evaluation": evaluation, "compute_seconds": 0})
        )
    poisoned = submit(api, state, make_spec().model_dump(mode="json"))
    stored_as_accepted(state, "alpha", "stats", f'{{"n": {HUGE}, "sums": [1, 2], "sumsq": [2, 5]}}')
    task = task_of(api, state, "beta")
    assert post(api, state, "beta", task["task_id"], stats(10)).status_code == 200
    view = job_view(api, state, poisoned)
    assert view["status"] == "failed" and "pooling the feature statistics" in view["error"]
    old = job_view(api, state, finished)
    assert old["rounds"][-1]["metrics"] == {}
    assert "out of today's bounds" in old["rounds"][-1]["sites"]["alpha"]["detail"]


def test_the_deadline_checker_isolates_each_job(
    state: State, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing one job's round fails with an error no check foresaw: it is logged once, that
    job ends failed, and the round of the job after it still closes at its deadline."""
    coordinator = state.coordinator
    broken = coordinator.submit(make_spec(name="broken", sites=["alpha"]), state.admin_id).id
    healthy = coordinator.submit(make_spec(name="healthy"), state.admin_id).id
    task = coordinator.next_task(state.sites["beta"])
    assert task is not None and task.job_id == healthy
    coordinator.accept_result(state.sites["beta"], task.task_id, StatsResult(**stats(20)))
    with state.sessions.begin() as session:  # both stats rounds are past their deadline: alpha
        # answered neither
        for rnd in session.query(Round):
            rnd.deadline = utcnow() - timedelta(seconds=1)
    real = Progress.too_few

    def too_few(self: Progress, job: Any, rnd: Any, accepted: Any) -> bool:
        if job.id == broken:
            raise RuntimeError("a bug")
        return real(self, job, rnd, accepted)

    monkeypatch.setattr(Progress, "too_few", too_few)
    with caplog.at_level(logging.ERROR, logger="oncofed.orchestrator"):
        for _ in range(3):
            coordinator.expire()
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    with state.sessions() as session:
        rounds = {(r.job_id, r.number): r for r in session.query(Round)}
        assert rounds[broken, 0].status == rounds[healthy, 0].status == "closed"
        assert rounds[broken, 0].job.status == "failed" and (broken, 1) not in rounds
        assert "could not be closed: RuntimeError('a bug')" in str(rounds[broken, 0].job.error)
        assert rounds[healthy, 0].job.status == "running", rounds[healthy, 0].job.error
        assert rounds[healthy, 1].kind == "train" and rounds[healthy, 1].status == "open"
