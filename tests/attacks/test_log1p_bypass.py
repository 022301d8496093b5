"""Attack 3: ``transform: log1p`` on a 0/1 treatment flag escaped the small-cell check of a
regression's 0/1 terms, and round 0's derivatives gave away a group of 7 patients with 2
recurrences (issue 8). Part C judges a column by its distinct values, whatever the transform."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from oncofed.analytics.design import design
from oncofed.cdm.frame import job_table
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.wire.analysis import AnalysisParams, AnalysisSpec, LogisticAnalysis, RegressionPart
from tests.attacks.support import (
    DATASET,
    PLANTED_GROUP,
    PLANTED_TREATMENT,
    Declined,
    Orchestrator,
    attacked_edge,
    disable,
    log,
    make_task,
)

pytestmark = pytest.mark.slow


def log1p_spec() -> AnalysisSpec:
    """Recurrence on age and log1p of the treatment flag: a column of 0 and log 2."""
    return AnalysisSpec.model_validate(
        {
            "name": "innocent-logistic",
            "dataset": DATASET,
            "analysis": {
                "type": "logistic",
                "outcome": {"label": "rfs_event"},
                "covariates": [
                    "age_at_diagnosis",
                    {"name": f"treatment.{PLANTED_TREATMENT}", "transform": "log1p"},
                ],
            },
        }
    )


def log1p_bypass(orchestrator: Orchestrator, spec: AnalysisSpec) -> tuple[int, int] | None:
    """The treated group's size and recurrences, or None when the site declines.

    At coefficients 0 (round 0 of an honest Newton loop) the site sends the Hessian -X'X/4 and
    the gradient X'(y - 1/2). The flag's column is z = log(2) f, so the intercept's entry of
    X'X in that column is log(2) times the treated count, and the column's gradient entry is
    log(2) (treated recurrences - treated / 2).
    """
    width = len(spec.features) + 1
    params = AnalysisParams(pooled=[0.0] * width, own=[0.0] * width)
    try:
        part = orchestrator.ask(make_task("log1p", "analysis", 0, spec, params=params))
        derivatives = part.analysis().part
    except Declined as exc:
        log.info("log1p bypass: declined: %s", exc)
        return None
    assert isinstance(derivatives, RegressionPart)
    z = width - 1
    treated = -4 * derivatives.pooled.hessian[0][z] / math.log(2)
    recurred = derivatives.pooled.gradient[z] / math.log(2) + treated / 2
    return round(treated), round(recurred)


def true_group(store: LocalStore, spec: AnalysisSpec) -> tuple[int, int]:
    """The scorer's count of treated patients and their recurrences in the design."""
    assert isinstance(spec.analysis, LogisticAnalysis)
    data = design(spec.analysis, job_table(spec, store.load(spec.dataset)))
    treated = data.x[:, -1] > 0
    return int(treated.sum()), int(data.label[treated].sum())


def test_log1p_bypass_reads_a_small_group_when_columns_are_judged_by_their_values(
    tmp_path: Path, site_datasets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naive: the design-column check (part C) switched off."""
    disable(monkeypatch, "design columns")
    policy = EdgePolicy()
    spec = log1p_spec()
    with attacked_edge(tmp_path / "edge", site_datasets, policy) as (orchestrator, edge):
        started = time.perf_counter()
        group = log1p_bypass(orchestrator, spec)
        truth = true_group(edge.store(), spec)
    log.info(
        "log1p bypass, naive: group %s in 1 task, %.2f s", group, time.perf_counter() - started
    )
    assert truth == PLANTED_GROUP
    assert group == truth


def test_log1p_bypass_is_declined_under_the_default_policy(
    tmp_path: Path, site_datasets: Path
) -> None:
    with attacked_edge(tmp_path / "edge", site_datasets, EdgePolicy()) as (orchestrator, _):
        group = log1p_bypass(orchestrator, log1p_spec())
    assert group is None
