"""Counts and cross-tabulations: hand-counted tables, exact counts with threshold 1, and a
planted 6 that no output shows and nothing published lets a reader work out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from oncofed.analytics.counts import level_index, pool, pooled_counts, site_counts
from oncofed.privacy.suppression import margins
from oncofed.wire.analysis import CountsAnalysis, CountsPart
from oncofed.wire.profile import Cell

GRADES = [*("G1", "G2", "G3", "G4", "GX"), None]
RESULTS = [*("positive", "negative", "equivocal", "unknown"), None]
CROSS = CountsAnalysis(rows="grade", columns="biomarker.ER")
ONE_WAY = CountsAnalysis(rows="grade")
LIMIT = 10**6


def _patients(counts: np.ndarray) -> dict[str, np.ndarray]:
    """A cohort with ``counts`` patients per grade (and ER result): the last level is missing."""
    table = counts.reshape(len(GRADES), -1)
    cell = np.repeat(np.arange(table.size), table.ravel())
    width = table.shape[1]
    return {
        "grade": np.array(GRADES, dtype=object)[cell // width],
        "biomarker.ER": np.array(RESULTS, dtype=object)[cell % width],
    }


def test_levels_match_strings_and_flags() -> None:
    grades = np.array(["G2", None, "G1", "G9"], dtype=object)
    assert level_index(grades, ["G1", "G2"]).tolist() == [1, 2, 0, 2]
    flags = np.array([1.0, 0.0, np.nan])
    assert level_index(flags, ["0", "1"]).tolist() == [1, 0, 2]


def test_a_one_way_table_counts_by_hand() -> None:
    table = {"grade": np.array(["G1", "G2", "G2", None, "G3", "G2"], dtype=object)}
    exact = site_counts(ONE_WAY, table, threshold=1)
    assert exact.cells == [[1], [3], [1], [0], [0], [1], [6]]
    hidden = site_counts(ONE_WAY, table, threshold=11).cells
    assert [c for [c] in hidden] == ["<11", "<11", "<11", 0, 0, "<11", "<11"]


def test_a_two_way_table_counts_by_hand_with_flags_as_columns() -> None:
    analysis = CountsAnalysis(rows="grade", columns="treatment.surgery")
    table = {
        "grade": np.array(["G1", "G1", "G3", "GX", None], dtype=object),
        "treatment.surgery": np.array([1.0, 0.0, 1.0, 1.0, 0.0]),
    }
    cells = site_counts(analysis, table, threshold=1).cells
    #            "0" "1" missing total
    assert cells == [
        [1, 1, 0, 2],  # G1
        [0, 0, 0, 0],  # G2
        [0, 1, 0, 1],  # G3
        [0, 0, 0, 0],  # G4
        [0, 1, 0, 1],  # GX
        [1, 0, 0, 1],  # missing
        [2, 3, 0, 5],
    ]


def test_large_counts_are_shown_and_small_ones_protected() -> None:
    counts = np.zeros((6, 5), dtype=np.int64)
    counts[0, :2] = [40, 30]
    counts[1, :2] = [6, 25]
    counts[2, :2] = [20, 20]
    cells = site_counts(CROSS, _patients(counts), threshold=11).cells
    assert cells[1][0] == "<11"
    assert cells[0] == [40, 30, 0, 0, 0, 70]
    assert cells[1][1] == "suppressed" and cells[2][:2] == ["suppressed", "suppressed"]
    assert cells[-1][-1] == 141


def test_threshold_one_pools_exact_sums() -> None:
    rng = np.random.default_rng(7)
    tables = [rng.integers(0, 9, size=(6, 5)) for _ in range(3)]
    parts = {f"s{i}": site_counts(CROSS, _patients(t), 1) for i, t in enumerate(tables)}
    report = pooled_counts(CROSS, parts)
    assert report.pooled.cells == margins(sum(tables)).tolist()
    assert report.sites["s1"].cells == margins(tables[1]).tolist()
    assert report.variables == ["grade", "biomarker.ER"]
    assert report.pooled.rows == ["G1", "G2", "G3", "G4", "GX", "missing"]
    assert report.pooled.columns == ["positive", "negative", "equivocal", "unknown", "missing"]
    one_way = pooled_counts(ONE_WAY, {"a": site_counts(ONE_WAY, _patients(tables[0]), 1)})
    assert one_way.pooled.columns == ["n"]
    assert one_way.pooled.cells == [[int(n)] for n in margins(tables[0].sum(axis=1))]


def test_a_pooled_count_is_shown_only_when_every_site_shows_it() -> None:
    assert pool([12, 0, 30]) == 42
    assert pool(["<11", 0, 0]) == "<11"  # that site's count, 1 to 10, whatever it is
    assert pool(["<5", 0, 20]) == "suppressed"
    assert pool(["<11", "<11", 0]) == "suppressed"
    assert pool(["suppressed", 0]) == "suppressed"
    assert pool([]) == 0


def test_a_site_table_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="site 'b' sent a table of another shape"):
        pooled_counts(ONE_WAY, {"b": CountsPart(cells=[[1], [2]])})


def _lines(shape: tuple[int, int]) -> list[tuple[list[int], int]]:
    """Cells and total of every row and column of a table with margins (flat indices)."""
    flat = np.arange(shape[0] * shape[1]).reshape(shape)
    if shape[1] == 1:
        return [(flat[:-1, 0].tolist(), int(flat[-1, 0]))]
    return [(list(r[:-1]), int(r[-1])) for r in flat] + [(list(c[:-1]), int(c[-1])) for c in flat.T]


def _pinned(
    truths: list[np.ndarray], sent: list[list[Cell]], pooled: Sequence[Cell], threshold: int
) -> list[tuple[str, int]]:
    """Brute force by integer programming over everything published: the sites' tables with
    their lines and labels ("<T": 1 to T - 1; "suppressed": at least T, or at least 1 for a
    count below T) and the pooled table (a shown count is the sum of the sites' counts, "<T"
    that sum from 1 to T - 1, "suppressed" at least 1). Returns the hidden site counts
    ``("s<i>", entry)`` and pooled counts ``("pooled", entry)`` that only one value fits."""
    size = truths[0].size
    hidden = [
        (s, i) for s, cells in enumerate(sent) for i in range(size) if isinstance(cells[i], str)
    ]
    where = {key: p for p, key in enumerate(hidden)}
    rows, low, high = [], [], []

    def add(entries: list[tuple[int, int, int]], lo: float, hi: float) -> None:
        row, known = np.zeros(len(hidden)), 0
        for s, i, sign in entries:
            if (s, i) in where:
                row[where[s, i]] += sign
            else:
                known += sign * int(truths[s][i])
        if row.any():
            rows.append(row)
            low.append(lo - known)
            high.append(hi - known)

    shape = (len(GRADES) + 1, size // (len(GRADES) + 1))
    for s in range(len(sent)):
        for cells, total in _lines(shape):
            add([(s, c, 1) for c in cells] + [(s, total, -1)], 0, 0)
    for i, value in enumerate(pooled):
        terms = [(s, i, 1) for s in range(len(sent))]
        if isinstance(value, int):
            add(terms, value, value)
        else:
            add(terms, 1, threshold - 1 if value.startswith("<") else LIMIT)
    truth = np.array([truths[s][i] for s, i in hidden])
    small = np.array([sent[s][i] != "suppressed" for s, i in hidden])
    bounds = Bounds(
        np.where(small | (truth < threshold), 1, threshold), np.where(small, threshold - 1, LIMIT)
    )
    constraints = [LinearConstraint(np.array(rows), low, high)] if rows else []
    goals = [(f"s{s}", i, np.eye(len(hidden))[where[s, i]]) for s, i in hidden]
    goals += [
        ("pooled", i, np.array([1.0 if key[1] == i else 0.0 for key in hidden]))
        for i, value in enumerate(pooled)
        if not isinstance(value, int)
    ]
    found = []
    for name, i, goal in goals:
        ends = []
        for sign in (1.0, -1.0):
            result = milp(
                sign * goal,
                constraints=constraints,
                bounds=bounds,
                integrality=np.ones(len(hidden)),
            )
            assert result.status == 0, result.message
            ends.append(round(float(goal @ result.x)))
        if ends[0] == ends[1]:
            found.append((name, i))
    return found


@pytest.mark.parametrize("seed", range(4))
def test_a_planted_six_is_never_shown_nor_recoverable(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for trial in range(3):
        analysis = ONE_WAY if trial == 0 else CROSS
        width = 1 if analysis is ONE_WAY else len(RESULTS)
        tables = []
        for _ in range(int(rng.integers(2, 4))):
            kinds = rng.choice(3, size=(len(GRADES), width), p=[0.4, 0.25, 0.35])
            small, large = rng.integers(1, 11, kinds.shape), rng.integers(11, 60, kinds.shape)
            tables.append(np.where(kinds == 0, 0, np.where(kinds == 1, small, large)))
        planted = (int(rng.integers(len(GRADES))), int(rng.integers(width)))
        tables[0][planted] = 6
        parts = {f"s{i}": site_counts(analysis, _patients(t), 11) for i, t in enumerate(tables)}
        report = pooled_counts(analysis, parts)
        sent = [[c for row in report.sites[f"s{i}"].cells for c in row] for i in range(len(tables))]
        pooled = [c for row in report.pooled.cells for c in row]
        truths = [margins(t if width > 1 else t[:, 0]).ravel() for t in tables]
        six = planted[0] * (width + (width > 1)) + planted[1]
        assert sent[0][six] == "<11" and not isinstance(pooled[six], int)
        for cells, truth in zip(sent, truths, strict=True):
            shown = [c for c in cells if isinstance(c, int)]
            assert all(c == 0 or c >= 11 for c in shown)
            assert all(c == t for c, t in zip(cells, truth, strict=True) if isinstance(c, int))
        assert all(c == 0 or c >= 11 for c in pooled if isinstance(c, int))
        assert _pinned(truths, sent, pooled, 11) == []


def test_the_checker_finds_what_a_naive_pooled_table_would_give_away() -> None:
    one, other = np.zeros((len(GRADES), 1), np.int64), np.zeros((len(GRADES), 1), np.int64)
    one[:3, 0], other[:3, 0] = [6, 20, 30], [15, 12, 40]
    parts = {f"s{i}": site_counts(ONE_WAY, _patients(t), 11) for i, t in enumerate((one, other))}
    sent = [[row[0] for row in part.cells] for part in parts.values()]
    assert sent[0][:3] == ["<11", "suppressed", 30]
    truths = [margins(one[:, 0]), margins(other[:, 0])]
    naive = [int(n) for n in truths[0] + truths[1]]  # exact sums: the 6 is 21 - 15
    assert ("s0", 0) in _pinned(truths, sent, naive, 11)
    pooled = [row[0] for row in pooled_counts(ONE_WAY, parts).pooled.cells]
    assert pooled[:3] == ["suppressed", "suppressed", 70]
    assert _pinned(truths, sent, pooled, 11) == []
