"""Attack 2: one training round of crafted weights for a wide MLP ("trap weights") returns a
site's training rows, labels included (issue 8: 172 of 235 rows from one update)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oncofed.edge import EdgePolicy
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights
from oncofed.wire import tensors
from oncofed.wire.spec import JobSpec
from tests.attacks.support import (
    DATASET,
    Declined,
    Orchestrator,
    Recovery,
    attacked_edge,
    make_task,
    report,
    score,
    true_training_rows,
)
from tests.attacks.traps import columns, hidden_width, read_trap, trap_model, walk

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


def trap_spec(hidden: int, clip_norm: float, rounds: int = DECLARED_ROUNDS) -> JobSpec:
    """A job an orchestrator may write: an MLP trained by one full-batch SGD step per round."""
    return JobSpec.model_validate(
        {
            "name": "innocent-mlp",
            "dataset": DATASET,
            "features": FEATURES,
            "outcome": {"type": "binary", "label": "rfs_event"},
            "model": {"type": "mlp", "hidden": [hidden]},
            "rounds": rounds,
            "local": {"epochs": 1, "batch_size": 1_000_000, "lr": LR, "optimizer": "sgd",
                      "clip_norm": clip_norm},
            "evaluation": {"holdout": 0.05},
        }
    )  # fmt: skip


def trap_weights(
    orchestrator: Orchestrator,
    *,
    clip_norm: float,
    rounds: int = DECLARED_ROUNDS,
    groups: int = 8,
    thresholds: int = 1024,
    seed: int = 0,
) -> Recovery:
    """Recover training rows from one update of a trap model (the mathematics are in
    ``tests.attacks.traps``).

    The orchestrator plays an honest statistics round (the standardisation is the site's own
    pooled mean and sd) and an honest round 1 (the model derived from the seed), then sends
    the trap. Part B bounds each global model's distance from the last one the site saw by the
    declared clip norm per round elapsed. That bounds the speed, not the destination: the
    attack walks from the round-1 model to the trap in straight steps of just under one clip
    norm, a round each (rounds 2 to 29 at a clip norm of 10, the trap in round 30), and a site
    would answer every one were it not for its bound on how far a job's model may travel from
    its start (``max_model_travel``). Clipping the trap's update changes nothing.
    """
    started = time.perf_counter()
    spec = trap_spec(hidden_width(groups, thresholds), clip_norm, rounds)
    recovery = Recovery(columns=columns(spec))

    def train(round_number: int, weights: tensors.Weights) -> tensors.Weights:
        model = tensors.encode(weights)
        task = make_task("trap", "train", round_number, spec, model=model, scaling=scaling,
                         pooled=stats)  # fmt: skip
        recovery.tasks += 1
        new, _ = orchestrator.ask(task, model).update()
        return new

    try:
        recovery.tasks += 1
        stats = orchestrator.ask(make_task("trap", "stats", 0, spec)).stats()
        scaling = standardization(stats)
        first = initial_weights(spec.model, spec.n_inputs, spec.seed)
        train(1, first)
        trap = trap_model(spec, groups, thresholds, seed)
        path = walk(first, trap.weights, clip_norm)
        log.info("trap: %d rounds of at most %g from the round-1 model", len(path), clip_norm)
        for round_number, weights in enumerate(path, start=2):
            new = train(round_number, weights)
    except Declined as exc:
        recovery.stopped = str(exc)
    else:
        step = {k: new[k].astype(np.float64) - trap.weights[k] for k in new}
        recovery.rows = read_trap(spec, trap, step, scaling)
    recovery.seconds = time.perf_counter() - started
    return recovery


def test_trap_weights_recover_rows_when_the_model_may_move_freely(
    tmp_path: Path, site_datasets: Path
) -> None:
    """Naive: the site accepts a clip norm of 1e6 and any travel, so the step bound (part B)
    allows any model within 1e6 of the last one the site saw: the trap, about 280 away, goes
    out in round 2, and one update gives the rows away."""
    policy = EdgePolicy(max_clip_norm=1e6, max_model_travel=1e300)
    with attacked_edge(tmp_path / "edge", site_datasets, policy) as (orchestrator, edge):
        recovery = trap_weights(orchestrator, clip_norm=1e6)
        truth = true_training_rows(edge.store(), trap_spec(1, 1.0))
    result = score(recovery.rows, truth)
    report("trap weights, naive", recovery, result)
    assert recovery.stopped is None, recovery.stopped
    assert result.exact >= 0.9 * result.total and result.wrong == 0


def test_the_step_bound_alone_lets_a_walk_reach_the_trap(
    tmp_path: Path, site_datasets: Path
) -> None:
    """Naive: the default policy but any travel. The step bound (part B) bounds the speed, not
    the destination: at the largest clip norm the defaults accept (10) the attack walks to the
    trap, about 280 away, a step a round, and reads the rows off the update of round 30."""
    policy = EdgePolicy(max_model_travel=1e300)
    with attacked_edge(tmp_path / "edge", site_datasets, policy) as (orchestrator, edge):
        recovery = trap_weights(orchestrator, clip_norm=policy.max_clip_norm)
        truth = true_training_rows(edge.store(), trap_spec(1, 1.0))
    result = score(recovery.rows, truth)
    report("trap weights, walk, travel lifted", recovery, result)
    assert recovery.stopped is None, recovery.stopped
    assert recovery.tasks > 20
    assert result.exact >= 0.9 * result.total and result.wrong == 0


def test_trap_weights_recover_nothing_under_the_default_policy(
    tmp_path: Path, site_datasets: Path
) -> None:
    """The attacker declares the largest clip norm the default policy accepts (10) and as many
    rounds as its travel bound lets a job of that clip norm have (2): the trap, about 280
    from the start, is out of reach, and the site refuses the model that would step towards
    it too far (or a round beyond those declared)."""
    policy = EdgePolicy()
    clip = policy.max_clip_norm
    rounds = int(policy.max_model_travel // clip)
    with attacked_edge(tmp_path / "edge", site_datasets, policy) as (orchestrator, edge):
        recovery = trap_weights(orchestrator, clip_norm=clip, rounds=rounds)
        truth = true_training_rows(edge.store(), trap_spec(1, 1.0))
    result = score(recovery.rows, truth)
    report("trap weights, defaults", recovery, result)
    assert result.exact == 0
    assert recovery.stopped is not None
