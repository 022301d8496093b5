"""A site's declines before it sends regression derivatives: too few complete cases, a small
number left out as incomplete, and 0/1 terms (or reference levels) describing small groups. No
decline message carries a count."""

from __future__ import annotations

import re

import numpy as np
import pytest
from lifelines.datasets import load_gbsg2

from oncofed.analytics.design import (
    check_cells,
    design,
    known_groups,
    known_indicators,
    site_part,
)
from oncofed.analytics.secure import secure_values
from oncofed.analytics.site import answer
from oncofed.learning.data import DataError
from oncofed.wire.analysis import AnalysisParams, AnalysisSpec, CoxAnalysis, LogisticAnalysis
from oncofed.wire.spec import BinaryOutcome, Feature, SurvivalOutcome

GRADE = Feature(name="grade", levels=["G1", "G2", "G3"])
ENDOCRINE = Feature(name="treatment.endocrine")
RFS = SurvivalOutcome(time="rfs_days", event="rfs_event")
FIVE_YEARS = BinaryOutcome(time="rfs_days", event="rfs_event", horizon_days=1825)
LEVELS = 10  # the policy's default discrete_levels


def gbsg2() -> dict[str, np.ndarray]:
    d = load_gbsg2()
    return {
        "age_at_diagnosis": d["age"].to_numpy(float),
        "grade": d["tgrade"].map({"I": "G1", "II": "G2", "III": "G3"}).to_numpy(object),
        "treatment.endocrine": d["horTh"].eq("yes").to_numpy(float),
        "rfs_days": d["time"].to_numpy(float),
        "rfs_event": d["cens"].to_numpy(float),
    }


def spec(analysis: CoxAnalysis | LogisticAnalysis) -> AnalysisSpec:
    return AnalysisSpec(name="job", dataset="gbsg2", analysis=analysis)


def zeros(width: int) -> AnalysisParams:
    return AnalysisParams(pooled=[0.0] * width, own=[0.0] * width)


def declines(call: object, *args: object, match: str, names: tuple[str, ...] = ()) -> str:
    """The decline's message, checked to hold ``match`` and no number but the rules' (0, the
    threshold 11, the minimum cohort 50), ``names`` aside."""
    with pytest.raises(DataError, match=match) as caught:
        call(*args)  # type: ignore[operator]
    message = str(caught.value)
    for name in names:
        message = message.replace(name, "")
    assert set(re.findall(r"\d+", message)) <= {"0", "11", "50"}, message
    return str(caught.value)


def test_a_regression_declines_below_the_minimum_cohort() -> None:
    cox = CoxAnalysis(outcome=RFS, covariates=[Feature(name="age_at_diagnosis")])
    table = {c: v[:40] for c, v in gbsg2().items()}
    declines(answer, spec(cox), table, zeros(1), 11, 1, 50, LEVELS, match="min_cohort_size")
    assert answer(spec(cox), table, zeros(1), 11, 1, 40, LEVELS).type == "regression"


@pytest.mark.parametrize(("blanked", "ok"), [(0, True), (5, False), (10, False), (11, True)])
def test_the_patients_left_out_as_incomplete_are_0_or_at_least_the_threshold(
    blanked: int, ok: bool
) -> None:
    cox = CoxAnalysis(outcome=RFS, covariates=[Feature(name="age_at_diagnosis")])
    table = gbsg2()
    table["age_at_diagnosis"][:blanked] = np.nan
    if ok:
        part = answer(spec(cox), table, zeros(1), 11, 1, 1, LEVELS)
        assert part.type == "regression" and part.n == 686 - blanked
    else:
        declines(
            answer, spec(cox), table, zeros(1), 11, 1, 1, LEVELS,
            match=r"the patients left out here \(those without a value of age_at_diagnosis\)",
            names=("age_at_diagnosis",),
        )  # fmt: skip


