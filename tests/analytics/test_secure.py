"""Secure aggregation of every analysis, sites simulated in process: the layout follows from the
spec alone, with suppression off the secure analysis equals the plain one, disclosure control
applies to the pooled numbers, and a Newton loop needs the same sites in every round."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from oncofed.analytics.newton import NewtonState
from oncofed.analytics.outcome import Failed, NextRound
from oncofed.analytics.secure import MAX_NUMBERS, pack, secure_layout, secure_values, unpack
from oncofed.analytics.secure_close import secure_close
from oncofed.analytics.site import answer
from oncofed.learning.data import DataError
from oncofed.orchestrator import analysis as plain
from oncofed.wire.analysis import (
    CountsReport,
    OwnEstimate,
    RegressionReport,
    SummaryReport,
    SurvivalReport,
    Term,
)
from tests.analytics.federated import (
    OPEN,
    RFS,
    Rules,
    deal,
    gbsg2,
    own_of,
    plain_run,
    pooled_rows,
    report_of,
    secure_round,
    secure_run,
    spec,
    summed,
)

FIVE_YEARS = {"type": "binary", "time": "rfs_days", "event": "rfs_event", "horizon_days": 1825}
COVARIATES: list[Any] = [
    "age_at_diagnosis",
    {"name": "tumour_size_mm", "transform": "log1p"},
    {"name": "nodes_positive", "transform": "log1p"},
    {"name": "grade", "levels": ["G1", "G2", "G3"]},
    "treatment.endocrine",
]
ANALYSES: dict[str, dict[str, Any]] = {
    "counts": {"type": "counts", "rows": "grade"},
    "crosstab": {"type": "counts", "rows": "grade", "columns": "treatment.endocrine"},
    "summary": {"type": "summary", "variable": "age_at_diagnosis", "bins": [30.5, 45.5, 60.5]},
    "kaplan_meier": {"type": "kaplan_meier", "outcome": RFS, "group": "grade", "grid_days": 1},
    "cox": {"type": "cox", "outcome": RFS, "covariates": COVARIATES},
    "cox_unstratified": {
        "type": "cox", "outcome": RFS, "covariates": COVARIATES, "stratified": False,
        "grid_days": 7,
    },
    "logistic": {"type": "logistic", "outcome": FIVE_YEARS, "covariates": COVARIATES},
}  # fmt: skip


def four_sites() -> dict[str, dict[str, np.ndarray]]:
    return deal(gbsg2(), [300, 200, 120, 66], seed=3)


@pytest.mark.parametrize("name", list(ANALYSES))
def test_the_layout_follows_from_the_spec_alone(name: str) -> None:
    """A large site and a tiny one (three patients, no event, no grade) send arrays of the
    same shapes, in the same order: the layout's."""
    analysis = spec(ANALYSES[name])
    table = gbsg2()
    tiny = {c: v[:3] for c, v in table.items()}
    tiny["rfs_event"] = np.zeros(3)
    tiny["grade"] = np.array([None] * 3, dtype=object)
    big = {c: v[3:] for c, v in table.items()}
    state = plain.start(analysis, ["big", "tiny"])
    shapes = []
    for site, rows in (("big", big), ("tiny", tiny)):
        values = secure_values(analysis, rows, plain.params_for(state, site), 1, 10)
        shapes.append([(key, value.shape) for key, value in values.items()])
        assert int(values["sites"]) == 1
    layout = secure_layout(analysis)
    assert shapes[0] == shapes[1] == [(key, s.shape) for key, s in layout.items()]


