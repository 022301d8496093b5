"""A site's side of a regression: the covariates of an analysis as an unscaled matrix with named
terms (coefficients on the original scale of each variable), and the site's answer to a round.

Term names, in column order: ``intercept`` (logistic only), then each numeric covariate in the
order given (``age_at_diagnosis``, or ``log1p(tumour_size_mm)`` when log1p-transformed), then
each categorical covariate's levels after the reference (the first level) as ``name[level]``
(``grade[G2]``, ``grade[G3]``): the column order of :func:`oncofed.learning.data.encode`.
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


def site_part(
    analysis: Regression, data: Design, params: AnalysisParams, threshold: int
) -> RegressionPart | RiskSetPart:
    """A site's answer to one Newton round: its derivatives at the pooled coefficients (for the
    unstratified Cox model its risk-set sums there) and at its own. DataError when the counts
    sent with derivatives, patients with the outcome and without, are not 0 or at least
    ``threshold`` (risk-set sums carry their counts instead)."""
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