def test_a_decline_names_why_patients_are_left_out() -> None:
    """Patients censored event-free before a logistic model's horizon have no label: the
    decline says so (and names every other cause found), never how many."""
    full, horizon = gbsg2(), 365
    early = (full["rfs_event"] == 0) & (full["rfs_days"] < horizon)
    keep = ~early
    keep[np.flatnonzero(early)[:5]] = True  # 5 of the 28 patients censored before day 365
    table = {c: v[keep] for c, v in full.items()}
    censored_early = early[keep]
    outcome = BinaryOutcome(time="rfs_days", event="rfs_event", horizon_days=horizon)
    logistic = LogisticAnalysis(outcome=outcome, covariates=[Feature(name="age_at_diagnosis")])
    message = declines(
        answer, spec(logistic), table, zeros(2), 11, 1, 1, LEVELS,
        match="those censored before the 365-day horizon", names=("365",),
    )  # fmt: skip
    assert "incomplete" not in message
    table["grade"][np.flatnonzero(~censored_early)[:2]] = "GX"
    both = LogisticAnalysis(outcome=outcome, covariates=[Feature(name="age_at_diagnosis"), GRADE])
    declines(
        answer, spec(both), table, zeros(4), 11, 1, 1, LEVELS,
        match="those without a grade of G1, G2, G3, censored before the 365-day horizon",
        names=("365", "G1", "G2", "G3"),
    )  # fmt: skip
    declines(
        answer, spec(both), table, zeros(4), 11, 1, 700, LEVELS,
        match="fewer than 700 patients with complete data here .policy min_cohort_size.; left "
        "out: those without a grade of G1, G2, G3, censored before the 365-day horizon",
        names=("365", "700", "G1", "G2", "G3"),
    )  # fmt: skip


def test_the_logistic_hessian_at_zero_tells_a_0_1_column_count_exactly() -> None:
    """Why 0/1 terms are checked: -4 H and the gradient at 0 give counts and events."""
    logistic = LogisticAnalysis(outcome=FIVE_YEARS, covariates=[GRADE])
    data = design(logistic, gbsg2())
    part = site_part(logistic, data, zeros(3), 1, LEVELS)
    assert part.type == "regression"
    hessian, gradient = np.asarray(part.pooled.hessian), np.asarray(part.pooled.gradient)
    g3 = data.x[:, 2] == 1
    assert -4 * hessian[0, 2] == pytest.approx(g3.sum())
    assert gradient[2] + hessian[0, 2] * -2 == pytest.approx(data.label[g3].sum())


@pytest.mark.parametrize("model", ["logistic", "cox"])
def test_a_small_group_of_a_0_1_covariate_is_declined(model: str) -> None:
    table = gbsg2()
    table["treatment.endocrine"][:] = 0.0
    table["treatment.endocrine"][:10] = 1.0  # ten treated patients
    analysis: CoxAnalysis | LogisticAnalysis = (
        CoxAnalysis(outcome=RFS, covariates=[ENDOCRINE])
        if model == "cox"
        else LogisticAnalysis(outcome=FIVE_YEARS, covariates=[ENDOCRINE])
    )
    data = design(analysis, table)
    width = len(data.names)
    message = declines(
        site_part,
        analysis,
        data,
        zeros(width),
        11,
        LEVELS,
        match="'treatment.endocrine'",
        names=("treatment.endocrine",),
    )
    assert "0 or at least 11" in message
    site_part(analysis, data, zeros(width), 1, LEVELS)  # threshold 1: suppression off


