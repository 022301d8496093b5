"""Small-cell suppression of published counts, primary and complementary.

A set of counts is published together with the totals it adds up to: a table with row and
column totals, or the linked lines of a data quality report. Every such relation is a
:class:`Line`: the cells add up to the total, or, for a line that is not ``exact``, to at most
the total (a reader who knows that every patient has a tumour knows tumour rows >= patients).

Primary suppression publishes every count from 1 to T - 1 (T the threshold) as ``"<T"``; 0 is
shown. Complementary suppression then publishes further counts as ``"suppressed"`` until no
hidden count can be worked out. Every count shown is 0 or at least T, so a reader who knows
the lines also knows bounds: a ``"<T"`` count is from 1 to T - 1, a ``"suppressed"`` one is at
least T (it could have been shown). A hidden count is exposed when the lines, the shown counts
and these bounds leave it one possible value. Lines alone: a line with one hidden entry, or in
a 2-D table a hidden cell bridging two groups of hidden cells. With the bounds: ``missing +
present = 20`` with both hidden and ``1 + 18 = present`` with the 1 hidden pin ``present = 19``
(``missing >= 1``); ``"<11" + "<11" = 20`` pins both to 10.

The check is exact for the continuous relaxation at the true counts: the hidden counts can
move together along the null space of their equations, except that a count on one of its
bounds (a ``"<T"`` 1 or T - 1, a ``"suppressed"`` T) may move off it only. A line that is not
exact is an equation with an unpublished slack (the total minus the cells), a hidden count of
at least 0. One linear programme finds the counts on a bound that cannot move at all; with
those held, a count is pinned when every direction left keeps it still. The equations of a
table with margins, and of sums of sums (each count a cell of at most one line), are totally
unimodular, so a count that can move at all can move by a whole unit. Other lines (a data
quality report links sums across fields, and bounds) need not be: with x and y ``"<5"``, ``x +
8 = a``, ``a + y = 15`` and ``a + x <= 15`` leave x from 3 to 3.5, so 3. When the continuous
check finds nothing, integer programmes confirm it (two per hidden count at most, each solution
clearing every count it moves): the check is exact for integer counts.

Each step hides, among the non-zero counts shown on a line holding an exposed count (else on a
line linked to one through hidden counts), a cell before a line's total (``protected`` entries
last), then the one in most exact lines holding a single hidden entry, then the smallest. When
those lines hold none, they hold only hidden counts, slacks and zeros, so scaling all their
counts by a factor a little above 1 is another solution, unless a ``"<T"`` count of T - 1
cannot grow: ten 1s in a ``"<11"`` total of 10 are all pinned, whatever else is hidden. One
such count is then published as ``"suppressed"`` too; a reader cannot tell it from a
complementary count, so knows no more of it than "at least 1", which is what the check assumes
of it. Where whole numbers alone pin a count and no count of T - 1 is left, another ``"<T"``
count of those lines is relabelled the same way, the largest first. Every step hides or
relabels a count, and with all those counts relabelled doubling them all is another solution
in whole numbers, so this ends. ``"<2"`` would say 1: with threshold 2, counts of 1 are
published as ``"suppressed"`` from the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import partial

import numpy as np
import numpy.typing as npt
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from oncofed.wire.profile import SUPPRESSED, Cell

_TOL = 1e-9


class Mark(IntEnum):
    """How a count is published."""

    SHOWN = 0
    SMALL = 1
    """``"<T"``: a count from 1 to T - 1 (primary suppression)."""
    SUPPRESSED = 2
    """``"suppressed"``: hidden to protect small counts (complementary suppression)."""


@dataclass(frozen=True)
class Line:
    """The entries at ``cells`` add up to the entry at ``total`` (indices into the counts), or
    to at most that entry when not ``exact``."""

    cells: tuple[int, ...]
    total: int
    exact: bool = True


def small_label(threshold: int) -> str:
    """How a small count is shown: ``"<11"`` for threshold 11."""
    return f"<{threshold}"


def cell(value: int, mark: int, threshold: int) -> Cell:
    """One count as published, given its :class:`Mark`."""
    if mark == Mark.SMALL:
        return small_label(threshold)
    return SUPPRESSED if mark == Mark.SUPPRESSED else int(value)


def suppress(
    values: Sequence[int] | np.ndarray,
    lines: Sequence[Line],
    threshold: int,
    *,
    protected: Sequence[bool] | np.ndarray | None = None,
) -> np.ndarray:
    """How to publish each of ``values``: a :class:`Mark` per count, primary and complementary
    suppression.

    ``lines`` are the sums published with the counts; ``protected`` entries are hidden for
    complementary suppression only when no other entry will do. ValueError for a negative
    count, a threshold below 1, or a line that does not add up (whose cells exceed its total).
    """
    counts = np.asarray(values, dtype=np.int64)
    if counts.ndim != 1:
        raise ValueError("suppress takes a flat list of counts; use suppress_counts for a table")
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, not {threshold}")
    if (counts < 0).any():
        raise ValueError("counts must not be negative")
    equations, slacks = _equations(counts, lines)
    last_resort = np.zeros(len(counts), bool) if protected is None else np.asarray(protected, bool)
    if last_resort.shape != counts.shape:
        raise ValueError("protected must have one flag per count")
    small = (counts >= 1) & (counts < threshold)
    marks = np.where(small, Mark.SMALL if threshold > 2 else Mark.SUPPRESSED, Mark.SHOWN)
    while (exposed := _exposed(equations, counts, slacks, marks, threshold)).size:
        marks[_next(exposed, lines, counts, marks, last_resort, threshold)] = Mark.SUPPRESSED
    return marks.astype(np.int8)


def _equations(counts: np.ndarray, lines: Sequence[Line]) -> tuple[np.ndarray, np.ndarray]:
    """One row per line: +1 for its cells and for its slack (a column after the counts, one
    per line that is not exact), -1 for its total; and the slacks' values."""
    inexact = [row for row, line in enumerate(lines) if not line.exact]
    matrix = np.zeros((len(lines), len(counts) + len(inexact)), dtype=np.float64)
    slacks = np.zeros(len(inexact), dtype=np.int64)
    for row, line in enumerate(lines):
        entries = (*line.cells, line.total)
        if len(set(entries)) != len(entries) or not all(0 <= i < len(counts) for i in entries):
            raise ValueError(f"line {row}: entries must be distinct indices into the counts")
        matrix[row, list(line.cells)] = 1.0
        matrix[row, line.total] = -1.0
        gap = counts[line.total] - counts[list(line.cells)].sum()
        if gap < 0 or (gap and line.exact):
            raise ValueError(f"line {row}: the cells do not add up to the total")
        if not line.exact:
            slack = inexact.index(row)
            matrix[row, len(counts) + slack] = 1.0
            slacks[slack] = gap
    return matrix, slacks


