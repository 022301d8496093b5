"""Issue 8's "Done when" for small centres: twelve hospitals of 12 to 20 patients each (202 of
GBSG2, dealt out as ``tests/analytics/test_consortium.py`` deals them), each importing its CSV
export and running the real task runner, ledger and secure sessions under the default edge
policy against the real coordinator.

With secure aggregation, Kaplan-Meier, stratified and unstratified Cox and logistic regression
count every patient and equal the pooled analysis: lifelines and statsmodels on the pooled rows
to 1e-6, the Kaplan-Meier curves (carried and suppressed at the pooled level) those of the same
algorithm on the pooled rows, counts exactly. So again with one site killed after sending its
shares in the first round: the round completes at its deadline with the other eleven, equal to
the pooled analysis of their rows. Under the plain protocol the same centres mostly decline."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter
from lifelines.datasets import load_gbsg2

from oncofed.edge import LocalStore
from oncofed.learning.data import Table
from oncofed.wire.analysis import AnalysisSpec, RegressionReport, SurvivalReport
from oncofed.wire.messages import JobPublic
from tests.analytics.federated import (
    RFS,
    Rules,
    frame,
    gbsg2,
    plain_run,
    pooled_rows,
    report_of,
    small_centres,
)
from tests.sites import Mortal, enrol, import_gbsg2, mortals, play
from tests.support import State

COVARIATES: list[Any] = [
    "age_at_diagnosis",
    "treatment.endocrine",
    {"name": "biomarker.PR.value", "transform": "log1p"},
]
TERMS = ["age_at_diagnosis", "treatment.endocrine", "log1p(biomarker.PR.value)"]
KAPLAN_MEIER = {"type": "kaplan_meier", "outcome": RFS, "group": "grade"}
STRATIFIED_COX = {"type": "cox", "outcome": RFS, "covariates": COVARIATES}
COX = {**STRATIFIED_COX, "stratified": False, "horizon_days": 2700}
"""Risk sets on exact days (the 1-day grid) up to 2700 days, past GBSG2's longest follow-up
(2659 days): nothing is censored by the horizon."""
LOGISTIC = {"type": "logistic", "outcome": {"type": "binary", "label": "rfs_event"},
            "covariates": COVARIATES}  # fmt: skip
TIGHT = {"precision": 1e-20, "r_precision": 1e-15}  # lifelines run to convergence
KILLED = "site03"
TIMEOUT = 0.5
"""Seconds each phase waits for its sites: the killed site is dropped after this."""
SQLITE = pytest.mark.parametrize("state", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def tables() -> dict[str, Table]:
    """Each centre's rows as the reference sees them, with their row numbers in GBSG2."""
    return small_centres(gbsg2() | {"row": np.arange(686)})


@pytest.fixture(scope="module")
def stores(
    tmp_path_factory: pytest.TempPathFactory, tables: dict[str, Table]
) -> dict[str, LocalStore]:
    """Each centre's GBSG2 rows exported as the demo's CSV and imported at its edge."""
    raw = load_gbsg2()
    exports = {site: raw.iloc[table["row"]] for site, table in tables.items()}
    return import_gbsg2(tmp_path_factory.mktemp("centres"), exports)


@pytest.fixture
def centres(
    state: State, stores: dict[str, LocalStore], tmp_path: Path
) -> Iterator[dict[str, Mortal]]:
    """The twelve centres under the default edge policy."""
    enrol(state, stores)
    with ExitStack() as stack:
        yield mortals(state, stores, stack, tmp_path / "edges")


def analysis(body: dict[str, Any], sites: list[str], secure: bool = True) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {
            "name": "small-centres",
            "dataset": "gbsg2",
            "cohort": {"primary_site": "C50", "time_origin": "diagnosis"},
            "sites": sites,
            "analysis": body,
            "round_timeout_s": TIMEOUT,
            "privacy": {"secure_aggregation": secure},
        }
    )


def secure(
    state: State,
    centres: dict[str, Mortal],
    tables: dict[str, Table],
    body: dict[str, Any],
) -> Iterator[tuple[JobPublic, dict[str, Table]]]:
    """The secure analysis through the coordinator with every centre, then with ``KILLED``
    killed after sending its shares in the first round; each with the tables of the centres
    it must hold."""
    for killed in (False, True):
        centres[KILLED].kill_after = "shares" if killed else None
        public = play(state, centres, analysis(body, sorted(centres)))
        assert public.status == "completed", public.error
        assert all(r.secure for r in public.rounds)
        kept = {site: table for site, table in tables.items() if not killed or site != KILLED}
        report = public.report
        assert report is not None and report.secure_sites == sorted(kept)
        if killed:
            dropped = "no answer before the round deadline (in the masked phase)"
            assert public.rounds[0].sites[KILLED].status == "expired"
            assert public.rounds[0].sites[KILLED].detail == dropped
            assert report.excluded[KILLED] == f"expired: {dropped}"
            assert all(KILLED not in r.sites for r in public.rounds[1:])
        yield public, kept