def test_the_events_among_a_level_and_the_reference_level_are_checked() -> None:
    table = gbsg2()
    cox = CoxAnalysis(outcome=RFS, covariates=[GRADE])
    g1 = np.flatnonzero(table["grade"] == "G1")
    table["rfs_event"][g1] = 0.0
    table["rfs_event"][g1[:3]] = 1.0  # three events at the reference level G1
    declines(
        check_cells,
        cox,
        design(cox, table),
        11,
        LEVELS,
        match="'grade\\[G1\\]'",
        names=("grade[G1]",),
    )
    table["rfs_event"][g1[:11]] = 1.0
    check_cells(cox, design(cox, table), 11, LEVELS)
    g3 = np.flatnonzero(table["grade"] == "G3")
    table["rfs_event"][g3[5:]] = 1.0  # five G3 patients without an event
    table["rfs_event"][g3[:5]] = 0.0
    declines(
        check_cells,
        cox,
        design(cox, table),
        11,
        LEVELS,
        match="'grade\\[G3\\]'",
        names=("grade[G3]",),
    )
    declines(
        answer,
        spec(cox),
        table,
        zeros(2),
        11,
        1,
        1,
        LEVELS,
        match="'grade\\[G3\\]'",
        names=("grade[G3]",),
    )


def test_two_terms_whose_joint_group_is_small_are_refused() -> None:
    """At the first round X'X holds the patients with both of two 0/1 terms: endocrine therapy
    given to only 5 grade-G3 patients would be sent exactly, so the site declines."""
    table = gbsg2()
    g3 = np.flatnonzero(table["grade"] == "G3")
    endocrine = np.zeros(len(g3))
    endocrine[:5] = 1.0
    table["treatment.endocrine"][g3] = endocrine
    cox = CoxAnalysis(outcome=RFS, covariates=[GRADE, ENDOCRINE])
    data = design(cox, table)
    message = declines(
        check_cells, cox, data, 11, LEVELS, match="with both, either or neither",
        names=("grade[G3]", "grade[G2]", "grade[G1]"),
    )  # fmt: skip
    assert "treatment.endocrine" in message and "grade[G3]" in message
    table["treatment.endocrine"][g3] = 0.0  # nobody in G3: a zero is no small group
    check_cells(cox, design(cox, table), 11, LEVELS)


def test_log1p_of_a_flag_is_still_a_group_of_patients() -> None:
    """The bypass of issue 8: log1p(endocrine) takes the values 0 and log 2, not 0 and 1, yet
    its derivatives give the 7 treated patients and their 2 events away. Two distinct values
    make it an indicator, whatever produced them."""
    table = gbsg2()
    table["treatment.endocrine"][:] = 0.0
    treated = np.concatenate([np.flatnonzero(table["rfs_event"] == 1)[:2],
                              np.flatnonzero(table["rfs_event"] == 0)[:5]])  # fmt: skip
    table["treatment.endocrine"][treated] = 1.0
    flag = Feature(name="treatment.endocrine", transform="log1p")
    logistic = LogisticAnalysis(
        outcome=BinaryOutcome(label="rfs_event"),
        covariates=[Feature(name="age_at_diagnosis"), flag],
    )
    column = design(logistic, table).x[:, 2]
    assert set(np.unique(column)) == {0.0, np.log(2.0)}  # not a 0/1 column
    for analysis in (logistic, CoxAnalysis(outcome=RFS, covariates=[flag])):
        width = len(design(analysis, table).names)
        term = "log1p(treatment.endocrine)"
        declines(answer, spec(analysis), table, zeros(width), 11, 1, 50, LEVELS,
                 match=re.escape(f"term {term!r}"), names=(term,))  # fmt: skip
    assert answer(spec(logistic), table, zeros(3), 1, 1, 50, LEVELS).type == "regression"


