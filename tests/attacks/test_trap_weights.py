"""Attack 2: one training round of crafted weights for a wide MLP ("trap weights") returns a
site's training rows, labels included (issue 8: 172 of 235 rows from one update)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import norm

from oncofed.edge import EdgePolicy
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights
from oncofed.wire import tensors
from oncofed.wire.messages import Standardization
from oncofed.wire.spec import JobSpec
from tests.attacks.support import (
    DATASET,
    Declined,
    Orchestrator,
    Recovery,
    Row,
    attacked_edge,
    make_task,
    report,
    score,
    true_training_rows,
)

pytestmark = pytest.mark.slow
log = logging.getLogger("oncofed.attacks")

FEATURES: list[Any] = [
    "age_at_diagnosis",
    "tumour_size_mm",
    "nodes_positive",
    "biomarker.PR.value",
    "biomarker.ER.value",
    "treatment.endocrine",
    "rfs_days",
    {"name": "grade", "levels": ["G1", "G2", "G3"]},
    {"name": "ext.menopausal_status", "levels": ["pre", "post"]},
]
"""Every GBSG2 column but the recurrence flag, which is the label."""
LR = 10.0
"""The largest learning rate a spec may declare: the largest update, the least rounding."""
DECLARED_ROUNDS = 100
WALK = 0.99
"""Each step towards the trap, as a fraction of the clip norm (room for float32 rounding)."""
SINGLE = 0.05
"""How close to the quantum a bin's bias difference must be to hold one patient (relative)."""


def trap_spec(hidden: int, clip_norm: float) -> JobSpec:
    """A job an orchestrator may write: an MLP trained by one full-batch SGD step per round."""
    return JobSpec.model_validate(
        {
            "name": "innocent-mlp",
            "dataset": DATASET,
            "features": FEATURES,
            "outcome": {"type": "binary", "label": "rfs_event"},
            "model": {"type": "mlp", "hidden": [hidden]},
            "rounds": DECLARED_ROUNDS,
            "local": {"epochs": 1, "batch_size": 1_000_000, "lr": LR, "optimizer": "sgd",
                      "clip_norm": clip_norm},
            "evaluation": {"holdout": 0.05},
        }
    )  # fmt: skip


def trap_weights(
    orchestrator: Orchestrator,
    *,
    clip_norm: float,
    groups: int = 8,
    thresholds: int = 1024,
    seed: int = 0,
) -> Recovery:
    """Recover training rows from one update of a trap model.

    The orchestrator plays an honest statistics round (the standardisation is the site's own
    pooled mean and sd) and an honest round 1 (the model derived from the seed), then sends
    the trap. Its hidden layer is ``groups`` random directions u_g, each with ``thresholds``
    cuts c_k and two neurons per cut, relu(u_g'x - c_k) with output weights +1 and -1: the
    twins cancel, so every patient's logit is 0, p_i = 1/2 and its error e_i = 1/2 - y_i is
    +-1/2. One SGD step changes a neuron's weights by -lr/n sum e_i x_i and its bias by
    -lr/n sum e_i, over the patients above its cut. Between consecutive cuts the differences
    isolate the patients in one bin: when that is one patient, the bias difference is the
    quantum +-lr/(2n) (its sign is the label) and the weight difference over the bias difference
    is the patient's standardised row, which the announced standardisation undoes. Clipping the
    update scales every difference alike: the quantum is read off the bins (their median
    non-zero bias difference), and the ratios do not change. A row is kept when it reads as a
    patient (whole numbers, 0/1 dummies, one level per categorical) and two directions isolate
    the same one.

    Part B bounds each global model's distance from the last one the site saw by the declared
    clip norm per round elapsed. That bounds the speed, not the destination: the attack walks
    from the round-1 model to the trap in straight steps of just under one clip norm, a round
    each (rounds 2 to 29 at a clip norm of 10, the trap in round 30), and the site answers
    every one.
    """
    started = time.perf_counter()
    spec = trap_spec(2 * groups * thresholds, clip_norm)
    recovery = Recovery(columns=_columns(spec))
    rng = np.random.default_rng(seed)

    def train(round_number: int, weights: tensors.Weights) -> tuple[tensors.Weights, int]:
        model = tensors.encode(weights)
        task = make_task("trap", "train", round_number, spec, model=model, scaling=scaling,
                         pooled=stats)  # fmt: skip
        recovery.tasks += 1
        new, meta = orchestrator.ask(task, model).update()
        return new, meta.n_train

    try:
        recovery.tasks += 1
        stats = orchestrator.ask(make_task("trap", "stats", 0, spec)).stats()
        scaling = standardization(stats)
        first = initial_weights(spec.model, spec.n_inputs, spec.seed)
        train(1, first)
        trap = _trap(spec, rng, groups, thresholds)
        distance = _distance(trap, first)
        steps = math.ceil(distance / (WALK * clip_norm))
        log.info("trap: L2 distance %.1f from the round-1 model, %d steps", distance, steps)
        for i in range(1, steps):
            train(1 + i, {k: first[k] + i / steps * (trap[k] - first[k]) for k in trap})
        new, _ = train(1 + steps, trap)
    except Declined as exc:
        recovery.stopped = str(exc)
    else:
        seen = _invert(spec, trap, new, scaling, groups, thresholds)
        recovery.rows = [row for row, found_by in seen.items() if len(found_by) >= 2]
    recovery.seconds = time.perf_counter() - started
    return recovery


