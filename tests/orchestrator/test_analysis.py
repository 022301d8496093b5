"""Federated analyses end to end in one process: the real coordinator (SQLite and PostgreSQL)
and the real edge runner at two sites holding GBSG2 split unequally, against lifelines and
statsmodels on the pooled rows."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from oncofed.cdm.frame import job_table
from oncofed.demo.data import mapping_file, site_tables
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.importing import Source, import_source
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import TaskRunner
from oncofed.orchestrator.db import Job, Task
from oncofed.orchestrator.views import job_public
from oncofed.wire.analysis import (
    AnalysisResult,
    AnalysisSpec,
    CountsPart,
    CountsReport,
    RegressionReport,
    SurvivalReport,
)
from oncofed.wire.messages import Decline, JobPublic
from tests.support import SITE_KEY, State, gbsg2_covariates

COVARIATES: list[Any] = [  # no grade: a site's grade cells are too small to send derivatives
    "age_at_diagnosis",
    {"name": "tumour_size_mm", "transform": "log1p"},
    {"name": "nodes_positive", "transform": "log1p"},
    "treatment.endocrine",
]
BREAST = {"primary_site": "C50", "time_origin": "diagnosis"}
RFS = {"time": "rfs_days", "event": "rfs_event"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocalStore]:
    """GBSG2 split unequally: alpha 439 patients (north and south), beta 247 (east and west)."""
    root = tmp_path_factory.mktemp("sites")
    parts = site_tables()
    tables = {
        "alpha": pd.concat([parts["north"], parts["south"]]),
        "beta": pd.concat([parts["east"], parts["west"]]),
    }
    mapping = mapping_file("gbsg2.yaml", root)
    stores = {}
    for site, table in tables.items():
        table.to_csv(root / f"{site}.csv", index=False)
        stores[site] = LocalStore(root / site)
        import_source(stores[site], "gbsg2", Source("csv", str(root / f"{site}.csv"), mapping),
                      threshold=11)  # fmt: skip
    return stores


def spec(analysis: dict[str, Any], **extra: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {"name": "a", "dataset": "gbsg2", "cohort": BREAST, "analysis": analysis, **extra}
    )


def never_fetch(sha: str) -> bytes:
    raise AssertionError("an analysis downloads nothing")


def run(
    state: State,
    stores: Mapping[str, LocalStore],
    job: AnalysisSpec,
    threshold: int = 11,
    restart_after: int | None = None,
    **limits: float,
) -> JobPublic:
    """Submit ``job`` and play every site's part until it ends (restarting the orchestrator's
    coordinator after ``restart_after`` passes, as after a crash). Each site keeps its ledger
    next to the orchestrator's directory; ``limits`` are other fields of its policy."""
    policy = EdgePolicy.model_validate({"small_cell_threshold": threshold, **limits})
    with ExitStack() as stack:
        ledgers = {site: Ledger(state.home.parent / f"edge-{site}") for site in stores}
        for ledger in ledgers.values():
            stack.callback(ledger.close)
        runners = {
            site: TaskRunner(stores[site], policy, site, ledgers[site], SITE_KEY) for site in stores
        }
        return _play(state, runners, job, restart_after)


def _play(
    state: State, runners: Mapping[str, TaskRunner], job: AnalysisSpec, restart_after: int | None
) -> JobPublic:
    job_id = state.coordinator.submit(job, state.admin_id).id
    for attempt in range(100):
        if attempt == restart_after:
            state.restart()
        with state.sessions() as session:
            public = _public(session, job_id)
        if public.status != "running":
            return public
        for site, runner in runners.items():
            task = state.coordinator.next_task(state.sites[site])
            if task is None:
                continue
            outcome = runner.run(task, never_fetch)
            if isinstance(outcome, Decline):
                state.coordinator.decline(state.sites[site], task.task_id, outcome.reason)
            else:
                assert isinstance(outcome, AnalysisResult)
                state.coordinator.accept_result(state.sites[site], task.task_id, outcome)
    raise AssertionError("the analysis did not end")


def _public(session: Any, job_id: str) -> JobPublic:
    return job_public(session.get(Job, job_id))


def pooled_rows(
    stores: Mapping[str, LocalStore], job: AnalysisSpec, report: RegressionReport | None = None
) -> pd.DataFrame:
    """The cohorts of the sites in ``report`` (all when None) in one table (only a test may do
    this)."""
    excluded = report.excluded if report is not None else {}
    frames = []
    for site, store in stores.items():
        if site in excluded:
            continue
        table = job_table(job, store.load("gbsg2"))
        frames.append(pd.DataFrame(table).assign(site=site))
    return pd.concat(frames, ignore_index=True)


