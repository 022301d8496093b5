"""The federated Newton loop, run in-process over sites (no HTTP), against the pooled fits of
lifelines and statsmodels on a real cohort (GBSG2 breast cancer) split into unequal sites."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter
from lifelines.datasets import load_gbsg2
from numpy.typing import ArrayLike

from oncofed.analytics.design import Design, design, site_part, term_names
from oncofed.analytics.newton import (
    Fit,
    NewtonFailure,
    NewtonState,
    heterogeneity,
    newton_step,
    pooled_derivatives,
    regression_report,
    terms,
)
from oncofed.learning.data import DataError, Table
from oncofed.wire.analysis import (
    CoxAnalysis,
    Derivatives,
    LogisticAnalysis,
    Regression,
    RegressionReport,
    Term,
)
from oncofed.wire.spec import BinaryOutcome, Feature, SurvivalOutcome

GRADE = Feature(name="grade", levels=["G1", "G2", "G3"])
COVARIATES = [
    Feature(name="age_at_diagnosis"),
    Feature(name="tumour_size_mm"),
    Feature(name="nodes_positive", transform="log1p"),
    GRADE,
    Feature(name="treatment.endocrine"),
]
RFS = SurvivalOutcome(time="rfs_days", event="rfs_event")
FIVE_YEARS = BinaryOutcome(time="rfs_days", event="rfs_event", horizon_days=1825)
SIZES = (0.55, 0.3, 0.15)  # unequal sites
TIGHT = {"precision": 1e-20, "r_precision": 1e-15}  # lifelines run to convergence


def gbsg2() -> dict[str, np.ndarray]:
    """GBSG2 as a job table: numpy columns named by the data model."""
    d = load_gbsg2()
    return {
        "age_at_diagnosis": d["age"].to_numpy(float),
        "tumour_size_mm": d["tsize"].to_numpy(float),
        "nodes_positive": d["pnodes"].to_numpy(float),
        "grade": d["tgrade"].map({"I": "G1", "II": "G2", "III": "G3"}).to_numpy(object),
        "treatment.endocrine": d["horTh"].eq("yes").to_numpy(float),
        "rfs_days": d["time"].to_numpy(float),
        "rfs_event": d["cens"].to_numpy(float),
    }


def split(table: Table, sizes: tuple[float, ...] = SIZES, seed: int = 4) -> dict[str, Table]:
    """Rows dealt at random to sites of the given shares."""
    n = len(table["rfs_days"])
    site = np.random.default_rng(seed).choice(len(sizes), size=n, p=sizes)
    return {f"site{k}": {c: v[site == k] for c, v in table.items()} for k in range(len(sizes))}


def federate(
    analysis: Regression, tables: Mapping[str, Table], threshold: int = 1
) -> RegressionReport | NewtonFailure:
    """The orchestrator's loop; the state goes through JSON between rounds as it is stored."""
    designs = {site: design(analysis, table) for site, table in tables.items()}
    state = NewtonState.start(term_names(analysis), designs)
    while True:
        parts = {
            s: site_part(analysis, d, state.params(s), threshold, 10) for s, d in designs.items()
        }
        pooled = pooled_derivatives(list(parts.values()), state.pooled.beta)
        own = {site: part.own for site, part in parts.items()}
        step = newton_step(
            NewtonState.from_json(state.to_json()),
            pooled,
            own,
            analysis.tolerance,
            analysis.max_iterations,
        )
        if isinstance(step, NewtonFailure):
            return step
        state = step
        if state.done:
            return regression_report(analysis, state, parts.values())


def pooled_frame(designs: Mapping[str, Design]) -> pd.DataFrame:
    """All sites' rows in one table (the reference a statistician would fit)."""
    frames = []
    for site, d in designs.items():
        frame = pd.DataFrame(d.x, columns=d.names)
        frame["time"], frame["event"], frame["site"] = d.time, d.label, site
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def close(report: RegressionReport, coef: ArrayLike, se: ArrayLike, p: ArrayLike) -> None:
    """Coefficients, standard errors and p-values equal the reference's to 1e-6."""
    ours = np.array([[t.coef, t.se, t.p] for t in report.terms]).T
    reference = np.array([coef, se, p], dtype=np.float64)
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-9)


