"""Small-cell suppression: small counts published as "<T", complementary ones as "suppressed",
and no hidden count can be recovered from what is published."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from oncofed.privacy.suppression import (
    Line,
    Mark,
    margins,
    publish,
    suppress,
    suppress_counts,
    suppress_table,
)

SHOWN, SMALL, SUPPRESSED = Mark.SHOWN, Mark.SMALL, Mark.SUPPRESSED
LIMIT = 10**6
"""No count in these tests comes near it: "no upper bound" for the brute force."""


def _recoverable(
    values: np.ndarray, lines: Sequence[Line], marks: np.ndarray, threshold: int
) -> list[int]:
    """Brute force by integer programming: the hidden entries whose value is the only one
    consistent with the shown counts, the lines, and what each label tells: "<T" is from 1 to
    T - 1, "suppressed" at least T (zeros are shown, and so is every count of T or more that is
    not hidden). A "suppressed" count below T (relabelled because "<T" would give it away) is
    taken as at least 1: a reader cannot tell it from the others, so knows no more."""
    where = np.flatnonzero(marks != SHOWN)
    if where.size == 0:
        return []
    position = {int(entry): p for p, entry in enumerate(where)}
    rows, lowest, highest = [], [], []
    for line in lines:
        row = np.zeros(where.size)
        known = 0
        for entry, sign in [*((c, 1) for c in line.cells), (line.total, -1)]:
            if marks[entry] != SHOWN:
                row[position[entry]] += sign
            else:
                known += sign * int(values[entry])
        if row.any():  # cells - total = 0, or <= 0 for a line that is not exact
            rows.append(row)
            lowest.append(-known if line.exact else -np.inf)
            highest.append(-known)
    constraints = [LinearConstraint(np.array(rows), lowest, highest)] if rows else []
    small, big = marks[where] == SMALL, values[where] >= threshold
    low = np.where(small | ~big, 1, threshold)
    high = np.where(small, threshold - 1, LIMIT)
    box = Bounds(low, high)
    integral = np.ones(where.size)
    found = []
    for p, unknown in enumerate(where):
        extremes = []
        for direction in (1.0, -1.0):
            goal = np.zeros(where.size)
            goal[p] = direction
            result = milp(goal, constraints=constraints, bounds=box, integrality=integral)
            assert result.status == 0, result.message
            extremes.append(round(result.x[p]))
        if extremes[0] == extremes[1]:
            assert extremes[0] == values[unknown]
            found.append(int(unknown))
    return found


def _table_lines(shape: tuple[int, ...]) -> list[Line]:
    """The lines of a table with margins, written out independently of the module."""
    if len(shape) == 1:
        return [Line(tuple(range(shape[0] - 1)), shape[0] - 1)]
    rows, cols = shape
    flat = np.arange(rows * cols).reshape(shape)
    return [Line(tuple(map(int, r[:-1])), int(r[-1])) for r in flat] + [
        Line(tuple(map(int, c[:-1])), int(c[-1])) for c in flat.T
    ]


def _random_counts(rng: np.random.Generator, threshold: int) -> np.ndarray:
    shape = (int(rng.integers(1, 7)),) if rng.random() < 0.4 else tuple(rng.integers(1, 5, 2))
    kinds = rng.choice(3, size=shape, p=[0.2, 0.45, 0.35])
    small = rng.integers(1, threshold, size=shape)
    large = rng.integers(threshold, 4 * threshold, size=shape)
    return np.where(kinds == 0, 0, np.where(kinds == 1, small, large))


def _random_sums(rng: np.random.Generator, threshold: int) -> tuple[np.ndarray, list[Line]]:
    """Sums of sums, as in a data quality report: a total split one to three ways (present +
    missing of several fields), and some parts split again (a field's distribution)."""
    values = [int(rng.integers(1, 6 * threshold))]
    lines: list[Line] = []

    def split(entry: int, ways: int, depth: int) -> None:
        for _ in range(ways):
            size = int(rng.integers(2, 5))
            parts = rng.multinomial(values[entry], rng.dirichlet(np.full(size, 0.6)))
            cells = tuple(range(len(values), len(values) + size))
            values.extend(int(n) for n in parts)
            lines.append(Line(cells, entry))
            for cell in cells:
                if depth < 2 and rng.random() < 0.4:
                    split(cell, 1, depth + 1)

    split(0, int(rng.integers(1, 4)), 0)
    return np.array(values), lines + _random_bounds(rng, values)


def _random_bounds(rng: np.random.Generator, values: list[int]) -> list[Line]:
    """Up to three lines that are not exact, across the sums (one or two cells at most a
    total), such as tumour rows >= patients or deaths >= events."""
    bounds = []
    for _ in range(int(rng.integers(0, 4))):
        entries = rng.choice(len(values), size=min(len(values), 3), replace=False)
        *cells, total = (int(e) for e in entries[: int(rng.integers(2, len(entries) + 1))])
        if len(cells) and sum(values[c] for c in cells) <= values[total]:
            bounds.append(Line(tuple(cells), total, exact=False))
    return bounds


def _check(values: np.ndarray, lines: Sequence[Line], marks: np.ndarray, threshold: int) -> None:
    """Labels tell the truth, and nothing hidden can be recovered."""
    small = (values >= 1) & (values < threshold)
    assert ((marks == SMALL) <= small).all()  # "<T" only on counts from 1 to T - 1
    assert (marks[small] != SHOWN).all() and (marks[values == 0] == SHOWN).all()
    below = values[(marks == SUPPRESSED) & small]  # relabelled: "<T" would tell
    # T - 1 where the lines are sums of sums; with bounds, whole numbers alone may pin others
    assert threshold == 2 or (below == threshold - 1).all() or any(not line.exact for line in lines)
    assert _recoverable(values, lines, marks, threshold) == []


def test_the_checker_finds_what_primary_suppression_alone_leaves_open() -> None:
    line = [Line((0, 1, 2), 3)]
    small = np.array([SMALL, SHOWN, SHOWN, SHOWN])
    assert _recoverable(np.array([6, 20, 30, 56]), line, small, 11) == [0]
    pinned = [Line((1, 2), 0), Line((3, 4), 1)]
    marks = np.array([SHOWN, SUPPRESSED, SMALL, SMALL, SHOWN])  # present must be 19
    assert _recoverable(np.array([20, 19, 1, 1, 18]), pinned, marks, 11) == [1, 2, 3]


def test_the_checker_uses_every_bound_a_label_tells() -> None:
    line = [Line((0, 1), 2)]
    small, hidden = np.array([SMALL, SMALL, SHOWN]), np.array([SMALL, SUPPRESSED, SHOWN])
    # "<11" + "<11" = 20: both are 10
    assert _recoverable(np.array([10, 10, 20]), line, small, 11) == [0, 1]
    # "<11" + "suppressed" = 12: 1 + 11, since "suppressed" is at least 11
    assert _recoverable(np.array([1, 11, 12]), line, hidden, 11) == [0, 1]
    # a relabelled "suppressed" 9 is only at least 1: 1 + 9, 2 + 8 ... remain
    assert _recoverable(np.array([1, 9, 10]), line, hidden, 11) == []


@pytest.mark.parametrize("seed", range(6))
def test_no_hidden_count_of_a_random_table_can_be_recovered(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        threshold = int(rng.integers(2, 12))
        counts = _random_counts(rng, threshold)
        table = margins(counts)
        marks = suppress_counts(counts, threshold)
        assert marks.shape == table.shape
        _check(table.ravel(), _table_lines(table.shape), marks.ravel(), threshold)


@pytest.mark.parametrize("seed", range(4))
def test_no_hidden_count_of_random_sums_of_sums_can_be_recovered(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for _ in range(30):
        threshold = int(rng.integers(2, 12))
        values, lines = _random_sums(rng, threshold)
        _check(values, lines, suppress(values, lines, threshold), threshold)


@pytest.mark.parametrize("seed", range(3))
def test_a_six_is_never_shown_nor_recoverable(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    for _ in range(30):
        counts = _random_counts(rng, 11)
        counts[tuple(int(rng.integers(n)) for n in counts.shape)] = 6
        table, marks = margins(counts), suppress_counts(counts, 11)
        published = np.array(publish(table, marks, 11), dtype=object)
        sixes = table == 6
        assert (published[sixes] == "<11").all()
        recovered = _recoverable(table.ravel(), _table_lines(table.shape), marks.ravel(), 11)
        assert not sixes.ravel()[recovered].any()


def test_a_six_is_hidden_and_the_next_smallest_cell_suppressed() -> None:
    cells, total = suppress_table({"G1": 6, "G2": 20, "G3": 30, "GX": 0}, 56, 11)
    assert cells == {"G1": "<11", "G2": "suppressed", "G3": 30, "GX": 0}
    assert total == 56


def test_a_complementary_count_is_never_published_as_small() -> None:
    # 6 + 20 = 26: "<11" + "<11" would say 26 = two counts below 11, which is false
    values = [6, 20, 26]
    marks = suppress(values, [Line((0, 1), 2)], 11)
    assert publish(values, marks, 11) == ["<11", "suppressed", 26]
    assert marks.tolist() == [SMALL, SUPPRESSED, SHOWN]


def test_a_six_alone_with_zeros_hides_the_total() -> None:
    cells, total = suppress_table({"a": 6, "b": 0}, 6, 11)
    assert (cells, total) == ({"a": "<11", "b": 0}, "<11")


def test_a_line_with_nothing_small_is_shown_whole() -> None:
    assert suppress_table({"a": 11, "b": 0, "c": 40}, 51, 11) == ({"a": 11, "b": 0, "c": 40}, 51)


def test_two_small_cells_protect_each_other() -> None:
    cells, total = suppress_table({"a": 3, "b": 4, "c": 50}, 57, 11)
    assert (cells, total) == ({"a": "<11", "b": "<11", "c": 50}, 57)


def test_two_small_cells_at_the_bound_are_pinned_by_their_total() -> None:
    # "<11" + "<11" = 20 would say 10 + 10: the total is suppressed too
    cells, total = suppress_table({"a": 10, "b": 10, "c": 0}, 20, 11)
    assert (cells, total) == ({"a": "<11", "b": "<11", "c": 0}, "suppressed")


def test_a_suppressed_count_is_pinned_by_its_lower_bound() -> None:
    # 1 + 11 + 30 = 42: with the 30 shown, "<11" + "suppressed" = 12 pins 1 + 11 (>= 11)
    values = [1, 11, 30, 42]
    marks = suppress(values, [Line((0, 1, 2), 3)], 11)
    assert publish(values, marks, 11) == ["<11", "suppressed", "suppressed", 42]


def test_a_hidden_total_hides_a_cell_of_its_line() -> None:
    # 2 + 3 = 5 hides everything; 5 + 30 = 35 must then hide a second entry of that line.
    values = [2, 3, 5, 30, 35]
    marks = suppress(values, [Line((0, 1), 2), Line((2, 3), 4)], 11)
    assert publish(values, marks, 11) == ["<11", "<11", "<11", "suppressed", 35]


def test_a_bridge_between_hidden_blocks_is_protected() -> None:
    counts = np.array([[5, 5, 20, 20], [5, 5, 20, 20], [20, 20, 5, 5], [20, 20, 5, 5]])
    marks = suppress_counts(counts, 11)
    table = margins(counts)
    assert _recoverable(table.ravel(), _table_lines(table.shape), marks.ravel(), 11) == []
    assert (marks[:4, :4] != SHOWN).sum() == 8  # the two blocks of small cells are enough


def test_a_one_pinned_by_the_lower_bound_is_protected() -> None:
    # n = present + missing; present = G1 + G2. Hiding missing (1), present and G1 (1) alone
    # would pin present = 19, since missing >= 1 and G1 >= 1.
    values = [20, 19, 1, 1, 18]
    lines = [Line((1, 2), 0), Line((3, 4), 1)]
    marks = suppress(values, lines, 11)
    assert publish(values, marks, 11) == [20, "suppressed", "<11", "<11", "suppressed"]
    assert _recoverable(np.array(values), lines, marks, 11) == []


def test_small_counts_making_up_a_small_total_alone_are_relabelled() -> None:
    # ten "<11" counts (each >= 1) in a "<11" total (<= 10) would all be pinned: 1 each, 10.
    values = [1] * 10 + [0, 10]
    lines = [Line(tuple(range(11)), 11)]
    marks = suppress(values, lines, 11)
    assert publish(values, marks, 11) == ["<11"] * 10 + [0, "suppressed"]
    assert _recoverable(np.array(values), lines, marks, 11) == []


def test_a_bound_a_reader_knows_is_protected() -> None:
    # ER tests = positive + negative; a wide file has one ER test per patient at most.
    values = [12, 12, 1, 11]  # patients, ER tests, positive, negative
    results = [Line((2, 3), 1)]
    alone = suppress(values, results, 11, protected=[True, False, False, False])
    assert publish(values, alone, 11) == [12, "suppressed", "<11", "suppressed"]
    # "<11" + "suppressed" (>= 11) >= 12, and <= 12 patients: 1 + 11 would be exposed.
    bounded = [*results, Line((1,), 0, exact=False)]
    assert _recoverable(np.array(values), bounded, alone, 11) == [1, 2, 3]
    marks = suppress(values, bounded, 11, protected=[True, False, False, False])
    assert publish(values, marks, 11) == ["suppressed", "suppressed", "<11", "suppressed"]
    assert _recoverable(np.array(values), bounded, marks, 11) == []


def test_a_count_pinned_in_whole_numbers_only_is_protected() -> None:
    values = np.array([3, 8, 11, 4, 15])  # x + 8 = a, a + y = 15, a + x <= 15
    lines = [Line((0, 1), 2), Line((2, 3), 4), Line((2, 0), 4, exact=False)]
    # with a hidden, a is from 11 to 11.5: moving by half a unit, a whole number, 11
    half = np.array([SMALL, SHOWN, SUPPRESSED, SMALL, SHOWN])
    assert _recoverable(values, lines, half, 5) == [0, 2, 3]
    marks = suppress(values, lines, 5)
    assert publish(values, marks, 5) == ["<5", "suppressed", "suppressed", "<5", 15]
    assert _recoverable(values, lines, marks, 5) == []


def test_a_bound_with_room_to_spare_needs_nothing_more() -> None:
    values = [30, 5, 50]  # 30 + "<11" <= 50 leaves the 5 anywhere from 1 to 10
    assert publish(values, suppress(values, [Line((0, 1), 2, exact=False)], 11), 11) == [
        30, "<11", 50
    ]  # fmt: skip


def test_threshold_two_publishes_small_counts_as_suppressed() -> None:
    # "<2" would say 1
    assert publish([1, 5, 6], suppress_counts([1, 5], 2), 2) == ["suppressed", "suppressed", 6]


def test_protected_entries_are_hidden_last() -> None:
    values = [30, 5, 35, 100]  # patients, rejected, rows read = patients + rejected
    lines = [Line((0, 1), 2)]
    assert publish(values, suppress(values, lines, 11), 11) == ["suppressed", "<11", 35, 100]
    kept = suppress(values, lines, 11, protected=[True, False, False, False])
    assert publish(values, kept, 11) == [30, "<11", "suppressed", 100]


def test_a_two_dimensional_table_is_published_with_its_margins() -> None:
    counts = [[1, 18], [20, 30]]
    shown = publish(margins(counts), suppress_counts(counts, 11), 11)
    assert shown == [["<11", "suppressed", 19], ["suppressed", "suppressed", 50], [21, 48, 69]]


def test_threshold_one_hides_nothing() -> None:
    assert (suppress_counts([1, 2, 0], 1) == SHOWN).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: suppress([1, 2], [Line((0,), 1)], 11), "line 0: the cells do not add up"),
        (
            lambda: suppress([3, 2], [Line((0,), 1, exact=False)], 11),
            "line 0: the cells do not add up",
        ),
        (lambda: suppress([-1, 1], [], 11), "must not be negative"),
        (lambda: suppress([1], [], 0), "threshold must be at least 1"),
        (lambda: suppress([1, 1], [Line((0,), 0)], 11), "line 0: entries must be distinct"),
        (lambda: suppress([1], [], 11, protected=[True, False]), "one flag per count"),
        (lambda: suppress_table({"a": 1}, 2, 11), "do not add up"),
        (lambda: margins(np.zeros((2, 2, 2))), "1-D or 2-D, not 3-D"),
    ],
)
def test_bad_input_is_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