def test_layouts_by_hand() -> None:
    km = secure_layout(spec({"type": "kaplan_meier", "outcome": RFS, "group": "grade"}))
    # five grades, 7305 // 30 + 1 = 244 bins up to the 20-year horizon
    assert {k: s.shape for k, s in km.items()} == {
        "sites": (), "at_risk": (5, 244), "events": (5, 244), "missing": (), "unusable": (),
    }  # fmt: skip
    assert all(s.fraction_bits == 0 for s in km.values())
    cox = secure_layout(
        spec({"type": "cox", "outcome": RFS, "covariates": ["age_at_diagnosis", "grade"],
              "stratified": False, "grid_days": 30, "horizon_days": 3650})
    )  # fmt: skip
    # terms: age and the grade levels after G1 (G2, G3, G4, GX); groups: G2..GX and G1
    assert {k: s.shape for k, s in cox.items()} == {
        "sites": (), "n": (), "events": (), "members": (5,), "member_events": (5,),
        "both": (5, 5), "bin_events": (122,), "s0": (122,), "s1": (122, 5), "s2": (122, 15),
        "event_x": (5,),
    }  # fmt: skip
    assert cox["s0"].fraction_bits > 0 and cox["bin_events"].fraction_bits == 0
    logistic = secure_layout(spec({"type": "logistic", "outcome": FIVE_YEARS,
                                   "covariates": ["age_at_diagnosis"]}))  # fmt: skip
    assert list(logistic) == ["sites", "n", "events", "loglik", "gradient", "hessian"]


def test_a_layout_too_large_is_refused() -> None:
    many = [{"name": f"ext.x{i}"} for i in range(100)]
    big = {"type": "cox", "outcome": RFS, "covariates": many, "stratified": False}
    with pytest.raises(ValueError, match="choose a coarser grid_days, a shorter horizon_days"):
        secure_layout(spec(big))
    assert sum(s.size for s in secure_layout(spec({**big, "grid_days": 365})).values()) < (
        MAX_NUMBERS
    )


def test_packed_triangles_round_trip() -> None:
    square = np.random.default_rng(0).normal(size=(4, 3, 3))
    square = square + square.transpose(0, 2, 1)
    assert pack(square).shape == (4, 6)
    np.testing.assert_array_equal(unpack(pack(square), 3), square)


@pytest.mark.parametrize("name", ["counts", "crosstab", "summary", "kaplan_meier"])
def test_with_suppression_off_a_one_round_analysis_equals_the_plain_one(name: str) -> None:
    analysis, tables = spec(ANALYSES[name]), four_sites()
    secure = report_of(secure_round(analysis, None, tables, OPEN))
    expected = report_of(plain_run(analysis, tables))
    assert secure.secure_sites == sorted(tables)
    if isinstance(secure, CountsReport):
        assert isinstance(expected, CountsReport) and secure.sites == {}
        assert secure.pooled == expected.pooled
    elif isinstance(secure, SummaryReport):
        assert isinstance(expected, SummaryReport) and secure.sites == {}
        assert secure.pooled.histogram == expected.pooled.histogram
        assert secure.pooled.n == expected.pooled.n
        assert secure.pooled.mean == pytest.approx(expected.pooled.mean, rel=1e-14)
        assert secure.pooled.sd == pytest.approx(expected.pooled.sd, rel=1e-12)
    else:
        assert isinstance(secure, SurvivalReport)
        assert secure.model_copy(update={"secure_sites": None}) == expected


@pytest.mark.parametrize("name", ["cox", "cox_unstratified", "logistic"])
def test_with_suppression_off_a_regression_equals_the_plain_one(name: str) -> None:
    analysis, tables = spec(ANALYSES[name]), four_sites()
    outcome, states = secure_run(analysis, tables, OPEN)
    secure, expected = report_of(outcome), report_of(plain_run(analysis, tables))
    assert isinstance(secure, RegressionReport) and isinstance(expected, RegressionReport)
    assert (secure.n, secure.events, secure.iterations) == (
        expected.n,
        expected.events,
        expected.iterations,
    )
    ours, theirs = secure.terms, expected.terms
    np.testing.assert_allclose([t.coef for t in ours], [t.coef for t in theirs], atol=1e-9)
    np.testing.assert_allclose([t.se for t in ours], [t.se for t in theirs], rtol=1e-9)
    assert secure.loglik == pytest.approx(expected.loglik, rel=1e-12)
    # each site's own fit, run at the site to its end, is the plain loop's own fit of it (the
    # same steps on the same derivatives, to the last bit); site03's fails the same way too
    assert list(secure.sites) == ["site00", "site01", "site02"]
    assert secure.sites == expected.sites and secure.heterogeneity == expected.heterogeneity
    assert secure.pooled_only == expected.pooled_only
    assert list(secure.pooled_only) == ["site03"]  # 66 patients: a separated or empty level
    assert secure.pooled_only["site03"].startswith("its own fit failed: ")
    if name == "cox_unstratified":  # the sums were taken around a moving offset
        assert any(abs(state.offset) > 0.1 for state in states)


