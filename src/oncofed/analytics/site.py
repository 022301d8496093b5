"""A site's answer to one analysis task: only aggregates, computed on the job's cohort."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from oncofed.analytics.counts import site_counts
from oncofed.analytics.design import design, site_part
from oncofed.analytics.summary import site_summary
from oncofed.analytics.survival import site_survival
from oncofed.learning.data import DataError
from oncofed.wire.analysis import (
    AnalysisParams,
    AnalysisSpec,
    CountsAnalysis,
    KaplanMeierAnalysis,
    SitePart,
    SummaryAnalysis,
)


def answer(
    spec: AnalysisSpec,
    table: Mapping[str, np.ndarray],
    params: AnalysisParams | None,
    threshold: int,
    per_covariate: int,
) -> SitePart:
    """The part this site sends. DataError (the site declines) when a regression has fewer
    than ``per_covariate`` patients per coefficient here: the derivatives of a small cohort
    could describe individuals."""
    a = spec.analysis
    if isinstance(a, CountsAnalysis):
        return site_counts(a, table, threshold)
    if isinstance(a, SummaryAnalysis):
        return site_summary(a, table[a.variable], threshold)
    if isinstance(a, KaplanMeierAnalysis):
        return site_survival(a, table, threshold)
    if params is None:
        raise DataError("a regression task carries no coefficients")
    data = design(a, table)
    width = len(data.names)
    if len(data) < per_covariate * width:
        raise DataError(
            f"fewer than {per_covariate} patients per coefficient ({width} coefficients) here "
            "(policy min_patients_per_covariate)"
        )
    return site_part(a, data, params, threshold)
