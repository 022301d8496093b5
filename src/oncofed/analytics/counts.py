"""Counts and cross-tabulations: a site's table over fixed levels, suppressed, and the pooled
table, which tells nothing the sites' tables do not.

Rows (and columns) are the variable's fixed levels (:func:`oncofed.wire.analysis.categories`)
and a last level ``"missing"`` for patients without a value (or with one outside the levels),
so every site's table has the same shape and its grand total is the cohort size. A two-way
table holds the row totals as its last column and the column totals as its last row. A one-way
table has the single column ``"n"``, its own row total: one count per row, the total last.

Pooling: a pooled count is the sum of the sites' counts when every site shows its count. When
a site hid it, the pooled count is hidden too: as that site's ``"<T"`` when it is the only
non-zero count (the pooled count is then that site's), otherwise as ``"suppressed"``, which
here claims no bound beyond "at least 1". Every pooled number is a sum of published numbers and
every pooled label follows from the sites' labels, so the pooled table adds no constraint to
the sites' tables. What a reader can work out from everything is then what each site's table
alone allows, and its primary and complementary suppression leave no hidden count pinned; a
hidden pooled count is a sum holding a hidden site count, so it is not pinned either. No
further suppression of the pooled table is needed (nor possible: the orchestrator does not know
the hidden counts).

Under secure aggregation (:mod:`oncofed.analytics.secure`) the orchestrator learns only the sum
of the sites' exact tables and publishes it as a site publishes its own (:func:`published_table`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from oncofed.learning.data import Table
from oncofed.privacy.suppression import cell, margins, suppress_counts
from oncofed.wire.analysis import CountsAnalysis, CountsPart, CountsReport, CountTable, categories
from oncofed.wire.profile import SUPPRESSED, Cell

MISSING = "missing"
ONE_WAY = "n"
"""The single column of a one-way table."""


def levels(name: str) -> list[str]:
    """The rows (or columns) of a table over ``name``: its fixed levels, then ``"missing"``."""
    return [*categories(name), MISSING]


def level_index(values: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The position of each value among ``names``; ``len(names)`` for a missing value or one
    outside them. Numbers (``treatment.X`` flags arrive as 0.0 and 1.0) match the level they
    spell."""
    if values.dtype.kind in "biuf":
        hits = values.astype(np.float64)[:, None] == np.array([float(n) for n in names])
    else:
        hits = values.astype(object)[:, None] == np.array(names, dtype=object)
    return np.where(hits.any(axis=1), hits.argmax(axis=1), len(names))


def _counts(table: Table, name: str) -> tuple[np.ndarray, int]:
    """Each patient's row (or column) in a table over ``name``, and the number of them."""
    names = categories(name)
    return level_index(np.asarray(table[name]), names), len(names) + 1


def published(counts: np.ndarray, threshold: int) -> list[Cell]:
    """``counts`` (1-D or 2-D) with their margins, suppressed at ``threshold``, flattened row by
    row (:func:`oncofed.privacy.suppression.margins`)."""
    full, marks = margins(counts).ravel(), suppress_counts(counts, threshold).ravel()
    return [cell(int(v), int(m), threshold) for v, m in zip(full, marks, strict=True)]


def _rows(cells: list[Cell], width: int) -> list[list[Cell]]:
    return [cells[i : i + width] for i in range(0, len(cells), width)]


def tabulate(analysis: CountsAnalysis, table: Table) -> np.ndarray:
    """The counts of ``analysis`` over a cohort ``table``, without margins: one per row level
    (1-D), or per row and column level (2-D), the ``"missing"`` level last."""
    rows, height = _counts(table, analysis.rows)
    if analysis.columns is None:
        return np.bincount(rows, minlength=height)
    columns, width = _counts(table, analysis.columns)
    return np.bincount(rows * width + columns, minlength=height * width).reshape(height, width)


def published_table(counts: np.ndarray, threshold: int) -> list[list[Cell]]:
    """``counts`` (from :func:`tabulate`, a site's or the pooled ones under secure aggregation)
    with their margins, suppressed at ``threshold``, as rows of cells."""
    return _rows(published(counts, threshold), counts.shape[1] + 1 if counts.ndim == 2 else 1)


def site_counts(analysis: CountsAnalysis, table: Table, threshold: int) -> CountsPart:
    """A site's table of ``analysis`` over its cohort ``table``, with margins, suppressed."""
    return CountsPart(cells=published_table(tabulate(analysis, table), threshold))


def pool(cells: Sequence[Cell]) -> Cell:
    """One pooled count from the sites' published ``cells``: their sum when all are shown; a
    site's ``"<T"`` when it is the only one hidden and the others are 0; else ``"suppressed"``."""
    shown = [c for c in cells if isinstance(c, int)]
    hidden = [c for c in cells if not isinstance(c, int)]
    if not hidden:
        return sum(shown)
    if len(hidden) == 1 and hidden[0] != SUPPRESSED and not any(shown):
        return hidden[0]
    return SUPPRESSED


def pool_lists(lists: Mapping[str, Sequence[Cell]], size: int, what: str) -> list[Cell]:
    """Pool the sites' ``lists`` of ``size`` published counts, entry by entry. ValueError
    naming the site and ``what`` when one has another length."""
    for site, one in lists.items():
        if len(one) != size:
            raise ValueError(f"site {site!r} sent {len(one)} {what}, not {size}")
    return [pool([one[i] for one in lists.values()]) for i in range(size)]


def counts_report(
    analysis: CountsAnalysis, pooled: list[list[Cell]], sites: Mapping[str, list[list[Cell]]]
) -> CountsReport:
    """The report of the pooled table's and each site's published cells."""
    rows = levels(analysis.rows)
    columns = levels(analysis.columns) if analysis.columns else [ONE_WAY]
    return CountsReport(
        variables=[analysis.rows, *([analysis.columns] if analysis.columns else [])],
        pooled=CountTable(rows=rows, columns=columns, cells=pooled),
        sites={site: CountTable(rows=rows, columns=columns, cells=c) for site, c in sites.items()},
    )


def pooled_counts(analysis: CountsAnalysis, parts: Mapping[str, CountsPart]) -> CountsReport:
    """Each site's table as sent, and the pooled table (see the module docstring). ValueError
    when a site's table does not have the analysis' shape."""
    height = len(levels(analysis.rows)) + 1
    width = len(levels(analysis.columns)) + 1 if analysis.columns else 1
    for site, part in parts.items():
        if [len(row) for row in part.cells] != [width] * height:
            raise ValueError(f"site {site!r} sent a table of another shape")
    flat = {site: [c for row in part.cells for c in row] for site, part in parts.items()}
    pooled = _rows(pool_lists(flat, height * width, "counts"), width)
    return counts_report(analysis, pooled, {site: part.cells for site, part in parts.items()})