def test_pooled_counts_are_suppressed_with_their_complements() -> None:
    """Three grade-G4 patients, one at each of three sites, and 40 with a missing grade: the
    pooled G4 cell is hidden, and a partner with it in its row and its column."""
    tables = deal(gbsg2(), [200, 150, 100], seed=1)
    for table in tables.values():
        table["grade"][0] = "G4"
    tables["site00"]["grade"][1:41] = None
    analysis = spec(ANALYSES["crosstab"])
    report = report_of(secure_round(analysis, None, tables))
    assert isinstance(report, CountsReport) and report.sites == {}
    cells = report.pooled.cells
    g4 = report.pooled.rows.index("G4")
    assert sum(isinstance(c, str) for c in cells[g4]) >= 2  # its row total, or another level
    hidden = [c for c in cells[g4][:2] if c == "<11"]
    assert len(hidden) >= 1
    column = report.pooled.columns.index("1") if cells[g4][1] == "<11" else 0
    assert sum(isinstance(row[column], str) for row in cells) >= 2
    for row in cells:
        assert all(isinstance(c, str) or c == 0 or c >= 11 for c in row)
    # the same algorithm on the pooled rows as if one site held them
    one_site = answer(analysis, pooled_rows(tables), None, 11, 10, 20, 10)
    assert cells == one_site.cells  # type: ignore[union-attr]


def test_pooled_summaries_and_curves_are_those_of_the_pooled_rows() -> None:
    tables = deal(gbsg2(), [15, 18, 12, 20, 16, 14], seed=2)  # every site alone below 20
    tables["site03"]["age_at_diagnosis"][0] = 25.0  # the only patient below 30.5
    rows = pooled_rows(tables)
    for name in ("summary", "kaplan_meier"):
        analysis = spec({**ANALYSES[name], "grid_days": 30} if name == "kaplan_meier"
                        else ANALYSES[name])  # fmt: skip
        report = report_of(secure_round(analysis, None, tables))
        expected = report_of(plain_run(analysis, {"pooled": rows}, Rules()))
        assert isinstance(report, SummaryReport | SurvivalReport)
        if isinstance(report, SummaryReport):
            assert isinstance(expected, SummaryReport)
            assert report.pooled.histogram == expected.pooled.histogram
            assert report.pooled.mean == pytest.approx(expected.pooled.mean, rel=1e-14)
            assert report.pooled.histogram[0] == "<11"
        else:
            assert report.groups == expected.groups and report.withheld == expected.withheld
            assert "G1" in report.withheld  # too few G1 patients over all sites
            for curve in report.groups.values():
                assert all(n >= 11 for n in curve.at_risk)
                assert all(d == 0 or d >= 11 for d in curve.events)


def test_a_small_pooled_group_fails_the_regression_naming_it() -> None:
    """Endocrine therapy for five patients in all (one or two per site) is a small pooled
    group: the analysis fails naming the term, whatever its transform; at each site alone the
    check is left to the pooled numbers."""
    tables = deal(gbsg2(), [120, 100, 90], seed=5)
    for k, table in enumerate(tables.values()):
        table["treatment.endocrine"][:] = 0.0
        table["treatment.endocrine"][: 1 + k % 2] = 1.0
    for endocrine in ("treatment.endocrine", {"name": "treatment.endocrine", "transform": "log1p"}):
        analysis = spec({"type": "cox", "outcome": RFS,
                         "covariates": ["age_at_diagnosis", endocrine]})  # fmt: skip
        outcome = secure_round(analysis, plain.start(analysis, list(tables)), tables)
        assert isinstance(outcome, Failed)
        name = "log1p(treatment.endocrine)" if isinstance(endocrine, dict) else endocrine
        assert outcome.error == (
            f"the pooled result may not be released: term {name!r}: the patients with and "
            "without it, and those with and without the outcome among each, must each be 0 "
            "or at least 11 over all sites"
        )


