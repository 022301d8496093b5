"""The edge's own checks: local policy, minimum cohort, data that does not fit, model checks;
and what a secure round's answer says in the clear."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm

from oncofed.analytics import site
from oncofed.cdm.frame import JobRows, job_rows
from oncofed.cdm.tables import CdmData
from oncofed.edge import EdgePolicy, LocalStore, runner
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import Contribution, TaskRunner
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights, parameter_shapes
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisParams, AnalysisSpec, OwnEstimate
from oncofed.wire.messages import (
    Decline,
    EvaluateResult,
    StatsResult,
    TaskAssignment,
    TrainResult,
)
from oncofed.wire.secagg import RoundContext, SecureStep
from oncofed.wire.spec import JobSpec
from tests.support import SITE_KEY, make_spec, save_columns


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
            "the patients with complete data and an outcome at this site are fewer than its "
            "minimum cohort size (policy min_cohort_size=20); left out: those without a value "
            "of age_at_diagnosis",
        ),  # nobody has an age: no complete case, named as such (not as a small cohort)
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
    outcome = TaskRunner(store, policy, "alpha", ledger, SITE_KEY).run(
        assignment(spec), never_fetch
    )
    assert isinstance(outcome, Decline)
    assert reason in outcome.reason


def test_stats_are_sums_over_training_rows_only(store: LocalStore, ledger: Ledger) -> None:
    spec = make_spec()
    outcome = TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY).run(
        assignment(spec), never_fetch
    )
    assert isinstance(outcome, StatsResult)
    assert outcome.n == 90  # 120 rows, 25% held out
    assert len(outcome.sums) == 2


def test_the_sites_of_one_process_read_a_jobs_rows_in_turn(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow lets go of the GIL around each small operation: sites reading at once would take
    turns on the interpreter at each one (``runner.rows_in_turn``)."""
    reading, most, count = 0, 0, threading.Lock()

    def watched(spec: JobSpec, data: CdmData) -> JobRows:
        nonlocal reading, most
        with count:
            reading += 1
            most = max(most, reading)
        time.sleep(0.05)  # time enough for the other site to start reading
        try:
            return job_rows(spec, data)
        finally:
            with count:
                reading -= 1

    monkeypatch.setattr(runner, "job_rows", watched)
    ledgers = [Ledger(tmp_path / f"edge-{name}") for name in ("alpha", "beta")]
    sites = [
        TaskRunner(store, EdgePolicy(), name, ledger, SITE_KEY)
        for name, ledger in zip(("alpha", "beta"), ledgers, strict=True)
    ]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(
                pool.map(lambda site: site.run(assignment(make_spec()), never_fetch), sites)
            )
    finally:
        for ledger in ledgers:
            ledger.close()
    assert all(isinstance(outcome, StatsResult) and outcome.n == 90 for outcome in outcomes)
    assert most == 1


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
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY)
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
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY)
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
        outcome = TaskRunner(store, policy, "alpha", ledger, SITE_KEY).run(
            assignment(spec), never_fetch
        )
    assert isinstance(outcome, Decline)
    assert "smaller than its minimum cohort size" in outcome.reason
    assert "<= -1" not in outcome.reason


def secure_newton(number: int, params: AnalysisParams) -> TaskAssignment:
    """Round ``number`` of a secure logistic regression of ext.y on ext.x1 and ext.x2."""
    spec = AnalysisSpec.model_validate(
        {
            "name": "a",
            "dataset": "data",
            "analysis": {"type": "logistic", "outcome": {"type": "binary", "label": "ext.y"},
                         "covariates": ["ext.x1", "ext.x2"]},
            "privacy": {"secure_aggregation": True},
        }
    )  # fmt: skip
    task = TaskAssignment(task_id=f"t{number}", job_id="j1", round=number, kind="analysis",
                          spec=spec, params=params)  # fmt: skip
    context = RoundContext(job_id="j1", round=number, announced=task.announced())
    return task.model_copy(update={"secure": SecureStep(phase="keys", context=context)})


def test_a_secure_newton_loop_sends_the_sites_own_fit_in_clear_once(
    store: LocalStore, ledger: Ledger
) -> None:
    """Beside the first round, in the clear, the site's own model fitted on its rows to the
    end (statsmodels' on the same rows); nothing of its own beside later rounds; the compute
    time in whole seconds."""
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY)
    first = runner.run(secure_newton(0, AnalysisParams(pooled=[0.0] * 3)), never_fetch)
    assert isinstance(first, Contribution) and first.clear.own is not None
    said = first.clear.model_dump()
    assert said.keys() == {"threshold", "compute_seconds", "epsilon", "noise", "own"}
    assert said["epsilon"] is None and said["noise"] is None  # exact: no budget, no noise
    assert isinstance(first.clear.compute_seconds, int)
    own = first.clear.own
    assert own.terms is not None and own.iterations is not None and 3 <= own.iterations <= 10
    extensions = store.load("data").extensions
    assert extensions is not None
    rows = extensions.to_pandas()
    x = sm.add_constant(rows[["x1", "x2"]].to_numpy(float))
    logit = sm.Logit(rows["y"].to_numpy(float), x).fit(tol=1e-12, disp=False)
    assert [t.name for t in own.terms] == ["intercept", "ext.x1", "ext.x2"]
    np.testing.assert_allclose([t.coef for t in own.terms], logit.params, rtol=1e-6)
    np.testing.assert_allclose([t.se for t in own.terms], logit.bse, rtol=1e-6)
    later = runner.run(secure_newton(1, AnalysisParams(pooled=[0.1, 0.5, 0.0])), never_fetch)
    assert isinstance(later, Contribution) and later.clear.own is None


@pytest.mark.parametrize(
    ("policy", "withheld"),
    [
        (EdgePolicy(share_site_estimates=False), "this site does not share its own estimates"),
        (
            EdgePolicy(min_cohort_size=500),
            "fewer than 500 patients with complete data here (policy min_cohort_size)",
        ),
    ],
    ids=["policy", "per-site rule"],
)
def test_a_site_that_keeps_its_own_fit_says_why_and_still_takes_part(
    store: LocalStore, ledger: Ledger, policy: EdgePolicy, withheld: str
) -> None:
    runner = TaskRunner(store, policy, "alpha", ledger, SITE_KEY)
    first = runner.run(secure_newton(0, AnalysisParams(pooled=[0.0] * 3)), never_fetch)
    assert isinstance(first, Contribution) and int(first.values["n"]) == 120
    assert first.clear.own == OwnEstimate(withheld=withheld)


def test_an_honest_fit_beyond_the_wire_bounds_is_withheld_not_a_failure(
    store: LocalStore, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standard error of 1e-200 (beyond what the orchestrator accepts) keeps the site's own
    fit home with the reason; the site still takes part in the sums."""
    exact = site.fit_terms
    monkeypatch.setattr(
        site, "fit_terms", lambda *a: [t.model_copy(update={"se": 1e-200}) for t in exact(*a)]
    )
    runner = TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY)
    first = runner.run(secure_newton(0, AnalysisParams(pooled=[0.0] * 3)), never_fetch)
    assert isinstance(first, Contribution) and int(first.values["n"]) == 120
    own = first.clear.own
    assert own is not None and own.terms is None
    assert own.withheld is not None and own.withheld.startswith("its fit is out of bounds: ")
