"""The edge's own checks: local policy, minimum cohort, data that does not fit, model checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import TaskRunner
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights, parameter_shapes
from oncofed.wire import tensors
from oncofed.wire.messages import (
    Decline,
    EvaluateResult,
    StatsResult,
    TaskAssignment,
    TrainResult,
)
from oncofed.wire.spec import JobSpec
from tests.support import make_spec, save_columns


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=120), rng.normal(size=120)
    y = (x1 + rng.normal(size=120) > 0).astype(int)
    return save_columns(tmp_path / "datasets", "data", {"x1": x1, "x2": x2, "y": y})


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "edge")
    yield ledger
    ledger.close()


def assignment(spec: JobSpec, kind: str = "stats", **extra: object) -> TaskAssignment:
    number = {"stats": 0, "train": 1}.get(kind, spec.rounds + 1)
    return TaskAssignment.model_validate(
        {"task_id": "t1", "job_id": "j1", "round": number, "kind": kind, "spec": spec, **extra}
    )


def never_fetch(sha: str) -> bytes:
    raise AssertionError("a declined task must not download anything")


@pytest.mark.parametrize(
    ("policy", "spec", "reason"),
    [
        (EdgePolicy(allowed_models=["cox"]), make_spec(), "model type 'logistic' is not allowed"),
        (EdgePolicy(allowed_tasks=["train"]), make_spec(), "task kind 'stats' is not allowed"),
        (EdgePolicy(allowed_datasets=["other"]), make_spec(), "dataset 'data' is not open"),
        (EdgePolicy(max_rounds=1), make_spec(rounds=5), "max_rounds"),
        (EdgePolicy(max_parameters=10), make_spec(model={"type": "mlp"}), "max_parameters"),
        (EdgePolicy(min_cohort_size=500), make_spec(), "minimum cohort size"),
        (
            EdgePolicy(),
            make_spec(features=["ext.x1", "ext.nope"]),
            "no extension feature 'ext.nope'",
        ),
        (
            EdgePolicy(),
            make_spec(features=["ext.x1", "age_at_diagnosis"]),
            "the job's cohort at this site is smaller than its minimum cohort size",
        ),  # nobody has an age: no complete case
        (
            EdgePolicy(),
            make_spec(cohort={"time_origin": "surgery"}),
            "the job's cohort at this site is smaller than its minimum cohort size",
        ),
        (EdgePolicy(), make_spec(dataset="missing"), "not imported at this site"),
        (
            EdgePolicy(),
            make_spec(evaluation={"holdout": 0.99}),
            "training rows at this site are fewer",
        ),
        (
            EdgePolicy(),
            make_spec(evaluation={"holdout": 0.05}),
            "held-out rows at this site are fewer",
        ),
    ],
)
def test_task_outside_policy_or_data_is_declined(
    store: LocalStore, ledger: Ledger, policy: EdgePolicy, spec: JobSpec, reason: str
) -> None:
    outcome = TaskRunner(store, policy, "alpha", ledger).run(assignment(spec), never_fetch)
    assert isinstance(outcome, Decline)
    assert reason in outcome.reason


def test_stats_are_sums_over_training_rows_only(store: LocalStore, ledger: Ledger) -> None:
    spec = make_spec()
    outcome = TaskRunner(store, EdgePolicy(), "alpha", ledger).run(assignment(spec), never_fetch)
    assert isinstance(outcome, StatsResult)
    assert outcome.n == 90  # 120 rows, 25% held out
    assert len(outcome.sums) == 2


def train_task(runner: TaskRunner) -> tuple[TaskAssignment, bytes]:
    """A training task (after the job's statistics round, this site alone) and its model."""
    spec = make_spec()
    stats = runner.run(assignment(spec).model_copy(update={"task_id": "t0"}), never_fetch)
    assert isinstance(stats, StatsResult)
    model = tensors.encode(initial_weights(spec.model, 2, spec.seed))
    task = assignment(
        spec,
        "train",
        model_sha256=tensors.sha256(model),
        standardization=standardization(stats),
        pooled=stats,
    )
    return task, model


def test_train_returns_an_update_of_the_agreed_shape(store: LocalStore, ledger: Ledger) -> None:
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger)
    task, model = train_task(runner)
    spec = task.spec
    outcome = runner.run(task, lambda sha: model)
    assert isinstance(outcome, bytes)
    meta = tensors.read_meta(outcome, TrainResult)
    assert meta.task_id == "t1" and meta.n_train == 90 and meta.evaluation.n_eval == 30
    tensors.check_weights(tensors.decode(outcome), parameter_shapes(spec.model, 2))
    evaluate = task.model_copy(update={"kind": "evaluate", "round": 3, "task_id": "t3"})
    evaluated = runner.run(evaluate, lambda sha: model)
    assert isinstance(evaluated, EvaluateResult) and "auc" in evaluated.evaluation.metrics


def test_a_tampered_global_model_is_refused(store: LocalStore, ledger: Ledger) -> None:
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger)
    task, model = train_task(runner)
    with pytest.raises(ValueError, match="SHA-256"):
        runner.run(task, lambda sha: model + b" ")
    wrong = tensors.encode({"layers.0.weight": np.zeros((1, 3), np.float32)})
    later = {"model_sha256": tensors.sha256(wrong), "round": 2, "task_id": "t2"}
    with pytest.raises(ValueError, match=r"names differ|shape"):
        runner.run(task.model_copy(update=later), lambda s: wrong)


def test_a_small_cohort_is_declined_before_anything_about_its_rows_is_said(
    tmp_path: Path,
) -> None:
    """Facts about a cohort below the minimum size (mixed origins, odd values) stay local."""
    rng = np.random.default_rng(3)
    columns = {"x1": rng.normal(size=30) - 5, "x2": rng.normal(size=30), "y": np.ones(30)}
    store = save_columns(tmp_path / "datasets", "data", columns)
    spec = make_spec(features=[{"name": "ext.x1", "transform": "log1p"}, "ext.x2"])
    policy = EdgePolicy(min_cohort_size=40)
    with Ledger(tmp_path / "edge") as ledger:
        outcome = TaskRunner(store, policy, "alpha", ledger).run(assignment(spec), never_fetch)
    assert isinstance(outcome, Decline)
    assert "smaller than its minimum cohort size" in outcome.reason
    assert "<= -1" not in outcome.reason
