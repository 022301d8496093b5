"""The statistics round's check of its numeric columns: a column with few distinct values here
describes groups, whose sizes its count, sum and sum of squares would tell."""

from __future__ import annotations

import numpy as np
import pytest

from oncofed.learning.data import DataError, check_stats_columns, value_groups


def test_value_groups_by_hand() -> None:
    groups = value_groups(np.array([0.0, np.log(2.0), 0.0]), 10)
    assert groups is not None and groups.tolist() == [[1, 0], [0, 1], [1, 0]]
    assert value_groups(np.array([3.0, 3.0]), 10) is None  # one value: no groups
    assert value_groups(np.arange(11.0), 10) is None  # many values: a number
    assert value_groups(np.arange(3.0), 2) is None


def test_a_small_group_in_a_discrete_column_is_refused() -> None:
    rng = np.random.default_rng(0)
    age = rng.normal(60, 10, 100)
    flag = np.log1p((np.arange(100) < 7).astype(float))  # seven patients with the flag
    with pytest.raises(DataError) as caught:
        check_stats_columns(np.column_stack([age, flag]), ["age", "log1p_flag"], 11, 10)
    assert str(caught.value) == (
        "feature 'log1p_flag' takes few distinct values here (policy discrete_levels): the "
        "patients with each value must be at least 11 here"
    )
    check_stats_columns(np.column_stack([age, flag]), ["age", "flag"], 7, 10)
    nodes = np.repeat(np.arange(12.0), [9, *[10] * 10, 1])  # 12 values: not discrete
    check_stats_columns(nodes[:, None], ["nodes"], 11, 10)
    with pytest.raises(DataError, match="'nodes'"):
        check_stats_columns(nodes[:, None], ["nodes"], 11, 12)


def test_the_first_column_refused_is_the_one_a_check_column_by_column_names() -> None:
    """All columns are screened at once (sorted together); the refusal names the same column
    as checking each through ``value_groups`` would, missing values counted as one value."""
    rng = np.random.default_rng(3)
    for _ in range(2_000):
        n, k = int(rng.integers(0, 16)), int(rng.integers(1, 6))
        numeric = rng.integers(0, int(rng.integers(1, 9)), size=(n, k)).astype(float)
        numeric[rng.random(size=numeric.shape) < 0.1] = np.nan
        names = [f"f{j}" for j in range(k)]
        threshold, levels = int(rng.integers(1, 5)), int(rng.integers(2, 7))
        expected = next(
            (
                name
                for name, column in zip(names, numeric.T, strict=True)
                if (groups := value_groups(column, levels)) is not None
                and groups.sum(axis=0).min() < threshold
            ),
            None,
        )
        if expected is None:
            check_stats_columns(numeric, names, threshold, levels)
        else:
            with pytest.raises(DataError, match=f"'{expected}'"):
                check_stats_columns(numeric, names, threshold, levels)


def test_a_name_for_every_column() -> None:
    with pytest.raises(ValueError, match="1 names for 2 columns"):
        check_stats_columns(np.zeros((3, 2)), ["age"], 11, 10)