def _bounds(counts: np.ndarray, marks: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """What a reader knows of each count (lowest, highest; inf for no upper bound): a shown
    count exactly; ``"<T"`` from 1 to T - 1; ``"suppressed"`` at least T, or at least 1 when it
    is smaller (a small count relabelled, which a reader cannot tell from a complementary one).
    """
    low = counts.astype(np.float64)
    high = low.copy()
    small, hidden = marks == Mark.SMALL, marks == Mark.SUPPRESSED
    low[small], high[small] = 1.0, threshold - 1.0
    low[hidden] = np.where(counts[hidden] >= threshold, threshold, 1.0)
    high[hidden] = np.inf
    return low, high


def _exposed(
    equations: np.ndarray, counts: np.ndarray, slacks: np.ndarray, marks: np.ndarray, threshold: int
) -> np.ndarray:
    """The hidden entries whose values follow from the shown counts, the lines and the bounds
    (the slacks, never published, are hidden counts of at least 0): by the continuous check,
    and when it finds none, by integer programming."""
    hidden = np.flatnonzero(marks != Mark.SHOWN)
    if hidden.size == 0:
        return hidden
    where = np.concatenate([hidden, len(counts) + np.arange(len(slacks))])
    values = np.concatenate([counts[hidden], slacks])
    sub = equations[:, where]
    sub = sub[np.abs(sub).sum(axis=1) > 0]
    low, high = _bounds(counts[hidden], marks[hidden], threshold)
    low = np.concatenate([low, np.zeros(len(slacks))])
    high = np.concatenate([high, np.full(len(slacks), np.inf)])
    held = _held(sub, values == low, values == high)
    fixed = held.copy()
    fixed[~held] = _fixed(sub[:, ~held])
    if not fixed[: hidden.size].any():
        fixed = _integer_fixed(sub, values, low, high, hidden.size)
    return hidden[fixed[: hidden.size]]


def _integer_fixed(
    equations: np.ndarray, values: np.ndarray, low: np.ndarray, high: np.ndarray, checked: int
) -> np.ndarray:
    """Which of the first ``checked`` entries no integer solution of ``equations`` within the
    bounds moves off its value: the lines of a report need not be totally unimodular, so an
    entry free to move by half a unit may still be pinned. Two integer programmes per entry at
    most (up, down), each solution showing every entry it moves; a move up is capped far above
    any count."""
    size = len(values)
    room = values.sum() + size
    lower, upper = low - values, np.minimum(high - values, room)
    moved = np.arange(size) >= checked
    for group in _groups(equations):
        rows = equations[np.ix_(np.abs(equations[:, group]).sum(axis=1) > 0, group)]
        rules = [LinearConstraint(rows, 0.0, 0.0)] if len(rows) else []
        for i in range(len(group)):
            for sign in (-1.0, 1.0):
                if not moved[group[i]]:
                    goal = np.zeros(len(group))
                    goal[i] = sign
                    result = milp(
                        goal,
                        constraints=rules,
                        bounds=Bounds(lower[group], upper[group]),
                        integrality=np.ones(len(group)),
                    )
                    if result.status != 0:  # d = 0 is feasible and the moves bounded
                        raise ArithmeticError(f"suppression check failed: {result.message}")
                    moved[group] |= np.round(result.x) != 0
    return ~moved


def _held(equations: np.ndarray, rising: np.ndarray, falling: np.ndarray) -> np.ndarray:
    """Which entries on a bound (``rising``: may only rise, ``falling``: may only fall) no
    direction in the null space of ``equations`` that respects those bounds can move.

    One LP over the direction ``d`` and a progress ``t`` in [0, 1] per bounded entry, ``t <=
    d`` (rising) or ``t <= -d`` (falling), maximising the sum of ``t``: the directions form a
    cone, so the sum of the directions moving each movable entry moves them all, and every
    movable entry reaches ``t = 1``.
    """
    size = len(rising)
    bounded = np.flatnonzero(rising | falling)
    if bounded.size == 0:
        return np.zeros(size, bool)
    k = bounded.size
    sign = np.where(rising[bounded], 1.0, -1.0)
    progress = np.zeros((k, size + k))
    progress[np.arange(k), bounded] = -sign
    progress[np.arange(k), size + np.arange(k)] = 1.0
    directions = [
        (0.0 if up else None, 0.0 if down else None)
        for up, down in zip(rising, falling, strict=True)
    ]
    result = linprog(
        np.concatenate([np.zeros(size), -np.ones(k)]),
        A_ub=progress,
        b_ub=np.zeros(k),
        A_eq=np.hstack([equations, np.zeros((len(equations), k))]) if len(equations) else None,
        b_eq=np.zeros(len(equations)) if len(equations) else None,
        bounds=[*directions, *[(0.0, 1.0)] * k],
    )
    if result.status != 0:  # d = 0, t = 0 is always feasible and t is bounded
        raise ArithmeticError(f"suppression check failed: {result.message}")
    held = np.zeros(size, bool)
    held[bounded] = result.x[size:] < 0.5
    return held


def _groups(matrix: np.ndarray) -> list[np.ndarray]:
    """The entries (columns) of ``matrix`` in groups linked by its rows."""
    linked = (np.abs(matrix) > 0).astype(np.int64)
    count, group = connected_components(csr_matrix(linked.T @ linked), directed=False)
    return [np.flatnonzero(group == g) for g in range(count)]


def _fixed(matrix: np.ndarray) -> np.ndarray:
    """Which entries (columns) every vector of the null space of ``matrix`` keeps at 0, found
    for each group of linked entries on its own."""
    fixed = np.zeros(matrix.shape[1], bool)
    for columns in _groups(matrix):
        block = matrix[np.ix_(np.abs(matrix[:, columns]).sum(axis=1) > 0, columns)]
        fixed[columns] = np.linalg.norm(_null_space(block), axis=0) < _TOL
    return fixed


def _null_space(matrix: np.ndarray) -> np.ndarray:
    """A basis of the null space of ``matrix``, one vector per row."""
    if matrix.shape[0] == 0:
        return np.eye(matrix.shape[1])
    _, singular, vt = np.linalg.svd(matrix)
    rank = int((singular > _TOL).sum())
    return vt[rank:]


def _next(
    exposed: np.ndarray,
    lines: Sequence[Line],
    counts: np.ndarray,
    marks: np.ndarray,
    protected: np.ndarray,
    threshold: int,
) -> int:
    """The entry to publish as ``"suppressed"`` next: a non-zero shown entry of a line holding
    an ``exposed`` one, else of a line linked to one through hidden entries (a cell before the
    line's total, then the one in most exact lines holding a single hidden entry, then the
    smallest); else a ``"<T"`` entry of T - 1 in those lines, else any ``"<T"`` entry there,
    the largest first (a line holding an exposed one first, an exposed entry before the
    others, ``protected`` ones last)."""
    entries = [(*line.cells, line.total) for line in lines]
    hidden = marks != Mark.SHOWN
    pinned = set(exposed.tolist())
    near = [entry for entry in entries if pinned.intersection(entry)]
    single = [
        i
        for line, entry in zip(lines, entries, strict=True)
        if line.exact and hidden[list(entry)].sum() == 1
        for i in entry
    ]

    def best(chosen: Sequence[tuple[int, ...]]) -> int | None:
        options = [
            (bool(protected[i]), i == entry[-1], -single.count(i), int(counts[i]), i)
            for entry in chosen
            for i in entry
            if not hidden[i] and counts[i] > 0
        ]
        return min(options)[-1] if options else None

    def small(chosen: Sequence[tuple[int, ...]], least: int) -> int | None:
        options = [
            (bool(protected[i]), i not in pinned, -int(counts[i]), i)
            for entry in chosen
            for i in entry
            if marks[i] == Mark.SMALL and counts[i] >= least
        ]
        return min(options)[-1] if options else None

    linked = _linked(near, entries, hidden)
    for pick in (best, partial(small, least=threshold - 1), partial(small, least=1)):
        for chosen in (near, linked):
            if (found := pick(chosen)) is not None:
                return found
    # cannot happen: doubling every linked hidden count would be another solution
    raise AssertionError("complementary suppression found nothing to hide")


def _linked(
    near: list[tuple[int, ...]], entries: list[tuple[int, ...]], hidden: np.ndarray
) -> list[tuple[int, ...]]:
    """``near`` and every line linked to them through hidden entries."""
    linked = list(near)
    reached = {i for entry in near for i in entry if hidden[i]}
    while more := [e for e in entries if e not in linked and reached.intersection(e)]:
        linked += more
        reached.update(i for entry in more for i in entry if hidden[i])
    return linked


def margins(counts: npt.ArrayLike) -> np.ndarray:
    """``counts`` (1-D or 2-D) with its totals appended: the total last for a list; a column of
    row totals, a row of column totals and the grand total for a table."""
    table = np.asarray(counts, dtype=np.int64)
    if table.ndim == 1:
        return np.append(table, table.sum())
    if table.ndim == 2:
        with_rows = np.hstack([table, table.sum(axis=1, keepdims=True)])
        return np.vstack([with_rows, with_rows.sum(axis=0, keepdims=True)])
    raise ValueError(f"counts must be 1-D or 2-D, not {table.ndim}-D")


def _table_lines(shape: tuple[int, ...]) -> list[Line]:
    """The lines of a table with margins of ``shape`` (flat, row-major indices)."""
    if len(shape) == 1:
        return [Line(tuple(range(shape[0] - 1)), shape[0] - 1)]
    index = np.arange(shape[0] * shape[1]).reshape(shape)
    rows = [Line(tuple(int(i) for i in row[:-1]), int(row[-1])) for row in index]
    columns = [Line(tuple(int(i) for i in col[:-1]), int(col[-1])) for col in index.T]
    return rows + columns


def suppress_counts(counts: npt.ArrayLike, threshold: int) -> np.ndarray:
    """The marks of ``margins(counts)``: a 1-D list with its total, or a 2-D table with row,
    column and grand totals, all published together."""
    table = margins(counts)
    marks = suppress(table.ravel(), _table_lines(table.shape), threshold)
    return marks.reshape(table.shape)


def publish(values: npt.ArrayLike, marks: npt.ArrayLike, threshold: int) -> list[object]:
    """``values`` as published (nested lists for a table): the count, ``"<threshold"`` or
    ``"suppressed"``, as ``marks`` say."""
    kinds = np.asarray(marks)
    shown = np.asarray(values, dtype=np.int64).astype(object)
    shown[kinds == Mark.SMALL] = small_label(threshold)
    shown[kinds == Mark.SUPPRESSED] = SUPPRESSED
    result: list[object] = shown.tolist()
    return result


def suppress_table(
    cells: Mapping[str, int], total: int, threshold: int
) -> tuple[dict[str, Cell], Cell]:
    """One line of named counts and its total, as published. ValueError when they do not add
    up."""
    names = list(cells)
    values = [*cells.values(), total]
    marks = suppress(values, [Line(tuple(range(len(names))), len(names))], threshold)
    shown = {name: cell(values[i], int(marks[i]), threshold) for i, name in enumerate(names)}
    return shown, cell(total, int(marks[-1]), threshold)
