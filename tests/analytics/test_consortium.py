"""A consortium of twelve small centres (12 to 20 patients each, 202 in all, drawn from GBSG2)
under the default policy and secure aggregation: no site could answer a regression or show a
curve on its own, yet every patient counts and each analysis equals lifelines or statsmodels
on the pooled rows to 1e-6, or the same suppressed algorithm applied to the pooled rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from oncofed.analytics.outcome import Failed
from oncofed.learning.data import DataError, Table
from oncofed.wire.analysis import RegressionReport, SurvivalReport
from tests.analytics.federated import (
    OPEN,
    RFS,
    Rules,
    frame,
    gbsg2,
    plain_run,
    pooled_rows,
    report_of,
    secure_round,
    secure_run,
    small_centres,
    spec,
)

# Numeric covariates keep the per-site check of a column with few distinct values even under
# secure aggregation (the spec cannot know what they hold): in this draw every site's ages and
# PR values take more than 10 distinct values. Endocrine therapy is a flag the spec knows of,
# checked on the pooled counts.
COVARIATES: list[Any] = [
    "age_at_diagnosis",
    "treatment.endocrine",
    {"name": "biomarker.PR.value", "transform": "log1p"},
]
NAMES = ["age_at_diagnosis", "treatment.endocrine", "log1p(biomarker.PR.value)"]
TIGHT = {"precision": 1e-20, "r_precision": 1e-15}  # lifelines run to convergence


@pytest.fixture(scope="module")
def sites() -> dict[str, Table]:
    return small_centres(gbsg2())


def regression(outcome: Any, tables: dict[str, Table]) -> RegressionReport:
    report = report_of(secure_run(spec(outcome), tables)[0])
    assert isinstance(report, RegressionReport)
    assert report.n == 202 and report.secure_sites == sorted(tables)  # every patient counts
    assert report.sites == {} and len(report.pooled_only) == 12  # none may show its own fit
    return report


def close(report: RegressionReport, coef: Any, se: Any, p: Any) -> None:
    ours = np.array([[t.coef, t.se, t.p] for t in report.terms]).T
    np.testing.assert_allclose(ours, np.array([coef, se, p], dtype=float), rtol=1e-6, atol=1e-9)


def test_no_site_could_answer_a_regression_alone(sites: dict[str, Table]) -> None:
    analysis = spec({"type": "cox", "outcome": RFS, "covariates": COVARIATES})
    for site, table in sites.items():
        with pytest.raises(DataError, match=r"here \(policy min_(cohort_size|patients_per)"):
            plain_run(analysis, {site: table}, Rules())


def test_stratified_cox_equals_lifelines_stratified_by_site(sites: dict[str, Table]) -> None:
    report = regression({"type": "cox", "outcome": RFS, "covariates": COVARIATES}, sites)
    cph = CoxPHFitter().fit(frame(sites), "time", "event", strata=["site"], fit_options=TIGHT)
    close(report, cph.params_[NAMES], cph.standard_errors_[NAMES], cph.summary.p[NAMES])
    assert report.loglik == pytest.approx(cph.log_likelihood_, rel=1e-10)
    assert report.events == int(frame(sites)["event"].sum())


def test_unstratified_cox_equals_statsmodels_breslow(sites: dict[str, Table]) -> None:
    analysis = {"type": "cox", "outcome": RFS, "covariates": COVARIATES, "stratified": False}
    report = regression(analysis, sites)
    rows = frame(sites)
    model = sm.PHReg(rows["time"], rows[NAMES], status=rows["event"], ties="breslow")
    fit = model.fit(tol=1e-14)
    close(report, fit.params, fit.bse, fit.pvalues)
    assert report.loglik == pytest.approx(model.loglike(np.asarray(fit.params)), rel=1e-10)


def test_logistic_equals_statsmodels_logit(sites: dict[str, Table]) -> None:
    outcome = {"type": "binary", "label": "rfs_event"}
    report = regression({"type": "logistic", "outcome": outcome, "covariates": COVARIATES}, sites)
    rows = frame(sites)
    logit = sm.Logit(rows["event"], sm.add_constant(rows[NAMES])).fit(tol=1e-14, disp=False)
    close(report, logit.params, logit.bse, logit.pvalues)
    assert report.loglik == pytest.approx(logit.llf, rel=1e-10)


def test_kaplan_meier_equals_lifelines_with_suppression_off(sites: dict[str, Table]) -> None:
    analysis = spec({"type": "kaplan_meier", "outcome": RFS, "group": "grade", "grid_days": 1})
    report = report_of(secure_round(analysis, None, sites, OPEN))
    assert isinstance(report, SurvivalReport) and report.logrank is not None
    rows = pooled_rows(sites)
    for grade, curve in report.groups.items():
        time = rows["rfs_days"][rows["grade"] == grade]
        event = rows["rfs_event"][rows["grade"] == grade]
        fitted = KaplanMeierFitter().fit(time, event)
        expected = fitted.survival_function_at_times(curve.time).to_numpy()
        np.testing.assert_allclose(curve.survival, expected, rtol=0, atol=1e-12)
        bounds = fitted.confidence_interval_.reindex(curve.time, method="ffill").to_numpy()
        np.testing.assert_allclose(curve.lower, bounds[:, 0], rtol=0, atol=1e-9)
        assert curve.at_risk[0] == len(time) and sum(curve.events) == event.sum()
    test = multivariate_logrank_test(rows["rfs_days"], rows["grade"], rows["rfs_event"])
    assert report.logrank.statistic == pytest.approx(test.test_statistic, rel=1e-12)


def test_kaplan_meier_under_the_default_threshold_is_that_of_the_pooled_rows(
    sites: dict[str, Table],
) -> None:
    """With T = 11, carrying and group-size suppression act on the pooled counts: exactly the
    plain algorithm on the pooled rows as one site, where alone every site sends nothing."""
    analysis = spec({"type": "kaplan_meier", "outcome": RFS, "group": "grade"})
    report = report_of(secure_round(analysis, None, sites))
    expected = report_of(plain_run(analysis, {"all": pooled_rows(sites)}, Rules()))
    assert isinstance(report, SurvivalReport) and isinstance(expected, SurvivalReport)
    assert report.groups == expected.groups and list(report.groups) == ["G2", "G3"]
    assert report.logrank == expected.logrank and report.withheld == expected.withheld
    alone = report_of(plain_run(analysis, sites, Rules()))
    assert isinstance(alone, SurvivalReport) and alone.groups == {}


def test_a_grade_with_few_pooled_events_fails_the_regression(sites: dict[str, Table]) -> None:
    """17 grade-G1 patients over the twelve sites, 6 of them with an event: a pooled cell below
    11, so the fit is not released."""
    covariates = [*COVARIATES, {"name": "grade", "levels": ["G1", "G2", "G3"]}]
    analysis = spec({"type": "cox", "outcome": RFS, "covariates": covariates})
    outcome, _ = secure_run(analysis, sites)
    assert isinstance(outcome, Failed)
    assert outcome.error.startswith(
        "the pooled result may not be released: term 'grade[G1]': the patients with and without"
    )