def test_a_small_pooled_pair_of_groups_fails_the_regression() -> None:
    tables = deal(gbsg2(), [200, 200, 200], seed=6)
    for table in tables.values():  # two G3 patients per site with endocrine therapy
        g3 = table["grade"] == "G3"
        table["treatment.endocrine"][g3] = 0.0
        table["treatment.endocrine"][np.flatnonzero(g3)[:2]] = 1.0
    analysis = spec({"type": "logistic", "outcome": FIVE_YEARS,
                     "covariates": ["treatment.endocrine", "grade"]})  # fmt: skip
    outcome = secure_round(analysis, plain.start(analysis, list(tables)), tables)
    assert isinstance(outcome, Failed)
    assert "terms 'treatment.endocrine' and 'grade[G3]'" in outcome.error
    assert "with both, either or neither must each be 0 or at least 11 over all sites" in (
        outcome.error
    )


def test_a_site_leaving_a_secure_newton_loop_fails_it() -> None:
    tables = four_sites()
    analysis = spec(ANALYSES["cox"])
    first = secure_round(analysis, plain.start(analysis, list(tables)), tables, OPEN)
    assert isinstance(first, NextRound)
    three = {site: table for site, table in tables.items() if site != "site02"}
    second = secure_round(analysis, first.state, three, OPEN)
    assert isinstance(second, Failed)
    assert second.error == (
        "site(s) site02 left the analysis at Newton iteration 2: a secure analysis needs the "
        "same sites in every round, else two sums differing by one site would reveal it"
    )
    sums = summed(analysis, tables, first.state, OPEN)
    without = first.state.only(["site00", "site01", "site02"])
    joined = secure_close(analysis, without, sums, {}, list(tables), 1)
    assert isinstance(joined, Failed)
    assert joined.error.startswith("site(s) site03 joined the analysis at Newton iteration 2")


def test_a_site_missing_from_the_first_round_takes_no_part() -> None:
    tables = four_sites()
    three = {site: table for site, table in tables.items() if site != "site03"}
    analysis = spec(ANALYSES["logistic"])
    state = plain.start(analysis, list(tables))  # all four were sent the first round
    outcome = secure_round(analysis, state, three, OPEN)
    assert isinstance(outcome, NextRound) and set(outcome.state.sites) == set(three)
    without = report_of(secure_run(analysis, three, OPEN)[0])
    rounds = [outcome]
    while isinstance(rounds[-1], NextRound):
        rounds.append(secure_round(analysis, rounds[-1].state, three, OPEN))
    assert report_of(rounds[-1]) == without


def test_site_estimates_come_only_from_sites_that_share_them() -> None:
    tables = deal(gbsg2(), [250, 200, 150, 16], seed=8)
    analysis = spec({"type": "cox", "outcome": RFS,
                     "covariates": ["age_at_diagnosis", "treatment.endocrine"]})  # fmt: skip
    outcome, _ = secure_run(analysis, tables, Rules(), private={"site01"})
    report = report_of(outcome)
    assert isinstance(report, RegressionReport)
    assert list(report.sites) == ["site00", "site02"]
    assert report.pooled_only == {
        "site01": "no estimates of its own: it sent none",
        "site03": "no estimates of its own: fewer than 20 patients with complete data here "
        "(policy min_cohort_size)",
    }
    assert report.n == 616 and report.secure_sites == sorted(tables)  # every patient counted
    assert [h.df for h in report.heterogeneity] == [1, 1]


def test_an_own_estimate_on_the_wire_is_a_fit_or_a_reason() -> None:
    """The terms with their iterations, why the fit failed, or why it is withheld: one of them,
    and never derivatives."""
    term = Term(name="a", coef=0.1, se=0.2, lower=-0.3, upper=0.5, z=0.5, p=0.6, ratio=1.1,
                ratio_lower=0.7, ratio_upper=1.6)  # fmt: skip
    assert OwnEstimate(terms=[term], iterations=4).terms == [term]
    assert OwnEstimate(failed="separation").failed == "separation"
    assert OwnEstimate(withheld="policy").withheld == "policy"
    for wrong in ({}, {"terms": [term]}, {"iterations": 4, "failed": "separation"},
                  {"failed": "separation", "withheld": "policy"},
                  {"terms": [term], "iterations": 4, "withheld": "policy"}):  # fmt: skip
        with pytest.raises(ValueError, match="give the terms and iterations, why the fit"):
            OwnEstimate.model_validate(wrong)
    d = {"loglik": -1.0, "gradient": [0.0], "hessian": [[-1.0]]}
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        OwnEstimate.model_validate({"derivatives": d})


