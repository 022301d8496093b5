"""A site's contribution to a securely aggregated analysis, and its layout.

Under secure aggregation (``privacy.secure_aggregation`` in the spec) each site's numbers are
masked (:mod:`oncofed.privacy.secagg`) so that the orchestrator learns only their sum over the
sites (Bonawitz et al. 2017). A site therefore sends its exact contribution, with no
suppression and no carrying, and disclosure control applies to the pooled numbers
(:mod:`oncofed.analytics.secure_close`): a site of any size counts, and the pooled result is
exact. The contribution is named arrays whose layout (:func:`secure_layout`) follows from the
spec alone, never from a site's data, so its shape says nothing either; every layout holds
``sites``, where each site puts 1.

Segments (``count``: exact integers; ``real``: fixed point, sums exact to about 1e-28), with
L the levels of a variable plus ``missing``, G the groups, K = horizon_days // grid_days + 1
grid bins, p the terms and k the groups the spec knows a regression's design to describe
(:func:`oncofed.analytics.design.known_groups`):

- counts: ``table`` count (L_rows) or (L_rows, L_columns);
- summary: ``histogram`` count (edges + 2: below, the bins, above, missing), ``total`` and
  ``total_squares`` real;
- Kaplan-Meier: ``at_risk`` and ``events`` count (G, K), ``missing`` (a usable time, no group
  level) and ``unusable`` (no usable time or event) count;
- regressions: ``n`` and ``events`` count, ``members`` and ``member_events`` count (k) and
  ``both`` count (k, k) (the pooled disclosure check); stratified Cox and logistic add
  ``loglik`` real, ``gradient`` real (p) and ``hessian`` real (p, p) at the pooled
  coefficients; the unstratified Cox model adds its risk-set sums of exp(x'b - offset)
  (:func:`oncofed.analytics.cox.risk_set_sums`): ``bin_events`` count (K), ``s0`` real (K),
  ``s1`` real (K, p), ``s2`` real (K, p (p + 1) / 2: the upper triangle, row by row) and
  ``event_x`` real (p).

Under differential privacy (not for Cox models) every segment but ``sites`` is real, since
noisy counts may be negative: a summary sends the histogram and the sums of the values scaled
to [-1, 1] (``scaled_total``, ``scaled_squares``), a Kaplan-Meier round ``leaving`` (the
patients leaving the risk set in each bin) and ``events`` only, a logistic round ``n``,
``events``, ``gradient`` and ``hessian`` in scaled columns (:mod:`oncofed.analytics.private`).

A regression's columns the spec cannot know to be discrete (a numeric field, an ``ext.*``
column) keep the per-site check (:func:`oncofed.analytics.design.check_cells`): a site whose
such column takes a few values, one of them held by a small group, declines.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from oncofed.analytics.counts import levels, tabulate
from oncofed.analytics.cox import risk_set_sums
from oncofed.analytics.design import (
    Cells,
    check_cells,
    derivatives,
    design,
    known_groups,
    known_indicators,
    term_names,
)
from oncofed.analytics.private import regression_values, summary_values
from oncofed.analytics.summary import summary_cells
from oncofed.analytics.survival import group_counts, group_names
from oncofed.learning.data import DataError
from oncofed.privacy.secagg.layout import SITES, Segment, count, real
from oncofed.wire.analysis import (
    AnalysisParams,
    AnalysisSpec,
    CountsAnalysis,
    CoxAnalysis,
    KaplanMeierAnalysis,
    LogisticAnalysis,
    Regression,
    SummaryAnalysis,
)

MAX_NUMBERS = 1 << 22
"""Most numbers a site's secure message may hold (128 MiB in the wide ring)."""


