"""Attack 2, the over-budget variant: a site locked down to logistic models of at most 100
parameters and 20 rounds still runs every task of a job that declared 10 rounds, and each
task is a half-space query on its training rows (issue 8: 379 tasks, 169 rows)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oncofed.edge import EdgePolicy
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights
from oncofed.wire import tensors
from oncofed.wire.messages import StatsResult
from oncofed.wire.spec import JobSpec
from tests.attacks.bisection import HalfSpaceSearch, Vector
from tests.attacks.support import (
    GBSG2_COLUMNS,
    LR,
    Declined,
    Orchestrator,
    Recovery,
    Score,
    assert_rows_recovered,
    attacked_edge,
    disable,
    make_task,
    report,
    score,
    sgd_job,
    true_training_rows,
)

pytestmark = pytest.mark.slow

FEATURES: list[Any] = [
    *GBSG2_COLUMNS,
    "rfs_days",
    "rfs_event",  # the label as an input too: each recovered row holds it
    {"name": "grade", "levels": ["G1", "G2", "G3"]},
    {"name": "ext.menopausal_status", "levels": ["pre", "post"]},
    {"name": "sex", "levels": ["male", "female"]},  # 1 for every patient: a counter
]
ROW = 11
"""The recovered row: the 8 numeric inputs and the grade and menopausal dummies."""
LOCKED = EdgePolicy(allowed_models=["logistic"], max_parameters=100, max_rounds=20)
"""The site's policy in the issue's report."""
DECLARED_ROUNDS = 10
FREE_MODEL = {"max_clip_norm": 1e6, "max_model_travel": 1e300}
"""A policy that lets a job move its model anywhere (the step bound then allows anything)."""


def over_budget_spec(clip_norm: float) -> JobSpec:
    """A 12-parameter logistic model, 10 rounds, one full-batch SGD step per round."""
    model = {"type": "logistic"}
    return sgd_job("innocent-logistic-training", FEATURES, model, DECLARED_ROUNDS, clip_norm)


def training_bisection(
    orchestrator: Orchestrator,
    *,
    clip_norm: float,
    steepness: float = 40.0,
    seed: int = 0,
) -> Recovery:
    """Recover training rows by bisection, one training round per threshold.

    A logistic model's full-batch SGD step returns w - lr/n sum (p_i - y_i) x_i: the site's
    update is its gradient. With weights K a (a random integer direction, K = 40) and bias -K t
    at a half-integer t, p_i is 0 or 1 in float32 and the gradient is the sum of x over the
    patients with a'x > t, less X'y: the attack of ``test_newton_bisection`` one threshold per
    task. Inputs must be whole numbers: the announced standardisation is mean 0, sd 1, from
    pooled totals the orchestrator makes up (n huge, sums 0, sums of squares n), which stay
    realisable for the rest of a consortium whatever the site holds. A constant input
    (``sex`` with reference level male: 1 for every patient here) carries the count. Round 1
    is the model derived from the seed (zeros: p = 1/2), round 2 has everyone below the step
    (p = 0): together they give X'1 and X'y.
    """
    started = time.perf_counter()
    spec = over_budget_spec(clip_norm)
    width = spec.n_inputs
    recovery = Recovery(columns=[f"x{i}" for i in range(ROW)])
    search: HalfSpaceSearch | None = None
    try:
        recovery.tasks += 1
        own = orchestrator.ask(make_task("budget", "stats", 0, spec)).stats()
        n = int(4 * max(own.sumsq) + 4 * own.n)
        pooled = StatsResult(n=n, sums=[0.0] * len(own.sums), sumsq=[float(n)] * len(own.sums))
        scaling = standardization(pooled)
        round_number = 0

        def gradient(weight: np.ndarray, bias: float) -> np.ndarray:
            """sum (p_i - y_i) x_i over the training rows at (weight, bias)."""
            nonlocal round_number
            round_number += 1
            sent = {"layers.0.weight": weight[None, :].astype(np.float32),
                    "layers.0.bias": np.array([bias], np.float32)}  # fmt: skip
            model = tensors.encode(sent)
            task = make_task("budget", "train", round_number, spec, model=model,
                             scaling=scaling, pooled=pooled)  # fmt: skip
            recovery.tasks += 1
            new, meta = orchestrator.ask(task, model).update()
            moved = sent["layers.0.weight"][0].astype(np.float64) - new["layers.0.weight"][0]
            return moved * meta.n_train / LR

        first = initial_weights(spec.model, width, spec.seed)
        half_minus_y = gradient(first["layers.0.weight"][0], float(first["layers.0.bias"][0]))
        xty = -gradient(np.zeros(width), -1e4)
        total = 2 * (half_minus_y + xty)

        def counted(sums: np.ndarray) -> Vector:
            """(count, row sums): the constant input's sum is the count."""
            return tuple(int(v) for v in np.rint([sums[-1], *sums[:ROW]]))

        direction = np.random.default_rng(seed).integers(1, 1000, size=ROW)
        weight = np.zeros(width)
        weight[:ROW] = steepness * direction
        search = HalfSpaceSearch(direction, counted(total))
        while (t := search.cut()) is not None:
            search.record(t, counted(gradient(weight, -steepness * t) + xty))
    except Declined as exc:
        recovery.stopped = str(exc)
    recovery.rows = search.rows if search is not None else []
    recovery.seconds = time.perf_counter() - started
    return recovery


def attack(
    tmp_path: Path, site_datasets: Path, policy: EdgePolicy, clip_norm: float
) -> tuple[Recovery, Score, int]:
    """Run the attack against an edge with ``policy``: what it recovered, its score, and how
    many of the job's tasks the edge ran (answered with anything but a decline)."""
    with attacked_edge(tmp_path / "edge", site_datasets, policy) as (orchestrator, edge):
        recovery = training_bisection(orchestrator, clip_norm=clip_norm)
        truth = [row[:ROW] for row in true_training_rows(edge.store(), over_budget_spec(1.0))]
        ran = sum(answer.endpoint != "decline" for answer in orchestrator.answers)
    result = score(recovery.rows, truth)
    report(f"over budget, clip norm {clip_norm:g}, {ran} tasks run", recovery, result)
    return recovery, result, ran


def test_a_locked_down_site_runs_every_task_of_a_job_that_declared_ten_rounds(
    tmp_path: Path, site_datasets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naive: the task budget and the model step (part B) switched off, and a clip norm of
    1e6 and any travel accepted."""
    disable(monkeypatch, "task budget")
    disable(monkeypatch, "model step")
    policy = LOCKED.model_copy(update=FREE_MODEL)
    recovery, result, ran = attack(tmp_path, site_datasets, policy, clip_norm=1e6)
    assert_rows_recovered(recovery, result)
    assert ran > 20 * DECLARED_ROUNDS


def test_the_task_budget_alone_stops_the_job_after_its_declared_rounds(
    tmp_path: Path, site_datasets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the model step switched off: the stats round and 10 training rounds run, the
    11th training task is refused."""
    disable(monkeypatch, "model step")
    policy = LOCKED.model_copy(update=FREE_MODEL)
    recovery, _, ran = attack(tmp_path, site_datasets, policy, clip_norm=1e6)
    assert recovery.stopped is not None
    assert ran == 1 + DECLARED_ROUNDS


def test_a_locked_down_site_gives_nothing_away_under_its_defaults(
    tmp_path: Path, site_datasets: Path
) -> None:
    recovery, result, ran = attack(tmp_path, site_datasets, LOCKED, LOCKED.max_clip_norm)
    assert recovery.stopped is not None
    assert ran <= 1 + DECLARED_ROUNDS
    assert result.exact == 0
