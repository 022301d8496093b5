"""A site's side of a regression: the covariates of an analysis as an unscaled matrix with named
terms (coefficients on the original scale of each variable), and the site's answer to a round.

Term names, in column order: ``intercept`` (logistic only), then each numeric covariate in the
order given (``age_at_diagnosis``, or ``log1p(tumour_size_mm)`` when log1p-transformed), then
each categorical covariate's levels after the reference (the first level) as ``name[level]``
(``grade[G2]``, ``grade[G3]``): the column order of :func:`oncofed.learning.data.encode`.

Derivatives describe 0/1 columns exactly: at coefficients 0 the logistic Hessian is -X'X / 4
and its gradient X'(y - 1/2), so the patients with each level (the reference one too: n less
the others) and the events among them can be read off. A site therefore answers only when, for
every 0/1 column and every reference level, the patients with it and without it, and those with
and without the outcome among each, are 0 or at least the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oncofed.analytics.cox import efron_derivatives, risk_set_sums
from oncofed.analytics.logistic import logistic_derivatives
from oncofed.learning.data import DataError, Table, encode
from oncofed.wire.analysis import (
    AnalysisParams,
    CoxAnalysis,
    Derivatives,
    Regression,
    RegressionPart,
    RiskSetPart,
)
from oncofed.wire.spec import Feature


@dataclass(frozen=True)
class Design:
    """Complete cases of one site: covariate matrix, outcome and term names."""

    x: np.ndarray  # (n, p) float64, unscaled; intercept column first for logistic
    label: np.ndarray  # binary label, or survival event indicator (float64 0/1)
    time: np.ndarray | None  # survival time, None for logistic
    names: list[str]

    def __len__(self) -> int:
        return int(self.label.shape[0])


def _numeric_name(feature: Feature) -> str:
    return f"log1p({feature.name})" if feature.transform == "log1p" else feature.name


def term_names(analysis: Regression) -> list[str]:
    """The model's term names in column order (see the module docstring)."""
    covariates: Sequence[Feature] = analysis.covariates
    numeric = [_numeric_name(f) for f in covariates if f.levels is None]
    dummies = [f"{f.name}[{level}]" for f in covariates if f.levels for level in f.levels[1:]]
    intercept = ["intercept"] if analysis.type == "logistic" else []
    return intercept + numeric + dummies


def design(analysis: Regression, table: Table) -> Design:
    """The design of ``analysis`` over a site's ``table`` (numpy columns by variable name, as
    :func:`oncofed.cdm.frame.job_table` gives them); incomplete rows are left out."""
    cohort = encode(analysis.covariates, analysis.outcome, table)
    blocks = [cohort.numeric, cohort.dummies]
    if analysis.type == "logistic":
        blocks.insert(0, np.ones((len(cohort), 1)))
    return Design(np.hstack(blocks), cohort.label, cohort.time, term_names(analysis))


def _indicators(analysis: Regression, data: Design) -> tuple[list[str], np.ndarray]:
    """The terms whose columns are 0/1 (the intercept aside), then each categorical covariate's
    reference level, with their (n, k) indicator matrix."""
    x, names = data.x, data.names
    binary = [
        i for i, name in enumerate(names) if name != "intercept" and np.isin(x[:, i], (0, 1)).all()
    ]
    references = [(f.name, f.levels[0]) for f in analysis.covariates if f.levels]
    others = [x[:, [n.startswith(f"{name}[") for n in names]].sum(axis=1) for name, _ in references]
    labels = [names[i] for i in binary] + [f"{name}[{level}]" for name, level in references]
    return labels, np.column_stack([x[:, binary], *(1.0 - o for o in others)])


def check_cells(analysis: Regression, data: Design, threshold: int) -> None:
    """DataError naming the first term (see the module docstring) with a count from 1 to
    ``threshold`` - 1 among: the patients with it, without it, and with and without the
    outcome among each; or the first pair of terms with such a count among the patients with
    both, only one, or neither (a Hessian's cross terms hold them)."""
    labels, ones = _indicators(analysis, data)
    n, events = len(data), data.label.sum()
    with_term, with_events = ones.sum(axis=0), data.label @ ones
    cells = np.stack([with_term, n - with_term, with_events, with_term - with_events])
    cells = np.vstack([cells, events - with_events, n - with_term - events + with_events])
    small = np.flatnonzero(((cells > 0) & (cells < threshold)).any(axis=0))
    if small.size:
        raise DataError(
            f"term {labels[small[0]]!r}: the patients with and without it, and those with and "
            f"without the outcome among each, must each be 0 or at least {threshold} here"
        )
    both = ones.T @ ones  # patients with both of two terms: X'X holds them at the first round
    only = with_term[:, None] - both
    neither = n - with_term[:, None] - with_term[None, :] + both
    pairs = np.stack([both, only, only.T, neither])
    small_pairs = np.argwhere(((pairs > 0) & (pairs < threshold)).any(axis=0))
    if small_pairs.size:
        i, j = small_pairs[0]
        raise DataError(
            f"terms {labels[i]!r} and {labels[j]!r}: the patients with both, either or neither "
            f"must each be 0 or at least {threshold} here"
        )


def site_part(
    analysis: Regression, data: Design, params: AnalysisParams, threshold: int
) -> RegressionPart | RiskSetPart:
    """A site's answer to one Newton round: its derivatives at the pooled coefficients (for the
    unstratified Cox model its risk-set sums there) and at its own. DataError when a 0/1 term
    describes a small group (:func:`check_cells`), or when the counts sent with derivatives,
    patients with the outcome and without, are not 0 or at least ``threshold`` (risk-set sums
    carry their counts instead)."""
    check_cells(analysis, data, threshold)
    n, pooled, own = len(data), np.asarray(params.pooled), np.asarray(params.own)
    time = data.time

    def at(beta: np.ndarray) -> Derivatives:
        if time is None:  # logistic
            return logistic_derivatives(data.x, data.label, beta)
        return efron_derivatives(data.x, time, data.label, beta)

    if isinstance(analysis, CoxAnalysis) and not analysis.stratified:
        assert time is not None  # a survival outcome
        sums = risk_set_sums(data.x, time, data.label, pooled, analysis.grid_days, threshold)
        return sums.part(n, at(own))
    events = int(data.label.sum())
    if any(0 < count < threshold for count in (events, n - events)):
        raise DataError(f"fewer than {threshold} patients with or without the outcome here")
    return RegressionPart(n=n, events=events, pooled=at(pooled), own=at(own))
