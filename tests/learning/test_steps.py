"""Update clipping, each strategy's step bound, and the step check a site applies to every new
global model: honest rounds of clipped updates (through the real streaming aggregation and
strategies, float32 models) always pass; a model moved further is always caught."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oncofed.learning.aggregate import WeightedMean
from oncofed.learning.steps import InMemory, clip_update, within_step
from oncofed.learning.strategies import (
    FedAdam,
    FedAvg,
    FedProx,
    StepBound,
    Strategy,
    apply_strategy,
)
from oncofed.wire.stream import CHUNK
from oncofed.wire.tensors import Weights

SHAPES: dict[str, tuple[int, ...]] = {"a.weight": (16, 8), "a.bias": (16,), "b.weight": (1, 16)}


def _model(seed: int, scale: float = 1.0) -> Weights:
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.normal(size=s)).astype(np.float32) for k, s in SHAPES.items()}


def _norm(a: Weights, b: Weights) -> float:
    return math.sqrt(sum(float(np.sum((a[k].astype(float) - b[k]) ** 2)) for k in a))


def test_a_long_update_is_scaled_to_the_clip_norm_and_a_short_one_kept() -> None:
    start, far = _model(0), _model(1)
    clipped = clip_update(start, far, 0.5)
    assert all(v.dtype == np.float32 for v in clipped.values())
    assert _norm(clipped, start) == pytest.approx(0.5, rel=1e-5)
    direction = {k: far[k].astype(float) - start[k] for k in start}
    moved = {k: clipped[k].astype(float) - start[k] for k in start}
    ratio = _norm(far, start) / 0.5
    for k in start:
        np.testing.assert_allclose(moved[k] * ratio, direction[k], atol=1e-5)
    near = {k: v + np.float32(1e-3) for k, v in start.items()}
    kept = clip_update(start, near, 0.5)
    for k in start:
        np.testing.assert_array_equal(kept[k], near[k])
    unchanged = clip_update(start, start, 0.5)  # a zero update stays zero
    assert _norm(unchanged, start) == 0.0


def test_each_strategy_names_its_step() -> None:
    assert FedAvg().max_step(2.0) == StepBound("l2", 2.0)
    assert FedProx(0.1).max_step(2.0) == StepBound("l2", 2.0)
    # b1^2 < b2: lr (1 - b1) / sqrt((1 - b2)(1 - b1^2 / b2)), below lr c / tau
    adam = FedAdam(lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3)
    bound = 0.1 / math.sqrt(0.01 * (1 - 0.81 / 0.99))
    assert adam.max_step(1.0) == StepBound("linf", pytest.approx(0.01 * bound))
    assert FedAdam(0.01, 0.9, 0.99, tau=10.0).max_step(1.0) == StepBound("linf", 0.001)
    assert FedAdam(0.01, 0.99, 0.9, tau=1e-3).max_step(1.0) == StepBound("linf", 10.0)


@pytest.mark.parametrize(
    "strategy",
    [FedAvg(), FedProx(0.5), FedAdam(0.01, 0.9, 0.99, 1e-3), FedAdam(0.3, 0.5, 0.6, 1e-3)],
    ids=["fedavg", "fedprox", "fedadam", "fedadam-low-b2"],
)
def test_honest_rounds_of_clipped_updates_stay_within_the_step(strategy: Strategy) -> None:
    """Twenty rounds, three sites, updates of every length (some clipped, some not) and some
    pointing the same way round after round (Adam's worst case): each new global model, and
    the model k rounds later, is within k steps of an earlier one."""
    clip, rng = 1.0, np.random.default_rng(5)
    bound = strategy.max_step(clip)
    models, state = [_model(7, scale=3.0)], {}
    push = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    for round_number in range(20):
        current = models[-1]
        total = WeightedMean(SHAPES)
        for site in range(3):
            length = [0.2, 1.0, 40.0][site] * (1 + round_number % 3)
            local = {
                k: current[k] + length * (push[k] + 0.1 * rng.normal(size=s)).astype(np.float32)
                for k, s in SHAPES.items()
            }
            total.add(clip_update(current, local, clip), float(10 + site))
        new, state = apply_strategy(strategy, current, total.result(), state)
        models.append(new)
    for k in (1, 3, 7):
        for start in range(0, len(models) - k):
            assert within_step(InMemory(models[start]), models[start + k], bound, k)
    assert not within_step(InMemory(models[0]), models[10], bound, 0)


@pytest.mark.parametrize("bound", [StepBound("l2", 0.5), StepBound("linf", 0.01)])
def test_a_model_moved_beyond_the_step_is_caught(bound: StepBound) -> None:
    start = _model(3)
    moved = {k: v.copy() for k, v in start.items()}
    moved["a.bias"][4] += np.float32(2.5 * bound.size)
    assert within_step(InMemory(start), moved, bound, 3)
    assert not within_step(InMemory(start), moved, bound, 2)
    assert within_step(InMemory(start), start, bound, 0)
    assert not within_step(InMemory(start), moved, bound, 0)


def test_a_spread_move_is_caught_by_the_l2_bound_but_not_per_element() -> None:
    """A trap planted as many small changes: every element within the L-infinity step, the
    whole far beyond the L2 one."""
    start = _model(4)
    moved = {k: v + np.float32(0.05) for k, v in start.items()}
    assert within_step(InMemory(start), moved, StepBound("linf", 0.06), 1)
    assert not within_step(InMemory(start), moved, StepBound("l2", 0.06), 1)


def test_the_step_check_reads_large_tensors_chunk_by_chunk() -> None:
    """A tensor longer than one chunk: the excess may sit in any chunk."""
    big = {"w": np.zeros((3 * (1 << 20) + 5,), np.float32)}
    moved = {"w": big["w"].copy()}
    moved["w"][-1] = 2.0
    assert not within_step(InMemory(big), moved, StepBound("linf", 1.0), 1)
    assert not within_step(InMemory(big), moved, StepBound("l2", 1.0), 1)
    assert within_step(InMemory(big), moved, StepBound("l2", 1.0), 2)


@pytest.mark.parametrize(("name", "index"), [("a", 2), ("big", CHUNK + 3), ("b", (1, 1))])
def test_small_tensors_checked_together_and_large_ones_by_chunk_are_all_read(
    name: str, index: int | tuple[int, int]
) -> None:
    """Small tensors are read as one block and a large one chunk by chunk: an element moved in
    any of them, before the large tensor, in its last chunk or after it, counts."""
    model = {
        "a": np.zeros(3, np.float32),
        "big": np.zeros(CHUNK + 7, np.float32),
        "b": np.zeros((2, 2), np.float32),
    }
    moved = {k: v.copy() for k, v in model.items()}
    moved[name][index] = 2.0
    assert not within_step(InMemory(model), moved, StepBound("linf", 1.0), 1)
    assert not within_step(InMemory(model), moved, StepBound("l2", 1.0), 1)
    assert within_step(InMemory(model), moved, StepBound("l2", 1.0), 2)
    assert clip_update(model, moved, 1.0)[name][index] == pytest.approx(1.0)