def test_term_names_follow_the_design_columns() -> None:
    cox = CoxAnalysis(outcome=RFS, covariates=COVARIATES)
    names = term_names(cox)
    assert names == [
        "age_at_diagnosis",
        "tumour_size_mm",
        "log1p(nodes_positive)",
        "treatment.endocrine",
        "grade[G2]",
        "grade[G3]",
    ]
    d = design(cox, gbsg2())
    assert d.names == names and d.x.shape == (686, 6)
    np.testing.assert_array_equal(d.x[:, 2], np.log1p(gbsg2()["nodes_positive"]))
    logistic = design(LogisticAnalysis(outcome=FIVE_YEARS, covariates=COVARIATES), gbsg2())
    assert logistic.names == ["intercept", *names]
    assert np.all(logistic.x[:, 0] == 1.0) and logistic.time is None


def test_stratified_cox_equals_lifelines_stratified_by_site() -> None:
    analysis = CoxAnalysis(outcome=RFS, covariates=COVARIATES)
    tables = split(gbsg2())
    report = federate(analysis, tables)
    assert isinstance(report, RegressionReport)
    frame = pooled_frame({s: design(analysis, t) for s, t in tables.items()})
    cph = CoxPHFitter().fit(frame, "time", "event", strata=["site"], fit_options=TIGHT)
    names = term_names(analysis)
    close(report, cph.params_[names], cph.standard_errors_[names], cph.summary.p[names])
    np.testing.assert_allclose(report.loglik, cph.log_likelihood_, rtol=1e-10)
    assert [t.name for t in report.terms] == names
    assert report.model == "cox" and report.stratified and report.ratio_name == "HR"
    assert (report.n, report.events) == (686, 299)
    assert 3 <= report.iterations <= 10
    hr = report.terms[3]  # endocrine therapy: protective in GBSG2
    assert hr.ratio == pytest.approx(np.exp(hr.coef)) and hr.ratio_upper < 1.0
    assert set(report.sites) == set(tables) and len(report.heterogeneity) == len(names)


def test_logistic_equals_statsmodels_logit() -> None:
    analysis = LogisticAnalysis(outcome=FIVE_YEARS, covariates=COVARIATES)
    tables = split(gbsg2())
    report = federate(analysis, tables)
    assert isinstance(report, RegressionReport)
    designs = {s: design(analysis, t) for s, t in tables.items()}
    x = np.vstack([d.x for d in designs.values()])
    y = np.concatenate([d.label for d in designs.values()])
    logit = sm.Logit(y, x).fit(method="newton", tol=1e-14, disp=False)
    close(report, logit.params, logit.bse, logit.pvalues)
    assert report.loglik == pytest.approx(logit.llf, rel=1e-10)
    assert (report.n, report.events) == (len(y), int(y.sum()))
    assert report.ratio_name == "OR" and not report.stratified
    assert 3 <= report.iterations <= 10


def test_unstratified_cox_on_a_one_day_grid_equals_statsmodels_breslow() -> None:
    analysis = CoxAnalysis(outcome=RFS, covariates=COVARIATES, stratified=False)
    tables = split(gbsg2())
    report = federate(analysis, tables)
    assert isinstance(report, RegressionReport)
    frame = pooled_frame({s: design(analysis, t) for s, t in tables.items()})
    names = term_names(analysis)
    ph = sm.PHReg(frame["time"], frame[names], status=frame["event"], ties="breslow")
    fit = ph.fit(tol=1e-14)
    close(report, fit.params, fit.bse, fit.pvalues)
    assert report.loglik == pytest.approx(ph.loglike(fit.params), rel=1e-10)
    assert not report.stratified and report.events == 299


def test_with_a_threshold_counts_are_carried_or_a_site_refuses() -> None:
    tables = split(gbsg2())
    numeric = [f for f in COVARIATES if f is not GRADE]  # grade cells are too small to send
    with pytest.raises(DataError, match=r"term 'grade\[G1\]'"):
        federate(CoxAnalysis(outcome=RFS, covariates=COVARIATES), tables, 11)
    analysis = CoxAnalysis(outcome=RFS, covariates=numeric, stratified=False, grid_days=30)
    private = federate(analysis, tables, threshold=11)
    assert isinstance(private, RegressionReport)
    frame = pooled_frame({s: design(analysis, t) for s, t in tables.items()})
    names = term_names(analysis)
    exact = sm.PHReg(frame["time"], frame[names], status=frame["event"], ties="breslow").fit()
    shift = (np.array([t.coef for t in private.terms]) - exact.params) / exact.bse
    assert np.all(np.abs(shift) < 0.5)  # carrying and 30-day ties move each coefficient little
    assert 250 < private.events < 299  # a site's last few events are not counted
    few = {c: v[np.flatnonzero(tables["site2"]["rfs_event"] == 1)[:5]] for c, v in gbsg2().items()}
    small = {c: np.concatenate([v, tables["site2"][c]]) for c, v in few.items()}
    small["rfs_event"][5:] = 0.0  # five events at this site
    with pytest.raises(DataError, match="must each be 0 or at least 11 here"):
        federate(CoxAnalysis(outcome=RFS, covariates=numeric), {**tables, "site2": small}, 11)


