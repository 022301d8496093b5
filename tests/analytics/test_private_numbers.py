"""Differentially private analyses at the level of numbers: the layouts, the mechanisms'
sensitivities (checked by removing patients, the extreme ones among them), the noise shares,
and the orchestrator's reading of noisy sums."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from oncofed.analytics.design import design
from oncofed.analytics.outcome import Failed, Finished, NextRound, Outcome
from oncofed.analytics.private import add_noise, mechanism, scaling, stated_noise
from oncofed.analytics.secure import secure_layout, secure_values
from oncofed.analytics.secure_close import secure_close
from oncofed.learning.data import Table
from oncofed.orchestrator import analysis as plain
from oncofed.privacy.noise import share_variance, skellam_share
from oncofed.wire.analysis import (
    AnalysisSpec,
    CountsReport,
    LogisticAnalysis,
    RegressionReport,
    SummaryReport,
    SurvivalReport,
)
from tests.analytics.federated import OPEN, RFS, deal, gbsg2, report_of, secure_run, spec

FIVE_YEARS = {"type": "binary", "time": "rfs_days", "event": "rfs_event", "horizon_days": 1825}
BOUNDS = {"age_at_diagnosis": (20, 80), "nodes_positive": (0, 50)}
ANALYSES: dict[str, dict[str, Any]] = {
    "counts": {"type": "counts", "rows": "grade", "columns": "treatment.endocrine"},
    "summary": {"type": "summary", "variable": "age_at_diagnosis", "bins": [30.5, 45.5, 60.5]},
    "kaplan_meier": {"type": "kaplan_meier", "outcome": RFS, "group": "grade", "grid_days": 90},
    "logistic": {
        "type": "logistic", "outcome": FIVE_YEARS,
        "covariates": ["age_at_diagnosis", {"name": "nodes_positive", "transform": "log1p"},
                       {"name": "grade", "levels": ["G1", "G2", "G3"]}, "treatment.endocrine"],
    },
}  # fmt: skip


def private(body: dict[str, Any], epsilon: float = 2.0) -> AnalysisSpec:
    dp: dict[str, Any] = {"epsilon": epsilon, "delta": 1e-5}
    if body["type"] == "logistic":
        names = {c if isinstance(c, str) else c["name"] for c in body["covariates"]}
        dp["bounds"] = {name: bounds for name, bounds in BOUNDS.items() if name in names}
    return AnalysisSpec.model_validate(
        {
            "name": "a",
            "dataset": "gbsg2",
            "analysis": body,
            "privacy": {"secure_aggregation": True, "differential_privacy": dp},
        }
    )


def private_run(
    analysis: AnalysisSpec, tables: dict[str, Table], seed: int, scale: float = 1
) -> Outcome:
    """The private analysis to its end as the edges and the orchestrator run it: each site's
    contribution with its noise share (``scale`` times the calibrated one), summed."""
    rule = mechanism(analysis)
    dp = analysis.privacy.differential_privacy
    assert dp is not None
    share = scale * share_variance(rule.variance(dp.epsilon, dp.delta), 3)
    rng = np.random.default_rng(seed)
    state = plain.start(analysis, list(tables))
    while True:
        parts = [
            add_noise(
                secure_values(analysis, table, plain.params_for(state, site), 1, 10),
                rule,
                share,
                rng,
            )
            for site, table in tables.items()
        ]
        sums = {name: np.sum([part[name] for part in parts], axis=0) for name in parts[0]}
        noise = len(tables) * share * rule.unit**2
        outcome = secure_close(analysis, state, sums, {}, list(tables), 1, noise=noise)
        if not isinstance(outcome, NextRound):
            return outcome
        state = outcome.state


def four_sites() -> dict[str, Table]:
    return deal(gbsg2(), [247, 192, 144, 103], seed=3)


def test_private_layouts_send_signed_numbers() -> None:
    counts = secure_layout(private(ANALYSES["counts"]))
    assert counts["sites"].fraction_bits == 0 and counts["table"].fraction_bits > 0
    summary = secure_layout(private(ANALYSES["summary"]))
    assert list(summary) == ["sites", "histogram", "scaled_total", "scaled_squares"]
    km = secure_layout(private(ANALYSES["kaplan_meier"]))
    assert list(km) == ["sites", "leaving", "events"]
    logistic = secure_layout(private(ANALYSES["logistic"]))
    # intercept, age, log1p(nodes), grade G2 and G3, endocrine: 6 terms
    assert {k: s.shape for k, s in logistic.items()} == {
        "sites": (), "n": (), "events": (), "gradient": (6,), "hessian": (6, 6),
    }  # fmt: skip


def test_mechanisms() -> None:
    assert mechanism(private(ANALYSES["counts"])) == mechanism(private(ANALYSES["counts"], 9))
    km = mechanism(private(ANALYSES["kaplan_meier"]))
    assert (km.unit, km.l1, km.l2, km.rounds) == (1.0, 2.0, math.sqrt(2.0), 1)
    summary = mechanism(private(ANALYSES["summary"]))  # 5 histogram cells and 2 sums
    assert summary.l2 == pytest.approx(math.sqrt(3) / summary.unit + math.sqrt(7))
    rule = mechanism(private(ANALYSES["logistic"]))
    real_l2 = math.sqrt(2 + 6 + 36 / 16)
    assert rule.rounds == 5 and math.log2(rule.unit).is_integer()
    assert 1024 <= real_l2 / rule.unit < 2048
    assert rule.l2 == pytest.approx(real_l2 / rule.unit + math.sqrt(2 + 6 + 36))
    with pytest.raises(ValueError, match="not differentially private"):
        mechanism(spec(ANALYSES["counts"]))


def test_the_scaled_columns_of_every_patient_are_within_one() -> None:
    analysis = private(ANALYSES["logistic"])
    a = analysis.analysis
    assert isinstance(a, LogisticAnalysis)
    ranges, matrix = scaling(a, analysis)
    table = gbsg2()
    table["age_at_diagnosis"] = table["age_at_diagnosis"] + 30  # some beyond the bound of 80
    x = np.clip(design(a, table).x, ranges[:, 0], ranges[:, 1])
    scaled = x @ matrix.T
    assert np.abs(scaled).max() <= 1 + 1e-12 and scaled[:, 1].max() == pytest.approx(1.0)
    beta = np.random.default_rng(0).normal(size=len(ranges))
    back = np.linalg.solve(matrix.T, beta)  # the same model in scaled columns
    np.testing.assert_allclose(x @ beta, scaled @ back)


@pytest.mark.parametrize("name", list(ANALYSES))
def test_removing_any_patient_moves_a_contribution_within_its_sensitivity(name: str) -> None:
    """The attacker's view of a mechanism: for the patients whose removal moves the numbers
    most (extreme ages and nodes among them) and at coefficients far from 0, the change in grid
    steps stays within the mechanism's L1 and L2 sensitivities."""
    analysis = private(ANALYSES[name])
    rule = mechanism(analysis)
    table = gbsg2()
    n = len(table["rfs_days"])
    rng = np.random.default_rng(1)
    extreme = [int(np.argmax(table["age_at_diagnosis"])), int(np.argmax(table["nodes_positive"]))]
    start = plain.params_for(plain.start(analysis, ["s"]), "s")
    betas = [[0.0] * 6, (rng.normal(size=6) * 3).tolist()] if name == "logistic" else [[]]
    for beta in betas:
        params = start and start.model_copy(update={"pooled": beta})
        whole = _steps(secure_values(analysis, table, params, 1, 10), rule.unit)
        for patient in [*extreme, *rng.choice(n, 40, replace=False).tolist()]:
            keep = np.arange(n) != patient
            less = {column: values[keep] for column, values in table.items()}
            change = whole - _steps(secure_values(analysis, less, params, 1, 10), rule.unit)
            assert np.abs(change).sum() <= rule.l1 + 1e-9
            assert np.sqrt((change**2).sum()) <= rule.l2 + 1e-9


