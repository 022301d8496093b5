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
    GBSG2_COLUMNS,
    Declined,
    Orchestrator,
    Recovery,
    Score,
    assert_rows_recovered,
    make_task,
    played,
    sgd_job,
    true_training_rows,
)
from tests.attacks.traps import columns, hidden_width, read_trap, trap_model, walk

pytestmark = pytest.mark.slow
log = logging.getLogger("oncofed.attacks")

FEATURES: list[Any] = [
    *GBSG2_COLUMNS,
    "rfs_days",
    {"name": "grade", "levels": ["G1", "G2", "G3"]},
    {"name": "ext.menopausal_status", "levels": ["pre", "post"]},
]
"""Every GBSG2 column but the recurrence flag, which is the label."""
DECLARED_ROUNDS = 100


def trap_spec(hidden: int, clip_norm: float, rounds: int = DECLARED_ROUNDS) -> JobSpec:
    """A job an orchestrator may write: an MLP trained by one full-batch SGD step per round."""
    model = {"type": "mlp", "hidden": [hidden]}
    return sgd_job("innocent-mlp", FEATURES, model, rounds, clip_norm)


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


def play_trap(
    setup: str, tmp_path: Path, site_datasets: Path, policy: EdgePolicy, **attack: Any
) -> tuple[Recovery, Score]:
    return played(
        f"trap weights, {setup}",
        tmp_path / "edge",
        site_datasets,
        policy,
        lambda orchestrator: trap_weights(orchestrator, **attack),
        lambda store: true_training_rows(store, trap_spec(1, 1.0)),
    )


def test_trap_weights_recover_rows_when_the_model_may_move_freely(
    tmp_path: Path, site_datasets: Path
) -> None:
    """Naive: the site accepts a clip norm of 1e6 and any travel, so the step bound (part B)
    allows any model within 1e6 of the last one the site saw: the trap, about 280 away, goes
    out in round 2, and one update gives the rows away."""
    policy = EdgePolicy(max_clip_norm=1e6, max_model_travel=1e300)
    recovery, result = play_trap("naive", tmp_path, site_datasets, policy, clip_norm=1e6)
    assert_rows_recovered(recovery, result)


def test_the_step_bound_alone_lets_a_walk_reach_the_trap(
    tmp_path: Path, site_datasets: Path
) -> None:
    """Naive: the default policy but any travel. The step bound (part B) bounds the speed, not
    the destination: at the largest clip norm the defaults accept (10) the attack walks to the
    trap, about 280 away, a step a round, and reads the rows off the update of round 30."""
    policy = EdgePolicy(max_model_travel=1e300)
    clip = policy.max_clip_norm
    label = "walk, travel lifted"
    recovery, result = play_trap(label, tmp_path, site_datasets, policy, clip_norm=clip)
    assert_rows_recovered(recovery, result)
    assert recovery.tasks > 20


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
    recovery, result = play_trap(
        "defaults", tmp_path, site_datasets, policy, clip_norm=clip, rounds=rounds
    )
    assert result.exact == 0
    assert recovery.stopped is not None