def test_kaplan_meier_on_a_1_day_grid_unsuppressed_equals_lifelines(
    state: State, stores: dict[str, LocalStore]
) -> None:
    job = spec({"type": "kaplan_meier", "outcome": RFS, "group": "grade", "grid_days": 1})
    done = run(state, stores, job, threshold=1)
    assert done.status == "completed", done.error
    report = done.report
    assert isinstance(report, SurvivalReport)
    rows = pooled_rows(stores, job)
    for grade, curve in report.groups.items():
        part = rows[rows["grade"] == grade]
        if part.empty:
            assert curve.time == [] or max(curve.at_risk) == 0
            continue
        fitter = KaplanMeierFitter().fit(part["rfs_days"], part["rfs_event"])
        expected = fitter.survival_function_at_times(curve.time).to_numpy()
        np.testing.assert_allclose(curve.survival, expected, rtol=0, atol=1e-9)
    test = multivariate_logrank_test(rows["rfs_days"], rows["grade"], rows["rfs_event"])
    assert report.logrank is not None
    assert report.logrank.statistic == pytest.approx(test.test_statistic, abs=1e-9)
    assert report.logrank.p == pytest.approx(test.p_value, abs=1e-9)


def test_kaplan_meier_with_suppression_sends_no_small_count(
    state: State, stores: dict[str, LocalStore]
) -> None:
    job = spec({"type": "kaplan_meier", "outcome": RFS, "group": "grade"})
    done = run(state, stores, job)
    assert done.status == "completed", done.error
    with state.sessions() as session:
        results = [t.result_json for t in session.query(Task) if t.result_json]
    for text in results:
        part = AnalysisResult.model_validate_json(text).part
        for series in getattr(part, "groups", {}).values():
            assert all(n == 0 or n >= 11 for n in series.at_risk + series.events)