def test_separation_is_reported_plainly() -> None:
    table = gbsg2()
    label = (table["rfs_event"] == 1) & (table["rfs_days"] <= 1825)
    # a covariate given only to some patients who all recurred within five years
    table["treatment.chemotherapy"] = (label & (table["nodes_positive"] >= 10)).astype(float)
    covariates = [*COVARIATES, Feature(name="treatment.chemotherapy")]
    logistic = federate(LogisticAnalysis(outcome=FIVE_YEARS, covariates=covariates), split(table))
    assert isinstance(logistic, NewtonFailure)
    assert logistic.message.startswith("separation")
    assert "treatment.chemotherapy" in logistic.message and logistic.iterations < 50
    # a covariate given only to censored patients: its hazard ratio goes to 0
    censored_large = (table["rfs_event"] == 0) & (table["tumour_size_mm"] > 40)
    table["treatment.chemotherapy"] = censored_large.astype(float)
    cox = federate(CoxAnalysis(outcome=RFS, covariates=covariates), split(table))
    assert isinstance(cox, NewtonFailure) and cox.message.startswith("separation")
    assert "treatment.chemotherapy" in cox.message


def test_collinear_constant_or_empty_covariates_are_reported_as_singular() -> None:
    table = gbsg2()
    table["tumour_seq"] = np.ones_like(table["rfs_days"])  # constant
    table["ext.size_cm"] = table["tumour_size_mm"] / 10  # collinear with tumour_size_mm
    cases = {
        "tumour_size_mm, ext.size_cm": [*COVARIATES, Feature(name="ext.size_cm")],
        "tumour_seq": [*COVARIATES, Feature(name="tumour_seq")],
        "grade[G4], grade[GX]": [*COVARIATES[:3], Feature(name="grade")],  # empty levels
    }
    for named, covariates in cases.items():
        for analysis in (
            CoxAnalysis(outcome=RFS, covariates=covariates),
            CoxAnalysis(outcome=RFS, covariates=covariates, stratified=False),
            LogisticAnalysis(outcome=FIVE_YEARS, covariates=covariates),
        ):
            failure = federate(analysis, split(table))
            assert isinstance(failure, NewtonFailure), (named, analysis.type)
            assert failure.message.startswith("singular Hessian: a covariate is constant or")
            assert named in failure.message and failure.iterations == 1


def test_iteration_limit_is_reported() -> None:
    analysis = CoxAnalysis(outcome=RFS, covariates=COVARIATES, max_iterations=2)
    failure = federate(analysis, split(gbsg2()))
    assert isinstance(failure, NewtonFailure) and failure.iterations == 2
    assert failure.message.startswith("did not converge in 2 iterations")


def test_heterogeneity_is_large_for_a_planted_site_effect_and_zero_for_identical_sites() -> None:
    table = gbsg2()
    analysis = CoxAnalysis(outcome=RFS, covariates=COVARIATES)
    same = federate(analysis, {"a": table, "b": table, "c": table})
    assert isinstance(same, RegressionReport)
    assert all(h.q == pytest.approx(0.0, abs=1e-9) and h.i2 == 0.0 for h in same.heterogeneity)
    assert all(h.df == 2 and h.p == pytest.approx(1.0) for h in same.heterogeneity)
    tables = split(table, (0.5, 0.5))
    flipped = dict(tables["site1"])
    flipped["treatment.endocrine"] = 1.0 - flipped["treatment.endocrine"]  # reverses its effect
    planted = federate(analysis, {"a": tables["site0"], "b": flipped})
    assert isinstance(planted, RegressionReport)
    by_name = {h.name: h for h in planted.heterogeneity}
    assert by_name["treatment.endocrine"].i2 > 0.8 and by_name["treatment.endocrine"].p < 0.01
    assert by_name["age_at_diagnosis"].i2 < by_name["treatment.endocrine"].i2
    a, b = (planted.sites[s][3] for s in ("a", "b"))
    assert a.coef < 0 < b.coef