def test_a_numeric_column_with_few_values_describes_groups() -> None:
    """A column with at most ``discrete_levels`` distinct values here: each value's patients
    and the events among them must be 0 or at least the threshold; one with two values is an
    indicator of either, checked in pairs too."""
    table = gbsg2()
    n = len(table["rfs_days"])
    score = np.zeros(n)
    score[: n // 2] = 1.0
    score[:4] = 2.0  # four patients score 2
    table["ext.score"] = score
    cox = CoxAnalysis(outcome=RFS, covariates=[Feature(name="ext.score")])
    message = declines(check_cells, cox, design(cox, table), 11, LEVELS, match="'ext.score'",
                       names=("ext.score",))  # fmt: skip
    assert "takes few distinct values here (policy discrete_levels)" in message
    check_cells(cox, design(cox, table), 11, 2)  # three values: not discrete for this policy
    table["ext.score"] = np.where(score == 2.0, 7.0, 3.0)  # two values: 4 patients at 7
    declines(check_cells, cox, design(cox, table), 11, 2, names=("ext.score",),
             match="'ext.score': the patients with and without it")  # fmt: skip
    table["ext.score"] = table["age_at_diagnosis"] + 0.5  # many values: a number
    check_cells(cox, design(cox, table), 11, LEVELS)


def test_under_secure_aggregation_a_site_checks_only_what_the_spec_cannot_know() -> None:
    """Three treated patients here are left to the pooled check (the spec knows the flag); a
    numeric extension column with three patients at one of its two values is declined here."""
    table = {c: v[:150] for c, v in gbsg2().items()}
    table["treatment.endocrine"][:] = 0.0
    table["treatment.endocrine"][:3] = 1.0
    table["ext.marker"] = np.where(np.arange(150) < 3, 5.0, 0.0)
    flag = AnalysisSpec(name="job", dataset="gbsg2", analysis=CoxAnalysis(
        outcome=RFS, covariates=[Feature(name="age_at_diagnosis"), ENDOCRINE]))  # fmt: skip
    values = secure_values(flag, table, zeros(2), 11, LEVELS)
    assert values["members"].tolist() == [3]
    with pytest.raises(DataError, match=r"treatment\.endocrine"):
        answer(flag, table, zeros(2), 11, 1, 50, LEVELS)  # a plain round: declined here
    marker = AnalysisSpec(name="job", dataset="gbsg2", analysis=CoxAnalysis(
        outcome=RFS, covariates=[Feature(name="ext.marker")]))  # fmt: skip
    with pytest.raises(DataError, match=r"term 'ext\.marker': the patients with"):
        secure_values(marker, table, zeros(1), 11, LEVELS)


def test_under_secure_aggregation_a_small_site_sends_its_measurements() -> None:
    """Twelve patients: age and nodes take few values here, each held by one or two patients,
    which a plain round declines; a secure round sends them (the pooled sum hides them)."""
    table = {c: v[:12] for c, v in gbsg2().items()}
    table["nodes_positive"] = np.array([0, 0, 1, 1, 2, 3, 3, 4, 5, 8, 0, 1], dtype=float)
    cox = CoxAnalysis(outcome=RFS, covariates=[Feature(name="age_at_diagnosis"),
                      Feature(name="nodes_positive", transform="log1p")])  # fmt: skip
    job = spec(cox)
    with pytest.raises(DataError, match="nodes_positive"):
        check_cells(cox, design(cox, table), 11, LEVELS)
    values = secure_values(job, table, zeros(2), 11, LEVELS)
    assert values["n"] == 12 and "members" not in values


def test_ecog_values_are_groups_the_spec_knows() -> None:
    """ECOG allows 0 to 5: each value is a known group, counted under any transform, so its
    small groups are checked on the pooled counts, not here."""
    table = {c: v[:40] for c, v in gbsg2().items()}
    table["ecog"] = np.array([0.0] * 30 + [1.0] * 8 + [3.0] * 2)
    for transform in ("none", "log1p"):
        cox = CoxAnalysis(outcome=RFS, covariates=[Feature(name="ecog", transform=transform)])
        term = "log1p(ecog)" if transform == "log1p" else "ecog"
        assert known_groups(cox) == [f"{term}={v}" for v in range(6)]
        members = known_indicators(cox, design(cox, table)).sum(axis=0)
        assert members.tolist() == [30, 8, 0, 2, 0, 0]
        check_cells(cox, design(cox, table), 11, LEVELS, secure=True)
        with pytest.raises(DataError, match=re.escape(term)):
            check_cells(cox, design(cox, table), 11, LEVELS)