def _steps(values: dict[str, np.ndarray], unit: float) -> np.ndarray:
    return np.concatenate(
        [np.rint(np.asarray(v, dtype=float) / unit).ravel() for k, v in values.items()
         if k != "sites"]
    )  # fmt: skip


def test_noise_shares_add_up_to_the_calibrated_variance() -> None:
    rng = np.random.default_rng(2)
    shares = np.sum([skellam_share(rng, share_variance(30.0, 3), (200_000,)) for _ in range(3)], 0)
    assert shares.dtype == np.int64
    assert abs(shares.mean()) < 0.05 and shares.var() == pytest.approx(30.0, rel=0.02)
    values = {"sites": np.array(1), "table": np.array([[3, 0], [7, 1]])}
    rule = mechanism(private(ANALYSES["counts"]))
    noisy = add_noise(values, rule, 4.0, np.random.default_rng(3))
    assert noisy["sites"] == 1 and noisy["table"].dtype == np.float64
    assert (noisy["table"] == np.rint(noisy["table"])).all() and (noisy["table"] != 0).any()
    with pytest.raises(ValueError, match="at least one site"):
        share_variance(1.0, 0)


def test_noisy_counts_are_read_as_counts() -> None:
    analysis = private(ANALYSES["counts"])
    layout = secure_layout(analysis)
    sums = {"sites": np.array(2), "table": -np.ones(layout["table"].shape)}
    sums["table"][1, 0] = 41.4
    outcome = secure_close(analysis, None, sums, {}, ["a", "b"], 1, noise=9.0)
    report = report_of(outcome)
    assert isinstance(report, CountsReport) and report.noise is not None
    assert report.noise.sd == 3.0 and report.pooled.cells[1][0] == 41
    assert report.pooled.cells[0][0] == 0  # a negative noisy count is cut at 0
    huge = {**sums, "table": np.full(layout["table"].shape, 2.0**63)}
    failed = secure_close(analysis, None, huge, {}, ["a", "b"], 1)
    assert isinstance(failed, Failed) and "not a count" in failed.error