def test_stratified_cox_equals_the_pooled_stratified_fit(
    state: State, stores: dict[str, LocalStore]
) -> None:
    job = spec({"type": "cox", "outcome": RFS, "covariates": COVARIATES})
    done = run(state, stores, job)
    assert done.status == "completed", done.error
    report = done.report
    assert isinstance(report, RegressionReport)
    rows = pooled_rows(stores, job, report)
    x = gbsg2_covariates(rows).assign(T=rows["rfs_days"], E=rows["rfs_event"], site=rows["site"])
    ref = CoxPHFitter().fit(x, "T", "E", strata=["site"], fit_options={"precision": 1e-12})
    coef = [t.coef for t in report.terms]
    se = [t.se for t in report.terms]
    np.testing.assert_allclose(coef, ref.params_.to_numpy(), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(se, ref.standard_errors_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose([t.p for t in report.terms], ref.summary["p"], rtol=1e-5, atol=1e-12)
    assert report.n == len(rows) and report.events == int(rows["rfs_event"].sum())
    assert report.iterations >= 3 and report.ratio_name == "HR"
    assert set(report.sites) == {"alpha", "beta"}
    assert [h.name for h in report.heterogeneity] == [t.name for t in report.terms]
    assert all(0.0 <= h.i2 <= 1.0 for h in report.heterogeneity)


def test_logistic_regression_equals_statsmodels(
    state: State, stores: dict[str, LocalStore]
) -> None:
    outcome = {"type": "binary", "time": "rfs_days", "event": "rfs_event", "horizon_days": 1825}
    job = spec({"type": "logistic", "outcome": outcome, "covariates": COVARIATES})
    done = run(state, stores, job)
    assert done.status == "completed", done.error
    report = done.report
    assert isinstance(report, RegressionReport)
    rows = pooled_rows(stores, job, report)
    happened = (rows["rfs_event"] == 1) & (rows["rfs_days"] <= 1825)
    known = happened | (rows["rfs_days"] >= 1825)
    rows, y = rows[known], happened[known].astype(float)
    x = sm.add_constant(gbsg2_covariates(rows))
    ref = sm.Logit(y.to_numpy(), x.to_numpy()).fit(disp=0, tol=1e-12)
    np.testing.assert_allclose([t.coef for t in report.terms], ref.params, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose([t.se for t in report.terms], ref.bse, rtol=1e-6)
    assert report.terms[0].name == "intercept" and report.ratio_name == "OR"


def test_a_separated_model_fails_plainly(state: State, stores: dict[str, LocalStore]) -> None:
    outcome = {"type": "binary", "label": "treatment.endocrine"}
    covariates = ["age_at_diagnosis", "treatment.endocrine"]
    job = spec({"type": "logistic", "outcome": outcome, "covariates": covariates})
    unbounded = {"max_coefficient_effect": 1e6, "max_newton_step": 1e6}
    done = run(state, stores, job, **unbounded)  # the Newton loop's own diagnosis
    assert done.status == "failed"
    assert done.error is not None and "treatment.endocrine" in done.error
    assert done.report is None
    bounded = run(state, stores, job)  # the sites' coefficient bounds stop it first
    assert bounded.status == "failed" and bounded.report is None
    details = [s.detail for r in bounded.rounds for s in r.sites.values() if s.status == "declined"]
    assert details and all("of 'treatment.endocrine'" in d for d in details)


def test_counts_publish_no_small_cell(state: State, stores: dict[str, LocalStore]) -> None:
    job = spec({"type": "counts", "rows": "grade", "columns": "treatment.endocrine"})
    done = run(state, stores, job)
    assert done.status == "completed", done.error
    report = done.report
    assert isinstance(report, CountsReport)
    for table in [report.pooled, *report.sites.values()]:
        for row in table.cells:
            for cell in row:
                assert isinstance(cell, str) or cell == 0 or cell >= 11


def test_a_site_below_its_minimum_cohort_declines_and_the_job_goes_on(
    state: State, stores: dict[str, LocalStore]
) -> None:
    cohort = {**BREAST, "age": {"min": 65}}  # alpha has 9 such patients, beta 83
    job = spec({"type": "kaplan_meier", "outcome": RFS}, cohort=cohort)
    done = run(state, stores, job)
    assert done.status == "completed", done.error
    answers = {site: s.status for site, s in done.rounds[0].sites.items()}
    assert answers == {"alpha": "declined", "beta": "accepted"}
    assert "minimum cohort size" in done.rounds[0].sites["alpha"].detail
    assert done.report is not None and "minimum cohort size" in done.report.excluded["alpha"]


def test_a_restart_mid_newton_resumes_to_the_same_fit(
    state: State, stores: dict[str, LocalStore]
) -> None:
    job = spec({"type": "cox", "outcome": RFS, "covariates": COVARIATES})
    straight = run(state, stores, job)
    resumed = run(state, stores, job, restart_after=2)
    assert straight.report is not None and resumed.report is not None
    assert resumed.report == straight.report
    assert len(resumed.rounds) == len(straight.rounds)


def test_an_answer_of_the_wrong_kind_is_refused(state: State) -> None:
    job = spec({"type": "kaplan_meier", "outcome": RFS})
    state.coordinator.submit(job, state.admin_id)
    task = state.coordinator.next_task(state.sites["alpha"])
    assert task is not None and task.kind == "analysis" and task.params is None
    wrong = AnalysisResult(part=CountsPart(cells=[[11], [11]]))
    ack = state.coordinator.accept_result(state.sites["alpha"], task.task_id, wrong)
    assert (ack.status, ack.detail) == ("rejected", "this analysis takes a SurvivalPart")


def test_a_newton_round_sends_each_site_the_pooled_and_its_own_coefficients(
    state: State,
) -> None:
    job = spec({"type": "cox", "outcome": RFS, "covariates": ["age_at_diagnosis"]})
    state.coordinator.submit(job, state.admin_id)
    task = state.coordinator.next_task(state.sites["beta"])
    assert task is not None and task.params is not None
    assert task.params.pooled == [0.0] and task.params.own == [0.0]


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ({"type": "counts", "rows": "grade", "columns": "grade"}, "the same variable"),
        ({"type": "counts", "rows": "age_at_diagnosis"}, "need a categorical variable"),
        ({"type": "summary", "variable": "grade", "bins": [0, 1]}, "needs a numeric variable"),
        ({"type": "summary", "variable": "ecog", "bins": [2, 1]}, "bin edges must increase"),
        ({"type": "summary", "variable": "ecog", "bins": [0, 5], "quantiles": [0.5, 0.5]},
         "each quantile may appear once"),
        ({"type": "kaplan_meier", "outcome": {"time": "os_days", "event": "rfs_event"}},
         "different endpoints"),
        ({"type": "cox", "outcome": RFS, "covariates": ["ecog"], "grid_days": 30},
         "grid_days applies to the unstratified model"),
        ({"type": "anova"}, "does not match any of the expected tags"),
    ],
)  # fmt: skip
def test_a_bad_analysis_spec_is_refused_with_the_reason(
    analysis: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        spec(analysis)


def test_categorical_covariates_with_suppression_off_equal_lifelines(
    state: State, stores: dict[str, LocalStore]
) -> None:
    """Grade dummies are exact too; at the default threshold the sites would decline, their
    grade cells being too small to send derivatives of."""
    grade = {"name": "grade", "levels": ["G1", "G2", "G3"]}
    job = spec({"type": "cox", "outcome": RFS, "covariates": [*COVARIATES, grade]})
    suppressed = run(state, stores, job)
    assert suppressed.report is not None
    assert any("term 'grade[" in why for why in suppressed.report.excluded.values())
    done = run(state, stores, job, threshold=1)
    assert done.status == "completed", done.error
    assert isinstance(done.report, RegressionReport)
    rows = pooled_rows(stores, job)
    x = gbsg2_covariates(rows, grade=True).assign(
        T=rows["rfs_days"], E=rows["rfs_event"], site=rows["site"]
    )
    ref = CoxPHFitter().fit(x, "T", "E", strata=["site"], fit_options={"precision": 1e-12})
    coef = [t.coef for t in done.report.terms]
    np.testing.assert_allclose(coef, ref.params_.to_numpy(), rtol=1e-6, atol=1e-8)
