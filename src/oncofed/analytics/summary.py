"""Summary statistics of a numeric variable: a site's count, sums and histogram, and the pooled
count, mean, standard deviation and quantiles.

The histogram has fixed edges e_0 < ... < e_m shared by every site: values below e_0, each bin
[e_i, e_i+1) (the last one closed, [e_m-1, e_m]), values above e_m, and last the patients
without a value (missing). Its counts are suppressed (:mod:`oncofed.privacy.suppression`)
together with n, the count of values (the cells before the missing one add up to it), and the
cohort size (n and the missing count add up to it), which a reader may know from any other
analysis: so neither a small missing count nor a small n follows from the cohort size. The sum
and the sum of squares are sent only when n and the missing count are both shown (n is shown
with the missing count hidden only when it is 0).

Mean and sample standard deviation (ddof 1) are exact, from the sums. Quantiles are grouped-data
quantiles: with N values of which C_k lie below bin k and c_k in it, quantile p lies in the bin
with C_k < pN <= C_k + c_k, at e + (pN - C_k) / c_k * width (the bin's values taken as spread
evenly over it). A quantile is None when it falls in an open bin, or when the counts it needs
are hidden: the bin's own, and those below it (or n and those above it).

Under secure aggregation (:mod:`oncofed.analytics.secure`) the sites' exact histograms and sums
are added up and the pooled ones suppressed as a site's (:func:`published_summary`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from oncofed.analytics.counts import pool, pool_lists
from oncofed.privacy.suppression import Line, cell, suppress
from oncofed.wire.analysis import Summary, SummaryAnalysis, SummaryPart, SummaryReport
from oncofed.wire.profile import Cell


def histogram(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts of ``values`` below the first edge, in each bin, and above the last edge."""
    bounds = np.asarray(edges, dtype=np.float64)
    where = np.searchsorted(bounds, values, side="right")
    where[values == bounds[-1]] = len(bounds) - 1  # the last bin is closed
    return np.bincount(where, minlength=len(bounds) + 1)


def summary_cells(analysis: SummaryAnalysis, values: np.ndarray) -> np.ndarray:
    """The histogram of a cohort's ``values`` (NaN when missing) with the missing count last."""
    complete = values[np.isfinite(values)]
    return np.append(histogram(complete, analysis.bins), len(values) - len(complete))


def published_summary(
    cells: np.ndarray, total: float, squares: float, threshold: int, noisy: bool = False
) -> SummaryPart:
    """The histogram ``cells`` (:func:`summary_cells`) with the count, sum and sum of squares
    of the values, suppressed at ``threshold`` (see the module docstring): a site's, or the
    pooled ones under secure aggregation. ``noisy``: differentially private sums, shown with
    n whether the missing count is (a noisy count near 0 would otherwise hide them)."""
    missing = len(cells) - 1
    n = int(cells[:missing].sum())
    entries = [*(int(c) for c in cells), n, n + int(cells[missing])]  # cells, n, cohort size
    lines = [Line(tuple(range(missing)), missing + 1), Line((missing + 1, missing), missing + 2)]
    marks = suppress(entries, lines, threshold)
    *counts, shown_n, _ = [cell(v, int(m), threshold) for v, m in zip(entries, marks, strict=True)]
    shown = isinstance(shown_n, int) and (noisy or isinstance(counts[missing], int))
    return SummaryPart(
        n=shown_n,
        total=total if shown else None,
        total_squares=squares if shown else None,
        histogram=counts,
    )


def site_summary(analysis: SummaryAnalysis, values: np.ndarray, threshold: int) -> SummaryPart:
    """A site's part over its cohort's ``values`` (NaN when missing; the cohort size is their
    number), suppressed at ``threshold``."""
    complete = values[np.isfinite(values)]
    return published_summary(
        summary_cells(analysis, values),
        float(complete.sum()),
        float((complete**2).sum()),
        threshold,
    )


def quantile(histogram: Sequence[Cell], n: Cell, edges: Sequence[float], p: float) -> float | None:
    """Quantile ``p`` from a published histogram with its total ``n`` (see the module
    docstring)."""
    if not isinstance(n, int):
        return None
    counts = np.array([c if isinstance(c, int) else np.nan for c in histogram], dtype=np.float64)
    from_below = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    from_above = n - np.cumsum(counts[::-1])[::-1]
    below = np.where(np.isnan(from_below), from_above, from_below)
    target = p * n
    inside = np.flatnonzero((below < target) & (target <= below + counts))
    if inside.size == 0 or inside[0] in (0, len(counts) - 1):  # hidden, or an open bin
        return None
    k = int(inside[0])
    low, high = edges[k - 1], edges[k]
    return float(low + (target - below[k]) / counts[k] * (high - low))


def _sum(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.fsum(known) if len(known) == len(values) else None


def summarise(
    analysis: SummaryAnalysis,
    n: Cell,
    total: float | None,
    squares: float | None,
    counts: list[Cell],
) -> Summary:
    """Count, mean, sample standard deviation, quantiles and histogram (the missing count last)
    from a site's (or the pooled) count, sums and histogram."""
    mean = sd = None
    if isinstance(n, int) and n > 0 and total is not None:
        mean = total / n
        if n > 1 and squares is not None:
            sd = math.sqrt(max(squares - total * mean, 0.0) / (n - 1))
    return Summary(
        n=n,
        mean=mean,
        sd=sd,
        quantiles={str(p): quantile(counts[:-1], n, analysis.bins, p) for p in analysis.quantiles},
        histogram=counts,
    )


def summary_of(analysis: SummaryAnalysis, part: SummaryPart) -> Summary:
    """The summary of one published part (a site's, or the pooled one)."""
    return summarise(analysis, part.n, part.total, part.total_squares, part.histogram)


def pooled_summary(analysis: SummaryAnalysis, parts: Mapping[str, SummaryPart]) -> SummaryReport:
    """Each site's summary, and the pooled one: exact mean and standard deviation when every
    site shows its count, quantiles from the pooled histogram. ValueError when a site's
    histogram has another number of bins."""
    histograms = {site: part.histogram for site, part in parts.items()}
    cells = len(analysis.bins) + 2  # below, the bins, above, missing
    pooled = summarise(
        analysis,
        pool([part.n for part in parts.values()]),
        _sum([part.total for part in parts.values()]),
        _sum([part.total_squares for part in parts.values()]),
        pool_lists(histograms, cells, "histogram counts"),
    )
    return SummaryReport(
        variable=analysis.variable,
        bins=analysis.bins,
        pooled=pooled,
        sites={site: summary_of(analysis, part) for site, part in parts.items()},
    )