def test_noisy_curves_keep_events_within_those_leaving() -> None:
    analysis = private(ANALYSES["kaplan_meier"])
    layout = secure_layout(analysis)
    sums = {name: np.zeros(segment.shape) for name, segment in layout.items()}
    sums["sites"] = np.array(1)
    sums["leaving"][1, :3] = [50, 20, 30]
    sums["events"][1, :3] = [60, -4, 10]  # noise: more events than leaving, and below 0
    report = report_of(secure_close(analysis, None, sums, {}, ["a"], 1))
    assert isinstance(report, SurvivalReport)
    curve = report.groups["G2"]
    assert curve.events[:2] == [50, 0] and curve.at_risk[:2] == [100, 50]
    assert curve.survival[0] == pytest.approx(0.5)


def test_without_noise_the_private_loop_reaches_the_exact_fit() -> None:
    """Five Newton rounds from 0 on the clipped, scaled derivatives give the exact fit of the
    rows within their bounds (every GBSG2 patient is), to the grid's resolution."""
    tables = four_sites()
    exact = report_of(secure_run(spec(ANALYSES["logistic"]), tables, OPEN)[0])
    quiet = report_of(private_run(private(ANALYSES["logistic"]), tables, 0, scale=1e-12))
    assert isinstance(exact, RegressionReport) and isinstance(quiet, RegressionReport)
    for ours, theirs in zip(quiet.terms, exact.terms, strict=True):
        assert ours.coef == pytest.approx(theirs.coef, abs=2e-3)  # the grid's rounding
        assert ours.se == pytest.approx(theirs.se, rel=1e-2)
    assert quiet.loglik is None and quiet.iterations == 5 and quiet.n == exact.n


def test_a_noisy_loop_reports_honest_intervals_at_epsilon_4() -> None:
    tables = four_sites()
    covariates = [*ANALYSES["logistic"]["covariates"][:2], "treatment.endocrine"]
    analysis = private({**ANALYSES["logistic"], "covariates": covariates}, 4.0)
    exact = report_of(secure_run(spec(analysis.analysis.model_dump()), tables, OPEN)[0])
    assert isinstance(exact, RegressionReport)
    z = []
    for seed in range(30):
        outcome = private_run(analysis, tables, seed)
        assert isinstance(outcome, Finished), outcome
        report = outcome.report
        assert isinstance(report, RegressionReport)
        z.append([(a.coef - b.coef) / a.se for a, b in zip(report.terms, exact.terms, strict=True)])
    spread = np.std(z, axis=0)
    assert (spread > 0.3).all() and (spread < 1.6).all(), spread  # noise, and in the intervals


def test_a_term_the_noise_would_estimate_fails_the_analysis() -> None:
    every_grade = {**ANALYSES["logistic"], "covariates": ["age_at_diagnosis", "grade"]}
    outcome = private_run(private(every_grade, 4.0), four_sites(), 0)
    assert isinstance(outcome, Failed) and outcome.error.startswith("too little information on")
    assert "grade[G4], grade[GX] to estimate it under the noise" in outcome.error  # both empty


def test_hostile_sums_and_claims_fail_plainly_or_are_held() -> None:
    """A site that states a huge noise share is held to the calibrated variance; sums whose
    Newton step runs away fail the analysis, naming why, instead of reporting garbage."""
    analysis = private(ANALYSES["logistic"])
    rule = mechanism(analysis)
    dp = analysis.privacy.differential_privacy
    assert dp is not None
    most = rule.variance(dp.epsilon, dp.delta) * rule.unit**2
    assert stated_noise(analysis, [1e30, None, 2.0]) == pytest.approx(most + 2.0)
    assert stated_noise(spec(ANALYSES["counts"]), [1e30]) == 0.0
    layout = secure_layout(analysis)
    sums = {name: np.zeros(segment.shape) for name, segment in layout.items()}
    sums["sites"] = np.array(2)
    sums["hessian"] = -np.eye(6) * 100
    sums["gradient"] = np.full(6, 1e12)
    state = plain.start(analysis, ["a", "b"])
    outcome = secure_close(analysis, state, sums, {}, ["a", "b"], 1, noise=1.0)
    assert isinstance(outcome, Failed) and "has no usable coefficients" in outcome.error