def test_a_site_whose_own_fit_fails_is_left_out_of_the_site_estimates() -> None:
    tables = split(gbsg2())
    small = dict(tables["site2"])
    small["grade"] = np.where(small["grade"] == "G1", "G2", small["grade"])  # no G1 here
    analysis = CoxAnalysis(outcome=RFS, covariates=COVARIATES)
    report = federate(analysis, {**tables, "site2": small})
    assert isinstance(report, RegressionReport)
    assert set(report.sites) == {"site0", "site1"}
    assert all(h.df == 1 for h in report.heterogeneity)


def test_step_halving_when_the_log_likelihood_drops() -> None:
    names = ["a"]
    fit = Fit(beta=[2.0], anchor=[0.0], loglik=-10.0, hessian=[[-1.0]], information=[1.0])
    state = NewtonState(names=names, pooled=fit, own={})
    worse = Derivatives(loglik=-12.0, gradient=[-3.0], hessian=[[-1.0]])
    halved = newton_step(state, worse, {}, 1e-9, 50)
    assert isinstance(halved, NewtonState)
    assert halved.pooled.beta == [1.0] and halved.pooled.halvings == 1
    assert halved.pooled.anchor == [0.0] and halved.pooled.loglik == -10.0
    better = Derivatives(loglik=-9.0, gradient=[0.5], hessian=[[-2.0]])
    moved = newton_step(halved, better, {}, 1e-9, 50)
    assert isinstance(moved, NewtonState)
    assert moved.pooled.beta == [1.25] and moved.pooled.anchor == [1.0]
    tiny = Fit(beta=[1e-10], anchor=[0.0], loglik=-10.0, hessian=[[-1.0]], information=[1.0])
    at_anchor = newton_step(NewtonState(names=names, pooled=tiny, own={}), worse, {}, 1e-9, 50)
    assert isinstance(at_anchor, NewtonState) and at_anchor.done
    assert at_anchor.pooled.beta == [0.0]


def test_terms_and_heterogeneity_by_hand() -> None:
    (term,) = terms(["x"], [0.5], [[-4.0]], 0.95)  # se 0.5, z 1
    assert term.se == pytest.approx(0.5) and term.z == pytest.approx(1.0)
    assert term.p == pytest.approx(0.3173105078629141)
    assert term.lower == pytest.approx(0.5 - 1.959963984540054 * 0.5)
    assert term.ratio_upper == pytest.approx(np.exp(term.upper))

    def site(coef: float, se: float) -> list[Term]:
        return terms(["x"], [coef], [[-(se**-2)]], 0.95)

    (h,) = heterogeneity({"a": site(0.0, 1.0), "b": site(2.0, 1.0), "c": site(4.0, 1.0)})
    assert h.q == pytest.approx(8.0) and h.df == 2 and h.i2 == pytest.approx(0.75)
    assert h.p == pytest.approx(np.exp(-4.0))  # chi-squared(2) tail
    (none,) = heterogeneity({"a": site(1.0, 1.0), "b": site(1.1, 1.0)})
    assert none.i2 == 0.0
    assert heterogeneity({"a": site(1.0, 1.0)}) == []


def test_follow_up_beyond_the_horizon_is_censored_at_it() -> None:
    analysis = CoxAnalysis(outcome=RFS, covariates=COVARIATES, horizon_days=1000)
    report = federate(analysis, split(gbsg2()))
    assert isinstance(report, RegressionReport)
    frame = pooled_frame({s: design(analysis, t) for s, t in split(gbsg2()).items()})
    assert frame["time"].max() == 1000.0
    table = gbsg2()
    beyond = table["rfs_days"] > 1000
    assert frame["event"].sum() == (table["rfs_event"][~beyond]).sum() < 299
    cph = CoxPHFitter().fit(frame, "time", "event", strata=["site"], fit_options=TIGHT)
    names = term_names(analysis)
    close(report, cph.params_[names], cph.standard_errors_[names], cph.summary.p[names])