def _trap(spec: JobSpec, rng: np.random.Generator, groups: int, thresholds: int) -> tensors.Weights:
    """The trap: per group a unit direction and ``thresholds`` cuts at normal quantiles around
    where the group's projections should lie (numeric inputs are standardised; dummies are
    taken as 1/2 on average)."""
    width, numeric = spec.n_inputs, len(spec.numeric_names)
    hidden = 2 * groups * thresholds
    weight = np.zeros((hidden, width), np.float32)
    bias = np.zeros(hidden, np.float32)
    quantiles = norm.ppf((np.arange(thresholds) + 0.5) / thresholds) * 1.5
    for g in range(groups):
        direction = rng.normal(size=width)
        direction /= np.linalg.norm(direction)
        block = slice(2 * g * thresholds, 2 * (g + 1) * thresholds)
        weight[block] = direction
        bias[block] = -np.repeat(quantiles + direction[numeric:].sum() / 2, 2)
    output = np.tile(np.array([1.0, -1.0], np.float32), groups * thresholds)
    return {
        "layers.0.weight": weight,
        "layers.0.bias": bias,
        "layers.1.weight": output[None, :],
        "layers.1.bias": np.zeros(1, np.float32),
    }


def _invert(
    spec: JobSpec,
    trap: tensors.Weights,
    new: tensors.Weights,
    scaling: Standardization,
    groups: int,
    thresholds: int,
) -> dict[Row, set[int]]:
    """Rows that read as single patients, with the groups that isolated each."""
    numeric = len(spec.numeric_names)
    mean, sd = np.asarray(scaling.mean), np.asarray(scaling.std)
    step = {k: new[k].astype(np.float64) - trap[k].astype(np.float64) for k in trap}
    twins = (step["layers.0.weight"][0::2] - step["layers.0.weight"][1::2]) / 2
    twin_bias = (step["layers.0.bias"][0::2] - step["layers.0.bias"][1::2]) / 2
    blocks = [slice(g * thresholds, (g + 1) * thresholds) for g in range(groups)]
    bias_bins = np.concatenate([_bins(twin_bias[block]) for block in blocks])
    sizes = np.abs(bias_bins)
    quantum = float(np.median(sizes[sizes > 1e-3 * sizes.max()]))  # one patient's share
    seen: dict[Row, set[int]] = {}
    for g, block in enumerate(blocks):
        weights, biases = _bins(twins[block]), _bins(twin_bias[block])
        for dw, db in zip(weights, biases, strict=True):
            if abs(abs(db) - quantum) > SINGLE * quantum:
                continue
            x = dw / db
            raw = np.concatenate([x[:numeric] * sd + mean, x[numeric:]])
            row = np.rint(raw)
            if np.abs(raw - row).max() > 0.1 or not _plausible(spec, row):
                continue
            seen.setdefault((*map(float, row), 1.0 if db > 0 else 0.0), set()).add(g)
    return seen


def _bins(cumulative: np.ndarray) -> np.ndarray:
    """Per bin between consecutive cuts, from values summed over everyone above each cut."""
    return cumulative - np.concatenate([cumulative[1:], np.zeros_like(cumulative[:1])])


def _plausible(spec: JobSpec, row: np.ndarray) -> bool:
    """No negative clinical value; dummies 0/1 with at most one level per categorical."""
    numeric = len(spec.numeric_names)
    if (row[:numeric] < 0).any():
        return False
    start = numeric
    for feature in spec.features:
        if feature.levels is not None:
            block = row[start : start + feature.width]
            if not np.isin(block, (0.0, 1.0)).all() or block.sum() > 1:
                return False
            start += feature.width
    return True


def _columns(spec: JobSpec) -> list[str]:
    dummies = [f"{f.name}[{level}]" for f in spec.features if f.levels for level in f.levels[1:]]
    return [*spec.numeric_names, *dummies, "label"]


def _distance(a: tensors.Weights, b: tensors.Weights) -> float:
    return float(np.sqrt(sum(((a[k].astype(np.float64) - b[k]) ** 2).sum() for k in a)))


def test_trap_weights_recover_rows_when_the_model_may_move_freely(
    tmp_path: Path, site_datasets: Path
) -> None:
    """Naive: the site accepts a clip norm of 1e6, so the step bound (part B) allows any
    model within 1e6 of the last one the site saw: the trap, about 280 away, goes out in
    round 2, and one update gives the rows away."""
    policy = EdgePolicy(max_clip_norm=1e6)
    with attacked_edge(tmp_path / "edge", site_datasets, policy) as (orchestrator, edge):
        recovery = trap_weights(orchestrator, clip_norm=1e6)
        truth = true_training_rows(edge.store(), trap_spec(1, 1.0))
    result = score(recovery.rows, truth)
    report("trap weights, naive", recovery, result)
    assert recovery.stopped is None, recovery.stopped
    assert result.exact >= 0.9 * result.total and result.wrong == 0


@pytest.mark.xfail(
    strict=True,
    reason="part B's step bound is walked around, one clip norm a round; the trap needs noise "
    "(differential privacy) or global models the site derives itself",
)
def test_trap_weights_recover_nothing_under_the_default_policy(
    tmp_path: Path, site_datasets: Path
) -> None:
    """The attacker declares the largest clip norm the default policy accepts (10) and walks
    to the trap, which goes out in round 30."""
    with attacked_edge(tmp_path / "edge", site_datasets, EdgePolicy()) as (orchestrator, edge):
        recovery = trap_weights(orchestrator, clip_norm=EdgePolicy().max_clip_norm)
        truth = true_training_rows(edge.store(), trap_spec(1, 1.0))
    result = score(recovery.rows, truth)
    report("trap weights, defaults", recovery, result)
    assert result.exact == 0
    assert recovery.stopped is not None
