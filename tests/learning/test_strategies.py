"""Server-side aggregation: the streaming weighted mean and the three strategies."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from oncofed.learning.aggregate import BrokenAggregate, EmptyAggregate, WeightedMean
from oncofed.learning.strategies import FedAdam, FedAvg, FedProx, apply_strategy, build_strategy
from oncofed.wire.spec import FedAdamSpec, FedAvgSpec, FedProxSpec, JobSpec
from oncofed.wire.tensors import Weights

SHAPES: dict[str, tuple[int, ...]] = {"a.weight": (3, 4), "a.bias": (3,), "b.weight": (1, 3)}
SAMPLES = [10.0, 30.0, 60.0]


@pytest.fixture
def updates() -> list[Weights]:
    rng = np.random.default_rng(1)
    return [
        {k: rng.normal(loc=i, size=s).astype(np.float32) for k, s in SHAPES.items()}
        for i in range(len(SAMPLES))
    ]


@pytest.fixture
def current() -> Weights:
    rng = np.random.default_rng(2)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def _mean(updates: list[Weights], samples: list[float]) -> Weights:
    total = WeightedMean(SHAPES)
    for update, n in zip(updates, samples, strict=True):
        total.add(update, n)
    return total.result()


def _by_hand(updates: list[Weights], samples: list[float]) -> Weights:
    return {
        k: np.average(np.stack([u[k] for u in updates]).astype(np.float64), axis=0, weights=samples)
        for k in SHAPES
    }


def _copy(weights: Weights) -> Weights:
    return {k: v.copy() for k, v in weights.items()}


# -- WeightedMean ------------------------------------------------------------------------


def test_weighted_mean_equals_numpy_average(updates: list[Weights]) -> None:
    result = _mean(updates, SAMPLES)
    expected = _by_hand(updates, SAMPLES)
    assert set(result) == set(SHAPES)
    for k in SHAPES:
        assert result[k].dtype == np.float32
        assert result[k].shape == SHAPES[k]
        np.testing.assert_allclose(result[k], expected[k], rtol=0, atol=1e-6)
    # the unweighted mean would differ: weights matter
    assert not np.allclose(result["a.bias"], np.mean([u["a.bias"] for u in updates], axis=0))


def test_weighted_mean_tracks_count_and_total(updates: list[Weights]) -> None:
    total = WeightedMean(SHAPES)
    for update, n in zip(updates, SAMPLES, strict=True):
        total.add(update, n)
    assert total.count == 3
    assert total.total_weight == sum(SAMPLES)


def test_streaming_pairs_equal_mapping_input(updates: list[Weights]) -> None:
    def stream(update: Weights) -> Iterator[tuple[str, np.ndarray]]:
        for name in reversed(list(update)):  # another order than the shapes
            yield name, update[name]

    as_mapping = _mean(updates, SAMPLES)
    total = WeightedMean(SHAPES)
    for update, n in zip(updates, SAMPLES, strict=True):
        total.add(stream(update), n)
    as_stream = total.result()
    for k in SHAPES:
        np.testing.assert_array_equal(as_stream[k], as_mapping[k])


def test_no_update_raises_empty_aggregate() -> None:
    with pytest.raises(EmptyAggregate, match="no update"):
        WeightedMean(SHAPES).result()


@pytest.mark.parametrize("weight", [0.0, -5.0, float("nan")])
def test_non_positive_weight_is_rejected(updates: list[Weights], weight: float) -> None:
    total = WeightedMean(SHAPES)
    with pytest.raises(ValueError, match="weight must be positive"):
        total.add(updates[0], weight)
    assert total.count == 0
    with pytest.raises(EmptyAggregate):
        total.result()


def test_update_missing_a_tensor_is_rejected(updates: list[Weights]) -> None:
    total = WeightedMean(SHAPES)
    partial = {k: v for k, v in updates[0].items() if k != "b.weight"}
    with pytest.raises(ValueError, match=r"lacks tensors .*b.weight"):
        total.add(partial, 5.0)
    assert total.count == 0
    assert total.total_weight == 0.0


def test_update_failing_part_way_breaks_the_sum_instead_of_corrupting_it(
    updates: list[Weights],
) -> None:
    total = WeightedMean(SHAPES)
    total.add(updates[1], 1.0)
    partial = {k: v for k, v in updates[0].items() if k != "b.weight"}
    with pytest.raises(ValueError, match="lacks tensors"):
        total.add(partial, 5.0)
    with pytest.raises(BrokenAggregate):
        total.result()
    with pytest.raises(BrokenAggregate):
        total.add(updates[1], 1.0)


def test_update_repeating_a_name_is_rejected(updates: list[Weights]) -> None:
    total = WeightedMean(SHAPES)
    pairs = [
        ("a.weight", updates[0]["a.weight"]),
        ("a.bias", updates[0]["a.bias"]),
        ("a.bias", updates[0]["a.bias"]),  # instead of b.weight
    ]
    with pytest.raises(ValueError):
        total.add(iter(pairs), 5.0)


def test_large_tensor_chunked_fold_is_exact() -> None:
    n = (1 << 20) + 12_345  # more than one chunk, with a ragged tail
    shapes = {"big": (n,), "small": (2,)}
    rng = np.random.default_rng(3)
    first = {"big": rng.normal(size=n).astype(np.float32), "small": np.ones(2, np.float32)}
    second = {"big": rng.normal(size=n).astype(np.float32), "small": np.zeros(2, np.float32)}
    total = WeightedMean(shapes)
    total.add(first, 1.0)
    total.add(second, 3.0)
    result = total.result()
    expected = (
        (first["big"].astype(np.float64) + 3.0 * second["big"].astype(np.float64)) / 4.0
    ).astype(np.float32)
    np.testing.assert_array_equal(result["big"], expected)
    np.testing.assert_array_equal(result["small"], np.full(2, 0.25, np.float32))


# -- strategies --------------------------------------------------------------------------


def test_fedavg_update_is_the_weighted_mean(updates: list[Weights], current: Weights) -> None:
    average = _mean(updates, SAMPLES)
    before = _copy(current), _copy(average)
    new, state = apply_strategy(FedAvg(), current, average, {})
    assert state == {}
    expected = _by_hand(updates, SAMPLES)
    for k in SHAPES:
        np.testing.assert_allclose(new[k], expected[k], rtol=0, atol=1e-6)
    for k in SHAPES:  # inputs untouched
        np.testing.assert_array_equal(current[k], before[0][k])
        np.testing.assert_array_equal(average[k], before[1][k])
    assert FedAvg().proximal_mu == 0.0


def test_fedprox_server_update_matches_fedavg(updates: list[Weights], current: Weights) -> None:
    average = _mean(updates, SAMPLES)
    prox = FedProx(0.25)
    assert prox.proximal_mu == 0.25
    new, state = apply_strategy(prox, current, average, {})
    plain, _ = apply_strategy(FedAvg(), current, average, {})
    assert state == {}
    for k in SHAPES:
        np.testing.assert_array_equal(new[k], plain[k])


def test_fedprox_rejects_negative_mu() -> None:
    with pytest.raises(ValueError, match="mu"):
        FedProx(-0.1)


def test_fedadam_steps_follow_reddi_et_al(updates: list[Weights], current: Weights) -> None:
    lr, b1, b2, tau = 0.05, 0.9, 0.99, 1e-3
    adam = FedAdam(lr, b1, b2, tau)
    average = _mean(updates, SAMPLES)
    before = _copy(current)

    new, state = apply_strategy(adam, current, average, {})
    assert set(state) == {f"m/{k}" for k in SHAPES} | {f"v/{k}" for k in SHAPES}
    m1, v1 = {}, {}
    for k in SHAPES:
        w = current[k].astype(np.float64)
        delta = average[k].astype(np.float64) - w
        m1[k] = (1 - b1) * delta
        v1[k] = (1 - b2) * delta**2
        expected = w + lr * m1[k] / (np.sqrt(v1[k]) + tau)
        assert new[k].dtype == np.float32
        np.testing.assert_allclose(new[k], expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(state[f"m/{k}"], m1[k], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(state[f"v/{k}"], v1[k], rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(current[k], before[k])
        # not simply the average: Adam moves by about lr per coordinate on the first step
        assert not np.allclose(new[k], average[k], atol=1e-3)

    # a second step from the same average uses the stored moments
    second, state2 = apply_strategy(adam, new, average, state)
    for k in SHAPES:
        w = new[k].astype(np.float64)
        delta = average[k].astype(np.float64) - w
        m2 = b1 * state[f"m/{k}"].astype(np.float64) + (1 - b1) * delta
        v2 = b2 * state[f"v/{k}"].astype(np.float64) + (1 - b2) * delta**2
        np.testing.assert_allclose(second[k], w + lr * m2 / (np.sqrt(v2) + tau), rtol=1e-6)
        np.testing.assert_allclose(state2[f"m/{k}"], m2, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state2[f"v/{k}"], v2, rtol=1e-5, atol=1e-9)


def test_build_strategy_maps_each_spec() -> None:
    avg = build_strategy(FedAvgSpec())
    assert type(avg) is FedAvg
    assert avg.proximal_mu == 0.0

    prox = build_strategy(FedProxSpec(mu=0.3))
    assert type(prox) is FedProx
    assert prox.proximal_mu == 0.3

    adam = build_strategy(FedAdamSpec(lr=0.5, beta1=0.8, beta2=0.95, tau=0.02))
    assert type(adam) is FedAdam
    assert (adam.lr, adam.beta1, adam.beta2, adam.tau) == (0.5, 0.8, 0.95, 0.02)
    assert adam.proximal_mu == 0.0


def test_build_strategy_from_job_spec() -> None:
    spec = JobSpec.model_validate(
        {
            "name": "j",
            "dataset": "d",
            "features": ["ext.x"],
            "outcome": {"type": "binary", "label": "ext.y"},
            "model": {"type": "logistic"},
            "strategy": {"name": "fedprox", "mu": 0.7},
        }
    )
    assert build_strategy(spec.strategy).proximal_mu == 0.7
