"""Attack 1: a federated Newton analysis turned into an oracle of half-space sums, recovering
a site's rows exactly (issue 8: 229 of 247 rows in 282 tasks)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oncofed.analytics.design import term_names
from oncofed.edge import EdgePolicy
from oncofed.wire.analysis import AnalysisParams, AnalysisSpec, LogisticAnalysis, RegressionPart
from tests.attacks.bisection import HalfSpaceSearch, Vector
from tests.attacks.support import (
    DATASET,
    GBSG2_COLUMNS,
    Declined,
    Orchestrator,
    Recovery,
    Score,
    assert_rows_recovered,
    make_task,
    played,
    true_design_rows,
)

pytestmark = pytest.mark.slow

COVARIATES: list[Any] = [
    *GBSG2_COLUMNS,
    "rfs_days",
    "rfs_event",  # the outcome is a covariate too: that is how labels come out (see below)
    {"name": "ext.menopausal_status", "levels": ["pre", "post"]},
]
"""Nine of GBSG2's ten columns, untransformed (grade is left out: 8 of the site's 43 grade I
patients recurred, a cell the edge refuses today)."""


def newton_spec() -> AnalysisSpec:
    """A logistic regression of recurrence with the most Newton rounds a spec may declare."""
    return AnalysisSpec.model_validate(
        {
            "name": "innocent-logistic",
            "dataset": DATASET,
            "analysis": {
                "type": "logistic",
                "outcome": {"label": "rfs_event"},
                "covariates": COVARIATES,
                "max_iterations": 200,
            },
        }
    )


def newton_bisection(
    orchestrator: Orchestrator, spec: AnalysisSpec, *, steepness: float = 64.0, seed: int = 0
) -> Recovery:
    """Recover the site's complete cases from the derivatives it sends at chosen coefficients.

    Round 0 (coefficients 0, as an honest orchestrator starts) gives the Hessian -X'X/4 and
    the gradient X'(y - 1/2), hence the column sums X'1 (the intercept's row of X'X) and X'y.
    Every later round sends b = K (-t, a), a random integer direction: the logit K (a'x - t)
    is a step so steep (|K (a'x - t)| >= K/2 = 32 at a half-integer t) that each p_i is 0 or 1
    to float64 precision, and the gradient X'(y - p) = X'y - sum of x over {a'x > t}: the count
    (intercept entry) and column sums of the patients above t, exact after rounding. Each task
    asks two thresholds (the pooled and the site's own coefficients); ``HalfSpaceSearch``
    picks them. The log-likelihood, b'X'y - sum softplus(x_i'b), and the Hessian carry no
    patient's label beyond X'y, so the outcome is also a covariate: each recovered row holds
    its label.
    """
    started = time.perf_counter()
    assert isinstance(spec.analysis, LogisticAnalysis)
    terms = term_names(spec.analysis)
    width, rounds = len(terms), spec.analysis.max_iterations
    recovery = Recovery(columns=terms[1:])
    search: HalfSpaceSearch | None = None

    def ask(round_number: int, pooled: list[float], own: list[float]) -> RegressionPart:
        params = AnalysisParams(pooled=pooled, own=own)
        task = make_task("newton", "analysis", round_number, spec, params=params)
        recovery.tasks += 1
        part = orchestrator.ask(task).analysis().part
        assert isinstance(part, RegressionPart)
        return part

    try:
        zero = ask(0, [0.0] * width, [0.0] * width)
        hessian, gradient = np.array(zero.pooled.hessian), np.array(zero.pooled.gradient)
        total = _exact(-4 * hessian[0])  # X'1
        xty = np.rint(gradient + np.array(total) / 2)  # X'y
        direction = np.random.default_rng(seed).integers(1, 2**24, size=width - 1)
        search = HalfSpaceSearch(direction, total)

        def coefficients(t: float) -> list[float]:
            return [-steepness * t, *(steepness * direction.astype(float))]

        def above(g: list[float]) -> Vector:
            return _exact(xty - np.array(g))

        round_number = 1
        while not search.done and round_number < rounds:
            first, second = search.cut(), search.cut()
            assert first is not None
            part = ask(round_number, coefficients(first), coefficients(second or first))
            search.record(first, above(part.pooled.gradient))
            if second is not None:
                search.record(second, above(part.own.gradient))
            round_number += 1
    except Declined as exc:
        recovery.stopped = str(exc)
    recovery.rows = search.rows if search is not None else []
    recovery.seconds = time.perf_counter() - started
    return recovery


def _exact(values: np.ndarray) -> Vector:
    return tuple(int(v) for v in np.rint(values))


NAIVE = EdgePolicy(max_coefficient_effect=1e300, max_newton_step=1e300, max_iterations=10_000)
"""The coefficient bounds (part B) switched off, and room for the spec's 200 rounds."""


def play_bisection(
    setup: str, tmp_path: Path, site_datasets: Path, policy: EdgePolicy
) -> tuple[Recovery, Score]:
    spec = newton_spec()
    return played(
        f"newton bisection, {setup}",
        tmp_path / "edge",
        site_datasets,
        policy,
        lambda orchestrator: newton_bisection(orchestrator, spec),
        lambda store: true_design_rows(store, spec),
    )


def test_newton_bisection_recovers_rows_when_coefficients_are_unbounded(
    tmp_path: Path, site_datasets: Path
) -> None:
    recovery, result = play_bisection("naive", tmp_path, site_datasets, NAIVE)
    assert_rows_recovered(recovery, result)


def test_newton_bisection_recovers_nothing_under_the_default_policy(
    tmp_path: Path, site_datasets: Path
) -> None:
    recovery, result = play_bisection("defaults", tmp_path, site_datasets, EdgePolicy())
    assert result.exact == 0
    assert recovery.stopped is not None and recovery.tasks <= 2