def test_a_secure_loop_sends_no_own_coefficients_and_tracks_no_own_fits() -> None:
    """Every round sends the pooled coefficients alone; the loop's state holds the sites' own
    fits as they sent them in the first round, and no fit of theirs moves with it."""
    tables = four_sites()
    analysis = spec(ANALYSES["logistic"])
    _, states = secure_run(analysis, tables, OPEN)
    assert len(states) > 3
    for state in states:
        assert state.own == {} and state.local is not None
        assert [state.params(site).own for site in tables] == [[]] * 4
    first = states[0].local
    assert first == {site: own_of(analysis, table, OPEN) for site, table in tables.items()}
    assert all(state.local == first for state in states)


def test_own_fits_that_do_not_fit_are_not_used() -> None:
    tables = four_sites()
    analysis = spec(ANALYSES["cox"])
    state = plain.start(analysis, list(tables))
    sums = summed(analysis, tables, state, OPEN)
    right = own_of(analysis, tables["site01"], OPEN)
    assert right.terms is not None and right.iterations is not None
    slow = right.model_copy(update={"iterations": 51})  # beyond the spec's 50
    own = {
        "site00": OwnEstimate(withheld="kept here"),
        "site01": right.model_copy(update={"terms": right.terms[:-1]}),
        "site02": slow,
    }
    outcome = secure_close(analysis, state, sums, own, list(tables), 1)
    assert isinstance(outcome, NextRound) and outcome.state.local is not None
    wrong = OwnEstimate(withheld="its own fit does not fit the spec's terms or iterations")
    assert outcome.state.local == {
        "site00": OwnEstimate(withheld="kept here"),
        "site01": wrong,
        "site02": wrong,
        "site03": OwnEstimate(withheld="it sent none"),
    }


def test_a_sum_that_does_not_fit_fails_plainly() -> None:
    tables = four_sites()
    km = spec(ANALYSES["kaplan_meier"])
    sums = summed(km, tables, None, OPEN)
    short = secure_close(km, None, sums, {}, list(tables)[:3], 1)
    assert isinstance(short, Failed)
    assert short.error == "the secure sum cannot be used: the sum holds 4 sites, not the 3 listed"
    wrong = secure_close(km, None, {**sums, "events": sums["events"][:, :10]}, {}, list(tables), 1)
    assert isinstance(wrong, Failed) and "segment 'events' has shape (5, 10)" in wrong.error
    negative = secure_close(km, None, {**sums, "missing": np.array(-1)}, {}, list(tables), 1)
    assert isinstance(negative, Failed) and "'missing' holds a value that is not a count" in (
        negative.error
    )
    huge = {**sums, "missing": np.array(1 << 70, dtype=object)}  # decoded from the wide ring
    assert "'missing' holds a value that is not a count" in str(
        secure_close(km, None, huge, {}, list(tables), 1)
    )
    exact = {name: value.astype(object) for name, value in sums.items()}  # Python integers
    assert secure_close(km, None, exact, {}, list(tables), 1) == secure_close(
        km, None, sums, {}, list(tables), 1
    )
    more = {**sums, "events": sums["events"] + sums["at_risk"]}
    impossible = secure_close(km, None, more, {}, list(tables), 1)
    assert isinstance(impossible, Failed) and "more events than patients" in impossible.error


def test_a_regression_task_without_coefficients_is_declined() -> None:
    with pytest.raises(DataError, match="carries no coefficients"):
        secure_values(spec(ANALYSES["cox"]), gbsg2(), None, 11, 10)


def test_the_newton_state_carries_the_offset_to_the_sites() -> None:
    state = NewtonState.start(["a"], ["x"]).model_copy(update={"offset": 1.5})
    assert state.params("x").offset == 1.5
    assert NewtonState.from_json(state.to_json()).offset == 1.5
