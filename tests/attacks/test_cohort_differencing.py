"""Attack 5: the difference of two large cohorts is a small one. Round 0 of a logistic analysis
(coefficients 0, which every defence of issue 8 admits) gives a cohort's size, events and
column sums; two analyses whose cohorts differ by a follow-up window isolate the patients in
that window, one analysis each, every cohort large. The defence (``oncofed.edge.releases``):
the edge declines an exact release whose cohort differs from an earlier one's by 1 to
``small_cell_threshold`` - 1 patients; the naive set-up switches it off
(``refuse_narrow_differences: false``). Under differential privacy nothing is refused for
being narrow: every analysis is noisy and charged to the site's budget, which runs out."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oncofed.analytics.private import scaling
from oncofed.cdm.frame import job_table
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.budget import Budget
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import Contribution, TaskRunner
from oncofed.wire.analysis import (
    AnalysisParams,
    AnalysisResult,
    AnalysisSpec,
    Derivatives,
    LogisticAnalysis,
    RegressionPart,
)
from oncofed.wire.messages import Decline, TaskAssignment
from oncofed.wire.secagg import RoundContext, SecureStep
from tests.attacks.bisection import HalfSpaceSearch, Vector
from tests.attacks.support import (
    DATASET,
    SITE,
    STUDY,
    Answer,
    Declined,
    Orchestrator,
    Recovery,
    Score,
    make_task,
    played,
    report,
    score,
    true_design_rows,
)
from tests.support import SITE_KEY

pytestmark = pytest.mark.slow

COVARIATES: list[Any] = [
    "age_at_diagnosis",
    "tumour_size_mm",
    "nodes_positive",
    "biomarker.PR.value",
    "biomarker.ER.value",
    "rfs_days",
]
"""Numeric columns only: no 0/1 term whose cells a cohort could make small."""
TIME = COVARIATES.index("rfs_days")


def window_spec(condition: dict[str, Any] | None) -> AnalysisSpec:
    """Recurrence on the covariates, in the cohort of the patients meeting ``condition``."""
    return AnalysisSpec.model_validate(
        {
            "name": "innocent-logistic",
            "dataset": DATASET,
            "cohort": {"where": [condition] if condition else []},
            "analysis": {"type": "logistic", "outcome": {"label": "rfs_event"},
                         "covariates": COVARIATES},
        }
    )  # fmt: skip


def cohort_differencing(orchestrator: Orchestrator) -> Recovery:
    """Recover rows (covariates, then the label) by bisection on follow-up time, one new
    analysis per threshold.

    At coefficients 0 the Hessian is -X'X/4: its intercept row gives the cohort's column sums
    (and size); ``events`` is the cohort's sum of labels. The patients followed longer than t
    are asked about directly when they should be the larger part of the site, else as every
    patient less those followed t or less: either way the cohort asked about holds about half
    the site or more, far above any minimum. ``HalfSpaceSearch`` on the time column picks the
    thresholds; patients with the same follow-up time stay together. A threshold the edge
    declines leaves its interval uncut, and the attack goes on with the others.
    """
    started = time.perf_counter()
    recovery = Recovery(columns=[*COVARIATES, "label"])

    def sums(condition: dict[str, Any] | None) -> Vector:
        """(patients, column sums, events) of one cohort: a job of its own, round 0."""
        spec = window_spec(condition)
        width = len(COVARIATES) + 1
        params = AnalysisParams(pooled=[0.0] * width, own=[0.0] * width)
        job = f"window-{recovery.tasks}"
        recovery.tasks += 1
        part = orchestrator.ask(make_task(job, "analysis", 0, spec, params=params))
        derivatives = part.analysis().part
        assert isinstance(derivatives, RegressionPart)
        totals = -4 * np.asarray(derivatives.pooled.hessian[0])
        return (derivatives.n, *(int(v) for v in np.rint(totals[1:])), derivatives.events)

    try:
        total = sums(None)
    except Declined as exc:
        recovery.stopped = str(exc)
        return recovery
    direction = np.zeros(len(COVARIATES) + 1, dtype=int)
    direction[TIME] = 1
    search = HalfSpaceSearch(direction, total)
    # more patients above a threshold than at the site: its interval is left uncut
    impossible = (total[0] + 1, *[0] * (len(total) - 1))
    while (t := search.cut()) is not None:
        try:
            if search.share_above(t) >= 0.5:
                above = sums({"field": "rfs_days", "min": math.ceil(t)})
            else:
                below = sums({"field": "rfs_days", "max": math.floor(t)})
                above = tuple(a - b for a, b in zip(total, below, strict=True))
        except Declined as exc:
            recovery.declined.append(str(exc))
            above = impossible
        search.record(t, above)
    recovery.rows = search.rows
    recovery.seconds = time.perf_counter() - started
    return recovery


class NoisyView:
    """The attack under differential privacy, in the worst case: every other site colludes
    with the orchestrator, which so sees this site's own noisy contribution, its masks
    removed. Each job the attack sends becomes a differentially private secure analysis
    (epsilon 1 per job, the attacker's choice of bounds) for a real task runner, ledger and
    budget (the policy's defaults); its answer is read back as the attack reads a plain one."""

    def __init__(self, store: LocalStore, ledger: Ledger) -> None:
        self.runner = TaskRunner(store, EdgePolicy(), SITE, ledger, SITE_KEY)

    def ask(self, task: TaskAssignment, model: bytes | None = None) -> Answer:
        dp = {"epsilon": 1.0, "bounds": {"biomarker.PR.value": (0, 2500),
                                         "biomarker.ER.value": (0, 1500)}}  # fmt: skip
        privacy = {"secure_aggregation": True, "differential_privacy": dp}
        spec = AnalysisSpec.model_validate(task.spec.model_dump() | {"privacy": privacy})
        assert task.params is not None  # a secure round sends the pooled coefficients only
        params = task.params.model_copy(update={"own": []})
        private = task.model_copy(update={"spec": spec, "params": params})
        context = RoundContext(job_id=task.job_id, round=0, announced=private.announced())
        private = private.model_copy(update={"secure": SecureStep(phase="keys", context=context)})
        outcome = self.runner.run(private, lambda sha: b"")
        if isinstance(outcome, Decline):
            return Answer(task, "decline", outcome.model_dump_json().encode())
        assert isinstance(outcome, Contribution) and isinstance(spec.analysis, LogisticAnalysis)
        values = outcome.values
        back = np.linalg.inv(scaling(spec.analysis, spec)[1])
        gradient, hessian = back @ values["gradient"], back @ values["hessian"] @ back.T
        at = Derivatives(loglik=0.0, gradient=gradient.tolist(), hessian=hessian.tolist())
        n, events = (max(0, round(float(values[k]))) for k in ("n", "events"))
        part = RegressionPart(n=n, events=events, pooled=at, own=at)
        return Answer(task, "result", AnalysisResult(part=part).model_dump_json().encode())


def play(
    tmp_path: Path, site_datasets: Path, name: str, policy: EdgePolicy
) -> tuple[Recovery, Score]:
    return played(
        f"cohort differencing, {name}",
        tmp_path / "edge",
        site_datasets,
        policy,
        cohort_differencing,
        lambda store: true_design_rows(store, window_spec(None), label=True),
    )


def test_cohort_differencing_recovers_rows_when_narrow_differences_are_allowed(
    tmp_path: Path, site_datasets: Path
) -> None:
    recovery, result = play(
        tmp_path, site_datasets, "naive", EdgePolicy(refuse_narrow_differences=False)
    )
    assert recovery.stopped is None and not recovery.declined
    assert result.exact >= 0.85 * result.total and result.wrong == 0, result


def test_cohort_differencing_recovers_nothing_under_the_default_policy(
    tmp_path: Path, site_datasets: Path
) -> None:
    """The edge declines every threshold whose cohort is within 10 patients of one it released;
    the attack goes on past each decline and still isolates no patient."""
    recovery, result = play(tmp_path, site_datasets, "defaults", EdgePolicy())
    assert recovery.declined and all(
        "by fewer than 11 patients, below the small-cell threshold" in reason
        for reason in recovery.declined
    )
    assert result.exact == 0, result


def test_cohort_differencing_under_differential_privacy_is_charged_and_recovers_nothing(
    tmp_path: Path, site_datasets: Path
) -> None:
    """Overlapping analyses are answered (none is refused as narrow), each charged, and no row
    is recovered; the attacker then repeats one analysis to average its noise away, and the
    budget stops it, the decline saying what remains."""
    shutil.copytree(site_datasets, tmp_path / "datasets")
    store, ledger = LocalStore(tmp_path / "datasets"), Ledger(tmp_path / "edge")
    times = np.sort(job_table(window_spec(None), store.load(DATASET))["rfs_days"])
    narrow = {"field": "rfs_days", "min": int(times[3]) + 1}  # 4 or more patients fewer
    width = len(COVARIATES) + 1
    params = AnalysisParams(pooled=[0.0] * width, own=[0.0] * width)

    def ask(job: str, condition: dict[str, Any] | None) -> None:
        view.ask(make_task(job, "analysis", 0, window_spec(condition), params=params)).analysis()

    try:
        view = NoisyView(store, ledger)
        ask("all", None)
        ask("all-but-the-first", narrow)  # without DP, declined as narrow (above)
        recovery = cohort_differencing(view)
        charged = Budget(ledger, SITE_KEY, SITE).history()
        repeats, stopped = 0, ""
        while not stopped and repeats < 100:
            try:
                ask(f"repeat-{repeats}", None)
                repeats += 1
            except Declined as exc:
                stopped = str(exc)
        spent = Budget(ledger, SITE_KEY, SITE).spent(EdgePolicy().privacy_budget)
    finally:
        ledger.close()
    result = score(recovery.rows, true_design_rows(store, window_spec(None), label=True))
    report("cohort differencing, differential privacy", recovery, result)
    answered = recovery.tasks - len(recovery.declined)
    assert [entry.job_id for entry in charged[:2]] == ["all", "all-but-the-first"]
    assert len(charged) == 2 + answered and result.exact == 0, result
    assert not any("below the small-cell threshold" in r for r in recovery.declined)
    assert 5 <= repeats < 100 and "privacy budget: job repeat-" in stopped
    assert "left of this site's budget" in stopped
    assert spent.projects[STUDY] <= EdgePolicy().privacy_budget.epsilon_per_project