def test_without_noise_a_private_summary_is_the_exact_one() -> None:
    """Every age within the bins' range: the scaled sums give the exact mean and standard
    deviation back, to the grid's resolution; noisy ones stay near them."""
    body = {"type": "summary", "variable": "age_at_diagnosis", "bins": [20, 40, 60, 90]}
    tables = four_sites()
    exact = report_of(secure_run(spec(body), tables, OPEN)[0])
    quiet = report_of(private_run(private(body), tables, 0, scale=1e-12))
    noisy = report_of(private_run(private(body, 4.0), tables, 1))
    assert isinstance(exact, SummaryReport) and isinstance(quiet, SummaryReport)
    assert isinstance(noisy, SummaryReport) and noisy.noise is not None
    assert quiet.pooled.n == exact.pooled.n and quiet.pooled.histogram == exact.pooled.histogram
    assert exact.pooled.mean is not None and exact.pooled.sd is not None
    assert quiet.pooled.mean == pytest.approx(exact.pooled.mean, abs=1e-4)
    assert quiet.pooled.sd == pytest.approx(exact.pooled.sd, abs=1e-4)
    assert noisy.pooled.mean == pytest.approx(exact.pooled.mean, abs=1.0)
    assert noisy.pooled.sd == pytest.approx(exact.pooled.sd, abs=1.0)
    missing = noisy.pooled.histogram[-1]  # no age is missing: noise cut at 0 (threshold 1)
    assert isinstance(missing, int) and missing <= 6 * noisy.noise.sd


def test_a_last_noisy_step_beyond_a_floats_range_fails_the_analysis() -> None:
    """An intercept of 800 after the last round is below the loop's runaway limit but its odds
    ratio, e^800, is no float: the analysis fails, naming it, instead of the orchestrator
    raising. Events above the patients are cut to them."""
    dumped = private(ANALYSES["logistic"]).model_dump()
    dumped["privacy"]["differential_privacy"]["newton_rounds"] = 1
    analysis = AnalysisSpec.model_validate(dumped)
    layout = secure_layout(analysis)
    sums = {name: np.zeros(segment.shape) for name, segment in layout.items()}
    p = layout["gradient"].shape[0]
    sums |= {"sites": np.array(2), "n": np.array(80.0), "events": np.array(95.0)}
    sums["hessian"] = -np.eye(p) * 100
    state = plain.start(analysis, ["a", "b"])
    sums["gradient"] = np.eye(p)[0] * 80_000  # a step of 800 in the intercept
    outcome = secure_close(analysis, state, sums, {}, ["a", "b"], 1, noise=1.0)
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.startswith("the noisy fit after 1 Newton rounds cannot be reported")
    sums["gradient"] = np.eye(p)[0] * 100  # a step of 1
    report = report_of(secure_close(analysis, state, sums, {}, ["a", "b"], 1, noise=1.0))
    assert isinstance(report, RegressionReport) and report.n == report.events == 80


def test_noisy_summary_sums_are_held_to_what_their_values_can_reach() -> None:
    """Noise can push the scaled sums where no values within the bins' range lead: the mean is
    held to the range and the standard deviation to half its width."""
    body = {"type": "summary", "variable": "age_at_diagnosis", "bins": [20, 40, 60, 90]}
    analysis = private(body)
    layout = secure_layout(analysis)
    sums = {name: np.zeros(segment.shape) for name, segment in layout.items()}
    sums["sites"] = np.array(1)
    sums["histogram"][:3] = [10, 20, 10]
    for total, squares, mean, sd in ((55.0, -3.0, 90.0, 0.0), (-9.0, 400.0, 47.125, 34.5)):
        sums |= {"scaled_total": np.array(total), "scaled_squares": np.array(squares)}
        report = report_of(secure_close(analysis, None, sums, {}, ["a"], 1, noise=1.0))
        assert isinstance(report, SummaryReport) and report.pooled.n == 40
        assert report.pooled.mean == pytest.approx(mean, abs=0.1)
        assert report.pooled.sd == pytest.approx(sd, abs=0.5)