def regression(public: JobPublic, rows: pd.DataFrame) -> RegressionReport:
    """The report, with every patient and event of ``rows`` counted; no centre is large
    enough to show a fit of its own."""
    report = public.report
    assert isinstance(report, RegressionReport)
    assert report.n == len(rows) and report.events == int(rows["event"].sum())
    assert report.sites == {}
    return report


def close(report: RegressionReport, coef: Any, se: Any, p: Any) -> None:
    ours = np.array([[t.coef, t.se, t.p] for t in report.terms]).T
    np.testing.assert_allclose(ours, np.array([coef, se, p], dtype=float), rtol=1e-6, atol=1e-9)


@SQLITE
def test_kaplan_meier_is_that_of_the_pooled_rows(
    state: State, centres: dict[str, Mortal], tables: dict[str, Table]
) -> None:
    """Carrying and group-size suppression (threshold 11) act on the pooled counts: exactly
    the plain algorithm applied to the pooled rows as if one site held them."""
    for public, kept in secure(state, centres, tables, KAPLAN_MEIER):
        report, rows = public.report, pooled_rows(kept)
        spec = analysis(KAPLAN_MEIER, sorted(kept))
        expected = report_of(plain_run(spec, {"pooled": rows}, Rules()))
        assert isinstance(report, SurvivalReport) and isinstance(expected, SurvivalReport)
        assert report.groups == expected.groups and list(report.groups) == ["G2", "G3"]
        assert report.logrank == expected.logrank and report.withheld == expected.withheld
        for grade, curve in report.groups.items():  # every patient of a shown group counted
            assert curve.at_risk[0] == int((rows["grade"] == grade).sum())


@SQLITE
def test_stratified_cox_equals_lifelines_stratified_by_site(
    state: State, centres: dict[str, Mortal], tables: dict[str, Table]
) -> None:
    for public, kept in secure(state, centres, tables, STRATIFIED_COX):
        rows = frame(kept)
        report = regression(public, rows)
        cph = CoxPHFitter().fit(rows, "time", "event", strata=["site"], fit_options=TIGHT)
        close(report, cph.params_[TERMS], cph.standard_errors_[TERMS], cph.summary.p[TERMS])
        assert report.loglik == pytest.approx(cph.log_likelihood_, rel=1e-10)


@SQLITE
def test_unstratified_cox_equals_statsmodels_breslow(
    state: State, centres: dict[str, Mortal], tables: dict[str, Table]
) -> None:
    for public, kept in secure(state, centres, tables, COX):
        rows = frame(kept)
        report = regression(public, rows)
        model = sm.PHReg(rows["time"], rows[TERMS], status=rows["event"], ties="breslow")
        fit = model.fit(tol=1e-14)
        close(report, fit.params, fit.bse, fit.pvalues)
        assert report.loglik == pytest.approx(model.loglike(np.asarray(fit.params)), rel=1e-10)


@SQLITE
def test_logistic_regression_equals_statsmodels_logit(
    state: State, centres: dict[str, Mortal], tables: dict[str, Table]
) -> None:
    for public, kept in secure(state, centres, tables, LOGISTIC):
        rows = frame(kept)
        report = regression(public, rows)
        logit = sm.Logit(rows["event"], sm.add_constant(rows[TERMS])).fit(tol=1e-14, disp=False)
        close(report, logit.params, logit.bse, logit.pvalues)
        assert report.loglik == pytest.approx(logit.llf, rel=1e-10)


@SQLITE
def test_under_the_plain_protocol_most_centres_decline(
    state: State, centres: dict[str, Mortal], tables: dict[str, Table]
) -> None:
    """Without secure aggregation each centre's own numbers are seen, so its policy's
    per-site rules apply: only the centres of 20 patients show a curve, none a regression."""
    names = sorted(centres)
    curves = play(state, centres, analysis(KAPLAN_MEIER, names, secure=False))
    shown = sorted(site for site, table in tables.items() if len(table["row"]) >= 20)
    assert curves.status == "completed" and len(shown) == 2
    assert curves.report is not None and sorted(curves.report.excluded) == sorted(
        set(names) - set(shown)
    )
    assert all("min_cohort_size=20" in why for why in curves.report.excluded.values())
    fit = play(state, centres, analysis(STRATIFIED_COX, names, secure=False))
    assert fit.status == "failed" and fit.error is not None
    assert fit.error.startswith("round 0 (analysis): 0 sites reported, min_sites is 1.")
    assert all(site.status == "declined" for site in fit.rounds[0].sites.values())
