"""From a site's table to model inputs: encoding, exclusions, outcome, split and scaling."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest

from oncofed.learning.data import (
    Cohort,
    DataError,
    build_cohort,
    holdout_split,
    pooled_standardization,
    split_cohort,
)
from oncofed.wire.messages import StatsResult
from oncofed.wire.spec import JobSpec


def _spec(**changes: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "job",
        "dataset": "data",
        "features": [
            "age_at_diagnosis",
            {"name": "tumour_size_mm", "transform": "log1p"},
            {"name": "grade", "levels": ["G1", "G2", "G3"]},
        ],
        "outcome": {"type": "binary", "label": "ext.y"},
        "model": {"type": "logistic"},
    }
    data.update(changes)
    return JobSpec.model_validate(data)


@pytest.fixture
def table() -> dict[str, np.ndarray]:
    return {
        "age_at_diagnosis": np.array([50.0, 60.0, np.nan, 70.0, 40.0, 30.0]),
        "tumour_size_mm": np.array([0.0, math.e - 1, 3.0, 1.0, 9.0, 2.0]),
        "grade": np.array(["G1", "G2", "G3", None, "G2", "G3"], dtype=object),
        "ext.y": np.array([0.0, 1.0, 1.0, 0.0, 1.0, np.nan]),
        "unused": np.array(["a", "b", "c", "d", "rfs_event", "f"]),
    }


def test_build_cohort_encodes_and_excludes(table: dict[str, np.ndarray]) -> None:
    cohort = build_cohort(_spec(), table)
    # row 2: age missing; row 3: grade missing; row 5: label missing
    assert len(cohort) == 3
    assert cohort.excluded == 3
    np.testing.assert_allclose(
        cohort.numeric, [[50.0, 0.0], [60.0, 1.0], [40.0, math.log(10.0)]], rtol=1e-15
    )
    # one-hot for G2 and G3; G1 is the reference level and gets no column
    np.testing.assert_array_equal(cohort.dummies, [[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_array_equal(cohort.label, [0.0, 1.0, 1.0])
    assert cohort.time is None


def test_reference_level_is_the_first_listed(table: dict[str, np.ndarray]) -> None:
    spec = _spec(features=[{"name": "grade", "levels": ["G3", "G1", "G2"]}])
    cohort = build_cohort(spec, table)
    # rows kept: 0 (G1), 1 (G2), 2 (G3), 4 (G2); row 3 missing grade, row 5 missing label
    np.testing.assert_array_equal(cohort.dummies, [[1, 0], [0, 1], [0, 0], [0, 1]])
    assert cohort.numeric.shape == (4, 0)
    assert cohort.excluded == 2


def test_label_outside_zero_one_is_excluded() -> None:
    table = {"ext.x": np.arange(4.0), "ext.y": np.array([0.0, 1.0, 2.0, -1.0])}
    cohort = build_cohort(_spec(features=["ext.x"]), table)
    np.testing.assert_array_equal(cohort.numeric[:, 0], [0.0, 1.0])
    assert cohort.excluded == 2


def test_value_outside_the_levels_is_left_out(table: dict[str, np.ndarray]) -> None:
    table["grade"] = np.array(["G1", "G2", "G3", "G4", "G2", "G1"], dtype=object)
    cohort = build_cohort(_spec(), table)
    # row 2: age missing; row 3: G4 is not among the job's levels; row 5: label missing
    assert len(cohort) == 3
    assert cohort.excluded == 3
    np.testing.assert_array_equal(cohort.dummies, [[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize("missing", ["age_at_diagnosis", "grade", "ext.y"])
def test_missing_column_names_it(table: dict[str, np.ndarray], missing: str) -> None:
    del table[missing]
    with pytest.raises(DataError, match=rf"column '{re.escape(missing)}' is not in the dataset"):
        build_cohort(_spec(), table)


def test_non_numeric_column_names_it(table: dict[str, np.ndarray]) -> None:
    table["age_at_diagnosis"] = np.array(["old", "young", "old", "old", "young", "old"])
    with pytest.raises(DataError, match=r"column 'age_at_diagnosis' is not numeric"):
        build_cohort(_spec(), table)


def test_log1p_of_values_at_most_minus_one_is_refused(table: dict[str, np.ndarray]) -> None:
    table["tumour_size_mm"] = np.array([0.0, 1.0, -1.0, 2.0, 3.0, 4.0])
    with pytest.raises(DataError, match=r"column 'tumour_size_mm' has values <= -1"):
        build_cohort(_spec(), table)


def test_binary_horizon_outcome() -> None:
    spec = _spec(
        features=["ext.x"],
        outcome={"type": "binary", "time": "rfs_days", "event": "rfs_event", "horizon_days": 100},
    )
    table = {
        "ext.x": np.arange(9.0),
        "rfs_days": np.array([50.0, 100.0, 150.0, 80.0, 120.0, 30.0, 200.0, np.nan, 100.0]),
        "rfs_event": np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
    }
    cohort = build_cohort(spec, table)
    # 0: event at 50 -> 1;   1: event at the horizon -> 1;   2: event after it -> 0
    # 3: censored at 80 -> out;   4: censored at 120 -> 0;   5: censored at 30 -> out
    # 6: censored at 200 -> 0;   7: no time -> out
    # 8: censored exactly at the horizon: event-free through it -> 0
    np.testing.assert_array_equal(cohort.numeric[:, 0], [0.0, 1.0, 2.0, 4.0, 6.0, 8.0])
    np.testing.assert_array_equal(cohort.label, [1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert cohort.excluded == 3
    assert cohort.time is None


def test_survival_outcome_keeps_time_and_event() -> None:
    spec = _spec(
        features=["ext.x"],
        outcome={"type": "survival", "time": "rfs_days", "event": "rfs_event"},
        model={"type": "cox"},
    )
    table = {
        "ext.x": np.arange(5.0),
        "rfs_days": np.array([5.0, -1.0, 7.0, 9.0, 3.0]),
        "rfs_event": np.array([1.0, 1.0, 0.0, 2.0, 0.0]),
    }
    cohort = build_cohort(spec, table)
    # row 1: negative time; row 3: event not 0/1
    assert cohort.time is not None
    np.testing.assert_array_equal(cohort.time, [5.0, 7.0, 3.0])
    np.testing.assert_array_equal(cohort.label, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(cohort.numeric[:, 0], [0.0, 2.0, 4.0])
    assert cohort.excluded == 2
    taken = cohort.take(np.array([2, 0]))
    assert taken.time is not None
    np.testing.assert_array_equal(taken.time, [3.0, 5.0])
    np.testing.assert_array_equal(taken.label, [0.0, 1.0])


@pytest.mark.parametrize(("n", "fraction", "seed"), [(101, 0.25, 3), (40, 0.1, 0), (7, 0.5, 9)])
def test_holdout_split_is_deterministic_disjoint_and_complete(
    n: int, fraction: float, seed: int
) -> None:
    train, held = holdout_split(n, fraction, seed)
    again = holdout_split(n, fraction, seed)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(held, again[1])
    assert np.intersect1d(train, held).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(n))
    assert held.size == round(fraction * n)
    assert np.all(np.diff(train) > 0)
    assert np.all(np.diff(held) > 0)


def test_holdout_split_depends_on_seed() -> None:
    assert not np.array_equal(holdout_split(100, 0.3, 1)[1], holdout_split(100, 0.3, 2)[1])


def test_holdout_split_edge_sizes() -> None:
    assert [a.tolist() for a in holdout_split(1, 0.25, 0)] == [[0], []]
    assert [a.size for a in holdout_split(2, 0.01, 0)] == [1, 1]  # at least one held out
    assert [a.size for a in holdout_split(4, 0.99, 0)] == [1, 3]  # at least one trains on


def test_split_cohort_uses_spec_seed_and_fraction() -> None:
    spec = _spec(features=["ext.x"], seed=5, evaluation={"holdout": 0.3})
    table = {"ext.x": np.arange(20.0), "ext.y": np.tile([0.0, 1.0], 10)}
    train, held = split_cohort(spec, build_cohort(spec, table))
    train_rows, held_rows = holdout_split(20, 0.3, 5)
    np.testing.assert_array_equal(train.numeric[:, 0], train_rows.astype(float))
    np.testing.assert_array_equal(held.numeric[:, 0], held_rows.astype(float))


def _site(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    return {
        "age_at_diagnosis": rng.normal(55 + shift, 10, n).round(),
        "tumour_size_mm": rng.gamma(2.0, 15 + shift, n),
        "grade": rng.choice(np.array(["G1", "G2", "G3"], dtype=object), n),
        "ext.y": (rng.random(n) < 0.4).astype(np.float64),
    }


def test_pooled_standardization_equals_pooled_numpy() -> None:
    rng = np.random.default_rng(7)
    spec = _spec()
    cohorts = [build_cohort(spec, _site(rng, n, s)) for n, s in [(240, 0), (90, 8), (35, -12)]]
    parts = [StatsResult.model_validate_json(c.stats().model_dump_json()) for c in cohorts]
    scaling = pooled_standardization(parts)
    pooled = np.vstack([c.numeric for c in cohorts])
    np.testing.assert_allclose(scaling.mean, pooled.mean(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(scaling.std, pooled.std(axis=0, ddof=0), rtol=0, atol=1e-10)
    # the pooled design is centred and scaled; dummies pass through
    design = np.vstack([c.design(scaling) for c in cohorts])
    assert design.dtype == np.float32
    np.testing.assert_allclose(design[:, :2].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(design[:, :2].std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(design[:, 2:], np.vstack([c.dummies for c in cohorts]))


def test_pooled_standardization_of_constant_column_and_no_rows() -> None:
    parts = [StatsResult(n=2, sums=[6.0], sumsq=[18.0]), StatsResult(n=1, sums=[3.0], sumsq=[9.0])]
    scaling = pooled_standardization(parts)
    assert scaling.mean == [3.0]
    assert scaling.std == [1.0]  # zero variance: scale by one, not zero
    with pytest.raises(DataError, match="no rows"):
        pooled_standardization([StatsResult(n=0, sums=[0.0], sumsq=[0.0])])


def test_stats_are_count_sums_and_squares() -> None:
    cohort = Cohort(
        numeric=np.array([[1.0, 2.0], [3.0, 4.0]]),
        dummies=np.empty((2, 0)),
        label=np.array([0.0, 1.0]),
        time=None,
    )
    stats = cohort.stats()
    assert (stats.n, stats.sums, stats.sumsq) == (2, [4.0, 6.0], [10.0, 20.0])
