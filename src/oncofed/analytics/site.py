"""A site's answer to one analysis task: only aggregates, computed on the job's cohort.

:func:`answer` is a plain round's part, seen by the orchestrator as it is; :func:`own_fit` is
what a site may add in the clear, once, beside a secure Newton loop
(:mod:`oncofed.analytics.secure`): its own model fitted here, for the per-site estimates. Both
apply the per-site rules below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from oncofed.analytics.counts import site_counts
from oncofed.analytics.design import (
    Design,
    check_cells,
    derivatives,
    design,
    site_part,
    small_outcome,
)
from oncofed.analytics.newton import fit_alone, fit_terms
from oncofed.analytics.summary import site_summary
from oncofed.analytics.survival import site_survival
from oncofed.learning.data import DataError, Table
from oncofed.wire.analysis import (
    AnalysisParams,
    AnalysisSpec,
    CountsAnalysis,
    KaplanMeierAnalysis,
    OwnEstimate,
    Regression,
    SitePart,
    SummaryAnalysis,
)
from oncofed.wire.spec import BinaryOutcome, Feature, Outcome


def answer(
    spec: AnalysisSpec,
    table: Mapping[str, np.ndarray],
    params: AnalysisParams | None,
    threshold: int,
    per_covariate: int,
    min_cohort: int,
    discrete_levels: int,
) -> SitePart:
    """The part this site sends in a plain round. DataError (the site declines) as
    :func:`regression_design` says, or when a regression's derivatives would describe a small
    group (:func:`oncofed.analytics.design.check_cells`, with ``discrete_levels`` the most
    distinct values of a column that describes groups)."""
    a = spec.analysis
    if isinstance(a, CountsAnalysis):
        return site_counts(a, table, threshold)
    if isinstance(a, SummaryAnalysis):
        return site_summary(a, table[a.variable], threshold)
    if isinstance(a, KaplanMeierAnalysis):
        return site_survival(a, table, threshold)
    if params is None:
        raise DataError("a regression task carries no coefficients")
    data = regression_design(a, table, threshold, per_covariate, min_cohort)
    return site_part(a, data, params, threshold, discrete_levels)


def regression_design(
    analysis: Regression,
    table: Mapping[str, np.ndarray],
    threshold: int,
    per_covariate: int,
    min_cohort: int,
) -> Design:
    """The design of a regression whose derivatives this site may send itself. DataError when
    it has fewer than ``min_cohort`` complete cases, leaves out from 1 to ``threshold`` - 1
    incomplete ones (the cohort size less the count would say how many), or has fewer than
    ``per_covariate`` patients per coefficient here: the derivatives of a small cohort could
    describe individuals."""
    data = design(analysis, table)
    left_out = len(next(iter(table.values()))) - len(data)
    causes = left_out_causes(analysis.covariates, analysis.outcome, table)
    if len(data) < min_cohort:
        raise DataError(
            f"fewer than {min_cohort} patients with complete data here (policy "
            f"min_cohort_size){f'; left out: those {causes}' if causes else ''}"
        )
    if 0 < left_out < threshold:
        raise DataError(
            f"the patients left out here (those {causes or 'incomplete'}) must be 0 or at least "
            f"{threshold}"
        )
    width = len(data.names)
    if len(data) < per_covariate * width:
        raise DataError(
            f"fewer than {per_covariate} patients per coefficient ({width} coefficients) here "
            "(policy min_patients_per_covariate)"
        )
    return data


def left_out_causes(features: Sequence[Feature], outcome: Outcome, table: Table) -> str:
    """Why patients of a cohort ``table`` are left out of a model of ``features`` and
    ``outcome`` (the rules of :func:`oncofed.learning.data.encode`, whose columns it has
    checked), for a decline message: each cause found once, in the spec's order, never a count
    ("" when none is)."""
    causes = []
    for f in features:
        values = np.asarray(table[f.name])
        if f.levels is not None:
            if not np.isin(values.astype(str), f.levels).all():
                causes.append(f"without a {f.name} of {', '.join(f.levels)}")
        elif not np.isfinite(values.astype(np.float64)).all():
            causes.append(f"without a value of {f.name}")
    if isinstance(outcome, BinaryOutcome) and outcome.label is not None:
        if not np.isin(np.asarray(table[outcome.label], dtype=np.float64), (0.0, 1.0)).all():
            causes.append(f"without a 0/1 value of {outcome.label}")
        return ", ".join(causes)
    assert outcome.time is not None and outcome.event is not None  # the spec guarantees both
    time = np.asarray(table[outcome.time], dtype=np.float64)
    event = np.asarray(table[outcome.event], dtype=np.float64)
    usable = np.isfinite(time) & (time >= 0) & np.isin(event, (0.0, 1.0))
    if not usable.all():
        causes.append(f"without a usable {outcome.time} and {outcome.event}")
    if isinstance(outcome, BinaryOutcome) and outcome.horizon_days:
        horizon = outcome.horizon_days
        if (usable & (event == 0) & (time < horizon)).any():
            causes.append(f"censored before the {horizon:g}-day horizon")
    return ", ".join(causes)


def own_fit(
    spec: AnalysisSpec,
    table: Mapping[str, np.ndarray],
    threshold: int,
    per_covariate: int,
    min_cohort: int,
    discrete_levels: int,
) -> OwnEstimate:
    """This site's own model, fitted here on its rows alone by the Newton loop a plain analysis
    runs for it (:func:`oncofed.analytics.newton.fit_alone`, the spec's tolerance and iteration
    limit), which a site whose policy shares site estimates sends in the clear beside the first
    round of a secure Newton loop: the per-site estimates and the heterogeneity check are made
    of these. Only the fitted terms leave, never derivatives at coefficients the orchestrator
    chose; a fit that fails gives its diagnosis instead. DataError (the site keeps its
    estimates, for the reason given) unless every rule of a plain round is met here
    (:func:`regression_design`, :func:`oncofed.analytics.design.check_cells`, and 0 or at least
    ``threshold`` patients with and without the outcome)."""
    a = spec.analysis
    if isinstance(a, CountsAnalysis | SummaryAnalysis | KaplanMeierAnalysis):
        raise DataError(f"a {a.type} analysis has no estimates of a site's own")
    data = regression_design(a, table, threshold, per_covariate, min_cohort)
    check_cells(a, data, threshold, discrete_levels)
    message = small_outcome(len(data), int(data.label.sum()), threshold, "here")
    if message is not None:
        raise DataError(message)
    fit = fit_alone(
        data.names, lambda beta: derivatives(a, data, beta), a.tolerance, a.max_iterations
    )
    if fit.status == "failed":
        return OwnEstimate(failed=fit.message)
    return OwnEstimate(terms=fit_terms(fit, data.names, a.confidence), iterations=fit.iterations)
