"""Update clipping and the robust strategies (median, trimmed mean, Krum), against numpy and
scipy references and against one hostile site of five."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from oncofed.learning.aggregate import (
    MAX_OVERSHOOT,
    Clipped,
    EmptyAggregate,
    HeldStart,
    RobustMean,
    UpdateRefused,
    WeightedMean,
    clip_scale,
)
from oncofed.learning.steps import InMemory, clip_update, within_step
from oncofed.learning.strategies import (
    Krum,
    Median,
    RobustStrategy,
    TrimmedMean,
    build_strategy,
)
from oncofed.wire.spec import KrumSpec, MedianSpec, TrimmedMeanSpec
from oncofed.wire.tensors import Weights
from tests.support import make_spec

SHAPES: dict[str, tuple[int, ...]] = {"a.weight": (4, 6), "a.bias": (4,), "b.weight": (1, 4)}
SITES = 5


def _flat(weights: Weights) -> np.ndarray:
    return np.concatenate([weights[k].reshape(-1).astype(np.float64) for k in SHAPES])


def _unflat(values: np.ndarray) -> Weights:
    out, at = {}, 0
    for name, shape in SHAPES.items():
        size = math.prod(shape)
        out[name] = values[at : at + size].reshape(shape).astype(np.float32)
        at += size
    return out


def _global() -> Weights:
    rng = np.random.default_rng(7)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def _robust(
    strategy: RobustStrategy, start: Weights, models: list[Weights], weights: list[float], **kw: int
) -> np.ndarray:
    """The flat next model of ``strategy`` over ``models`` (not clipped)."""
    base = InMemory(start)
    updates = [Clipped(InMemory(m), base, 1.0) for m in models]
    mean = RobustMean(strategy, base, updates, weights, SHAPES, **kw)
    parts = {name: np.concatenate([c for _, c in mean.mean_chunks(name)]) for name in SHAPES}
    return np.concatenate([parts[k] for k in SHAPES])


# -- the strategies' arithmetic against references ----------------------------------------


def test_median_is_numpys_median() -> None:
    deltas = np.random.default_rng(1).normal(size=(SITES, 40))
    np.testing.assert_array_equal(Median().combine(deltas, np.ones(SITES)), np.median(deltas, 0))
    even = deltas[:4]
    np.testing.assert_array_equal(Median().combine(even, np.ones(4)), np.median(even, axis=0))


@pytest.mark.parametrize(("trim", "sites"), [(0.2, 5), (0.1, 10), (0.3, 7), (0.1, 5)])
def test_trimmed_mean_is_scipys_trim_mean(trim: float, sites: int) -> None:
    deltas = np.random.default_rng(2).standard_cauchy(size=(sites, 30))
    np.testing.assert_allclose(
        TrimmedMean(trim).combine(deltas, np.ones(sites)),
        stats.trim_mean(deltas, trim, axis=0),
        rtol=1e-12,
    )


def _krum_by_hand(points: np.ndarray, byzantine: int, multi: int) -> list[int]:
    """Blanchard et al.'s Krum, written out: the score of i sums the squared distances to its
    n - f - 2 nearest other points; keep the ``multi`` lowest scores."""
    n = len(points)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((points[i] - points[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: n - byzantine - 2]))
    return sorted(sorted(range(n), key=lambda i: (scores[i], i))[:multi])


@pytest.mark.parametrize(("byzantine", "multi"), [(1, 1), (1, 3), (2, 2), (0, 4)])
def test_krum_selects_as_blanchard_et_al(byzantine: int, multi: int) -> None:
    rng = np.random.default_rng(3)
    points = rng.normal(size=(7, 12)) * rng.uniform(0.1, 3.0, size=(7, 1))
    distances = ((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
    chosen = Krum(byzantine, multi).select(np.ones(7), lambda: distances)
    assert chosen.tolist() == _krum_by_hand(points, byzantine, multi)


def test_multi_krum_averages_the_chosen_by_samples() -> None:
    deltas = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(
        Krum(1, 2).combine(deltas, np.array([1.0, 3.0])), (deltas[0] + 3 * deltas[1]) / 4
    )


def test_streamed_robust_mean_equals_the_whole_array_reference() -> None:
    """A budget of 7 elements splits every tensor into ragged chunks; the result is the same
    as the strategies over whole flat arrays, plus the global model."""
    start = _global()
    rng = np.random.default_rng(4)
    models = [{k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()}]
    models += [{k: v * (i + 2) for k, v in models[0].items()} for i in range(3)]
    models.append({k: -v for k, v in start.items()})
    weights = [10.0, 20.0, 30.0, 40.0, 50.0]
    base = _flat(start)
    deltas = np.stack([_flat(m) - base for m in models])
    distances = ((deltas[:, None] - deltas[None]) ** 2).sum(axis=2)
    chosen = _krum_by_hand(deltas, 1, 2)
    references = {
        Median(): np.median(deltas, axis=0),
        TrimmedMean(0.2): stats.trim_mean(deltas, 0.2, axis=0),
        Krum(1, 2): np.average(deltas[chosen], axis=0, weights=[weights[i] for i in chosen]),
    }
    assert Krum(1, 2).select(np.array(weights), lambda: distances).tolist() == chosen
    for strategy, expected in references.items():
        result = _robust(strategy, start, models, weights, budget=7)
        np.testing.assert_allclose(result, base + expected, rtol=1e-12, atol=1e-12)


def test_robust_mean_needs_updates_with_positive_weights() -> None:
    start = InMemory(_global())
    with pytest.raises(EmptyAggregate):
        RobustMean(Median(), start, [], [], SHAPES)
    with pytest.raises(ValueError, match="positive weight"):
        RobustMean(Median(), start, [Clipped(start, start, 1.0)], [0.0], SHAPES)


# -- one hostile site of five ---------------------------------------------------------------


def _honest(start: Weights) -> list[np.ndarray]:
    """Four honest moves: a common direction of norm 1, each with its own small noise."""
    rng = np.random.default_rng(5)
    size = _flat(start).size
    direction = rng.normal(size=size)
    direction /= np.linalg.norm(direction)
    return [direction + 1e-3 * rng.normal(size=size) for _ in range(SITES - 1)]


ATTACKS = {"scaled x1000": 1000.0, "sign-flipped": -1.0}
STRATEGIES = {
    "median": Median(),
    "trimmed_mean": TrimmedMean(0.2),
    "krum": Krum(1),
    "multi-krum": Krum(1, 3),
}


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_one_hostile_site_of_five_drags_fedavg_not_the_robust_strategy(
    name: str, attack: str
) -> None:
    start = _global()
    base = _flat(start)
    honest = _honest(start)
    hostile = ATTACKS[attack] * honest[0]  # the first honest move, scaled or flipped
    moves = [hostile, *honest]
    models = [_unflat(base + move) for move in moves]
    weights = [100.0] * SITES
    honest_mean = base + np.mean(honest, axis=0)

    plain = WeightedMean(SHAPES)
    for model, weight in zip(models, weights, strict=True):
        plain.add(model, weight)
    fedavg = _flat(plain.result())
    robust = _robust(STRATEGIES[name], start, models, weights)

    fedavg_off = np.linalg.norm(fedavg - honest_mean)
    robust_off = np.linalg.norm(robust - honest_mean)
    assert fedavg_off > (100.0 if attack == "scaled x1000" else 0.35)  # of a move of norm 1
    assert robust_off < 0.01


# -- clipping ---------------------------------------------------------------------------------


def test_clip_scale_leaves_a_short_update_and_scales_a_long_one_to_the_norm() -> None:
    start = _global()
    base = InMemory(start)
    direction = np.random.default_rng(6).normal(size=_flat(start).size)
    direction /= np.linalg.norm(direction)
    short = _unflat(_flat(start) + 0.5 * direction)
    assert clip_scale(InMemory(short), base, SHAPES, 1.0) == 1.0

    long = _unflat(_flat(start) + 1e6 * direction)
    scale = clip_scale(InMemory(long), base, SHAPES, 2.0)
    clipped = Clipped(InMemory(long), base, scale)
    moved = np.concatenate([clipped.delta(k, 0, math.prod(s)) for k, s in SHAPES.items()])
    assert np.linalg.norm(moved) == pytest.approx(2.0, rel=1e-6)
    np.testing.assert_allclose(moved / 2.0, direction, atol=1e-6)  # the same direction
    folded = np.concatenate([c for _, _, c in clipped.chunks(SHAPES)])
    np.testing.assert_allclose(folded, _flat(start) + moved, rtol=1e-12)


def test_an_update_the_edge_clipped_is_folded_exactly_as_sent() -> None:
    """An edge rounds its clipped model to float32, so its move can measure a hair over the
    clip norm: it is not scaled again, and the running sum gets the bytes the site sent."""
    start = _global()
    rng = np.random.default_rng(8)
    for _ in range(20):
        local = {k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()}
        sent = clip_update(start, local, 0.3)
        update = InMemory(sent)
        assert clip_scale(update, InMemory(start), SHAPES, 0.3) == 1.0
        chunks = Clipped(update, InMemory(start), 1.0).chunks(SHAPES)
        for name, offset, values in chunks:
            assert offset == 0
            np.testing.assert_array_equal(values, sent[name].reshape(-1))


def test_a_held_start_measures_and_folds_every_update_exactly_as_its_file() -> None:
    """The orchestrator holds a round's global model in float64 (``HeldStart``): each update's
    scale, its clipped elements and the running sum are the very numbers the float32 model
    gives, for updates within the norm, a hair over it (as an edge rounds) and far over it."""
    start = _global()
    held = HeldStart(InMemory(start), SHAPES)
    assert held.squares == pytest.approx(float(_flat(start) @ _flat(start)), rel=1e-15)
    rng = np.random.default_rng(9)
    sums = WeightedMean(SHAPES), WeightedMean(SHAPES)
    for size in (0.01, 1.0, 1e4):
        local = {
            k: v + size * rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()
        }
        for sent in (local, clip_update(start, local, 0.3)):
            update = InMemory(sent)
            scales = [clip_scale(update, base, SHAPES, 0.3) for base in (InMemory(start), held)]
            assert scales[0] == scales[1]
            weight = float(rng.integers(1, 50))
            for total, base in zip(sums, (InMemory(start), held), strict=True):
                total.add_chunks(Clipped(update, base, scales[0]).chunks(SHAPES), weight)
    for name in SHAPES:
        np.testing.assert_array_equal(*(dict(t.mean_chunks(name))[0] for t in sums))
    with pytest.raises(ValueError, match="read-only"):
        held.read("a.bias")[0] = 1.0


@pytest.mark.parametrize("value", [3e38, np.inf, np.nan])
@pytest.mark.parametrize("held", [False, True])
def test_an_absurd_or_non_finite_update_is_refused(value: float, held: bool) -> None:
    start = _global()
    base = HeldStart(InMemory(start), SHAPES) if held else InMemory(start)
    bad = {k: np.full(s, value, np.float32) for k, s in SHAPES.items()}
    with pytest.raises(UpdateRefused):
        clip_scale(InMemory(bad), base, SHAPES, 1e6)


def test_the_overshoot_limit_is_relative_to_the_clip_norm() -> None:
    start = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    one = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    one["a.bias"][0] = 1e6
    assert clip_scale(InMemory(one), InMemory(start), SHAPES, 1.0) == pytest.approx(1e-6)
    with pytest.raises(UpdateRefused, match="refused, not scaled"):
        clip_scale(InMemory(one), InMemory(start), SHAPES, 0.5 * 1e6 / MAX_OVERSHOOT)


def test_a_job_that_refuses_long_updates_refuses_instead_of_scaling() -> None:
    start = {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}
    update = {k: np.full(s, 0.1, np.float32) for k, s in SHAPES.items()}  # norm sqrt(0.52)
    assert clip_scale(InMemory(update), InMemory(start), SHAPES, 1.0, refuse=True) == 1.0
    with pytest.raises(UpdateRefused, match="refuses longer updates"):
        clip_scale(InMemory(update), InMemory(start), SHAPES, 0.5, refuse=True)


# -- step bounds: what an edge checks each new global model against ---------------------------


def _clipped_moves(rng: np.random.Generator, sites: int, size: int, c: float) -> np.ndarray:
    moves = rng.normal(size=(sites, size)) * (rng.random((sites, size)) < 0.5)
    norms = np.maximum(np.linalg.norm(moves, axis=1, keepdims=True), 1e-12)
    return moves * (c / norms)  # every move exactly at the clip norm


def test_the_median_of_clipped_updates_can_exceed_the_clip_norm_but_not_its_bound() -> None:
    c = 1.0
    moves = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]) * (c / math.sqrt(2))
    median = Median().combine(moves, np.ones(3))
    assert np.linalg.norm(median) > c  # FedAvg's bound would make honest edges refuse it
    assert np.linalg.norm(median) <= Median().max_step(c).size


@pytest.mark.parametrize("name", STRATEGIES)
def test_robust_moves_stay_within_max_step_and_pass_the_edges_check(name: str) -> None:
    strategy = STRATEGIES[name]
    bound = strategy.max_step(0.7)
    assert bound.norm == "l2"
    rng = np.random.default_rng(9)
    start = _global()
    size = _flat(start).size
    for sites in (2, 3, 4, 5, 8):
        for _ in range(30):
            moves = _clipped_moves(rng, sites, size, 0.7)
            chosen = strategy.select(np.ones(sites), lambda m=moves: _squared_distances(m))
            aggregate = strategy.combine(moves[chosen], np.ones(len(chosen)))
            assert np.linalg.norm(aggregate) <= bound.size * (1 + 1e-12)
            new = _unflat(_flat(start) + aggregate)
            assert within_step(InMemory(start), new, bound, 1)


def _squared_distances(moves: np.ndarray) -> np.ndarray:
    return ((moves[:, None] - moves[None]) ** 2).sum(axis=2)


# -- the job spec ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ({"name": "median"}, Median),
        ({"name": "trimmed_mean", "trim": 0.2}, TrimmedMean),
        ({"name": "krum", "byzantine": 1, "multi": 2}, Krum),
    ],
)
def test_robust_strategies_are_named_in_the_spec(
    strategy: dict[str, object], expected: type
) -> None:
    spec = make_spec(strategy=strategy, min_sites=5)
    assert isinstance(spec.strategy, MedianSpec | TrimmedMeanSpec | KrumSpec)
    built = build_strategy(spec.strategy)
    assert type(built) is expected
    assert built.proximal_mu == 0.0 and built.state_keys == ()
    if isinstance(built, TrimmedMean):
        assert built.trim == 0.2
    if isinstance(built, Krum):
        assert (built.byzantine, built.multi) == (1, 2)


@pytest.mark.parametrize("strategy", ["median", "trimmed_mean", "krum"])
def test_robust_strategies_are_refused_with_secure_aggregation(strategy: str) -> None:
    with pytest.raises(ValidationError, match="needs each site's update"):
        make_spec(strategy={"name": strategy}, min_sites=5, privacy={"secure_aggregation": True})


@pytest.mark.parametrize(
    ("strategy", "min_sites", "message"),
    [
        ({"name": "krum", "byzantine": 1}, 4, "min_sites >= 5"),
        ({"name": "krum", "byzantine": 2}, 6, "min_sites >= 7"),
        ({"name": "krum", "byzantine": 1, "multi": 5}, 5, "multi 5 is more than"),
        ({"name": "trimmed_mean", "trim": 0.5}, 5, "less than 0.5"),
    ],
)
def test_robust_strategy_options_are_checked(
    strategy: dict[str, object], min_sites: int, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        make_spec(strategy=strategy, min_sites=min_sites)


def test_over_clip_is_scale_by_default_and_may_refuse() -> None:
    assert make_spec().local.over_clip == "scale"
    assert make_spec(local={"over_clip": "refuse"}).local.over_clip == "refuse"
    with pytest.raises(ValidationError):
        make_spec(local={"over_clip": "ignore"})