def _regression_layout(analysis: Regression, private: bool) -> dict[str, Segment]:
    p, k = len(term_names(analysis)), len(known_groups(analysis))
    layout = {"n": count(), "events": count()}
    if private:  # the noisy derivatives only (oncofed.analytics.private)
        return layout | {"gradient": real(p), "hessian": real(p, p)}
    if k:
        layout |= {"members": count(k), "member_events": count(k), "both": count(k, k)}
    if isinstance(analysis, CoxAnalysis) and not analysis.stratified:
        bins = analysis.grid_bins
        return layout | {
            "bin_events": count(bins),
            "s0": real(bins),
            "s1": real(bins, p),
            "s2": real(bins, p * (p + 1) // 2),
            "event_x": real(p),
        }
    return layout | {"loglik": real(), "gradient": real(p), "hessian": real(p, p)}


def secure_layout(spec: AnalysisSpec) -> dict[str, Segment]:
    """The segments every site of ``spec`` sends, in order (see the module docstring).
    ValueError when they would hold more than :data:`MAX_NUMBERS` numbers."""
    a, dp = spec.analysis, spec.privacy.differential_privacy
    layout: dict[str, Segment]
    if isinstance(a, CountsAnalysis):
        shape = (len(levels(a.rows)), *([len(levels(a.columns))] if a.columns else []))
        layout = {"table": count(*shape)}
    elif isinstance(a, SummaryAnalysis):
        sums = ("total", "total_squares") if dp is None else ("scaled_total", "scaled_squares")
        layout = {"histogram": count(len(a.bins) + 2)} | {name: real() for name in sums}
    elif isinstance(a, KaplanMeierAnalysis):
        shape = (len(group_names(a)), a.grid_bins)
        layout = {name: count(*shape[:ndim]) for name, ndim in _survival_segments(spec).items()}
    else:
        layout = _regression_layout(a, dp is not None)
    if dp is not None:  # noisy counts: signed, so reals
        layout = {name: real(*segment.shape) for name, segment in layout.items()}
    numbers = sum(segment.size for segment in layout.values())
    if numbers > MAX_NUMBERS:
        raise ValueError(
            f"a secure {a.type} analysis would send {numbers:,} numbers per site, more than "
            f"{MAX_NUMBERS:,}: choose a coarser grid_days, a shorter horizon_days or fewer "
            "covariates"
        )
    return {SITES: count()} | layout


def _survival_segments(spec: AnalysisSpec) -> dict[str, int]:
    """A Kaplan-Meier round's segments (by their number of axes): the patients at risk and the
    events per group and bin, and the patients without a group level or a usable time; under
    differential privacy those leaving the risk set in each bin instead of those at risk (a
    patient leaves in one bin only), and not the last two (they only decide suppression, which
    the noise replaces: a noisy count near 0 would hide a whole curve)."""
    if spec.privacy.differential_privacy is not None:
        return {"leaving": 2, "events": 2}
    return {"at_risk": 2, "events": 2, "missing": 0, "unusable": 0}


def pack(square: np.ndarray) -> np.ndarray:
    """The upper triangles (row by row) of the symmetric matrices on the last two axes."""
    rows, columns = np.triu_indices(square.shape[-1])
    return square[..., rows, columns]


def unpack(packed: np.ndarray, p: int) -> np.ndarray:
    """The symmetric (p, p) matrices whose upper triangles are ``packed``'s last axis."""
    rows, columns = np.triu_indices(p)
    square = np.zeros((*packed.shape[:-1], p, p))
    square[..., rows, columns] = packed
    square[..., columns, rows] = packed
    return square


def _regression_values(
    spec: AnalysisSpec,
    analysis: Regression,
    table: Mapping[str, np.ndarray],
    params: AnalysisParams,
    threshold: int,
    discrete_levels: int,
) -> dict[str, np.ndarray]:
    data = design(analysis, table)
    beta = np.asarray(params.pooled, dtype=np.float64)
    if isinstance(analysis, LogisticAnalysis) and spec.privacy.differential_privacy is not None:
        return regression_values(analysis, spec, data, beta)  # noise, not the per-site check
    check_cells(analysis, data, threshold, discrete_levels, secure=True)
    cells = Cells.count(known_indicators(analysis, data), data.label)
    values = {"n": np.array(cells.n), "events": np.array(cells.events)}
    if cells.members.size:
        values |= {
            "members": cells.members.astype(np.int64),
            "member_events": cells.member_events.astype(np.int64),
            "both": cells.both.astype(np.int64),
        }
    if isinstance(analysis, CoxAnalysis) and not analysis.stratified:
        assert data.time is not None  # a survival outcome
        sums = risk_set_sums(
            data.x, data.time, data.label, beta, analysis.grid_days, 1, params.offset
        ).padded(analysis.grid_bins)
        return values | {
            "bin_events": sums.events,
            "s0": sums.s0,
            "s1": sums.s1,
            "s2": pack(sums.s2),
            "event_x": sums.event_x,
        }
    at = derivatives(analysis, data, beta)
    return values | {
        "loglik": np.array(at.loglik),
        "gradient": np.array(at.gradient),
        "hessian": np.array(at.hessian),
    }


def secure_values(
    spec: AnalysisSpec,
    table: Mapping[str, np.ndarray],
    params: AnalysisParams | None,
    threshold: int,
    discrete_levels: int,
) -> dict[str, np.ndarray]:
    """This site's exact contribution to a secure round of ``spec`` over its cohort ``table``,
    by segment of :func:`secure_layout` (counts as int64, reals as float64). DataError (the
    site declines) when a regression task carries no coefficients, or a column the spec cannot
    know to be discrete describes a small group here (``threshold``, ``discrete_levels``)."""
    a = spec.analysis
    values: dict[str, np.ndarray]
    if isinstance(a, CountsAnalysis):
        values = {"table": tabulate(a, table)}
    elif isinstance(a, SummaryAnalysis) and spec.privacy.differential_privacy is not None:
        values = summary_values(a, np.asarray(table[a.variable], dtype=np.float64))
    elif isinstance(a, SummaryAnalysis):
        numbers = np.asarray(table[a.variable], dtype=np.float64)
        complete = numbers[np.isfinite(numbers)]
        values = {
            "histogram": summary_cells(a, numbers),
            "total": np.array(complete.sum()),
            "total_squares": np.array((complete**2).sum()),
        }
    elif isinstance(a, KaplanMeierAnalysis):
        counts = group_counts(a, table)
        values = {name: np.asarray(getattr(counts, name)) for name in _survival_segments(spec)}
    elif params is None:
        raise DataError("a regression task carries no coefficients")
    else:
        values = _regression_values(spec, a, table, params, threshold, discrete_levels)
    return {SITES: np.array(1)} | values
