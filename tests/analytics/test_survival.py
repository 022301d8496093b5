"""Kaplan-Meier on a grid: hand-counted series, the carried counts that keep every published
count 0 or at least the threshold, and the pooled curve, its confidence interval and the
log-rank test against lifelines on the pooled rows of real cohorts split into unequal sites."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.datasets import load_gbsg2, load_rossi
from lifelines.statistics import multivariate_logrank_test

from oncofed.analytics.survival import pooled_survival, site_series, site_survival
from oncofed.wire.analysis import (
    Curve,
    KaplanMeierAnalysis,
    SurvivalPart,
    SurvivalReport,
    SurvivalSeries,
)
from oncofed.wire.spec import SurvivalOutcome

OS = SurvivalOutcome(time="os_days", event="os_event")
GRADES = {"I": "G1", "II": "G2", "III": "G3"}


def _gbsg2() -> pd.DataFrame:
    """The German Breast Cancer Study Group cohort (days) in the model's terms."""
    cohort = load_gbsg2()
    return pd.DataFrame(
        {
            "os_days": cohort["time"].astype(float),
            "os_event": cohort["cens"].astype(float),
            "grade": cohort["tgrade"].astype(str).map(GRADES).astype(object),
        }
    )


def _sites(frame: pd.DataFrame, shares: list[float], seed: int) -> dict[str, dict[str, np.ndarray]]:
    """``frame`` split at random into sites of unequal sizes, as numpy columns."""
    site = np.random.default_rng(seed).choice(len(shares), size=len(frame), p=shares)
    return {
        f"site{s}": {c: frame[c].to_numpy()[site == s] for c in frame.columns}
        for s in range(len(shares))
    }


def _federated(
    analysis: KaplanMeierAnalysis, sites: dict[str, dict[str, np.ndarray]], threshold: int
) -> tuple[dict[str, SurvivalPart], SurvivalReport]:
    parts = {name: site_survival(analysis, table, threshold) for name, table in sites.items()}
    return parts, pooled_survival(analysis, parts)


def _assert_lifelines(curve: Curve, time: np.ndarray, event: np.ndarray, alpha: float) -> None:
    """The curve equals lifelines' on the pooled rows at each of its points (every day of a
    1-day grid, so every event time), the confidence interval too."""
    fitted = KaplanMeierFitter(alpha=alpha).fit(time, event)
    days = np.asarray(curve.time)
    assert days[-1] == time.max()
    reference = fitted.survival_function_at_times(days).to_numpy()
    np.testing.assert_allclose(curve.survival, reference, rtol=0, atol=1e-9)
    bounds = fitted.confidence_interval_.reindex(days, method="ffill").to_numpy()
    np.testing.assert_allclose(curve.lower, bounds[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(curve.upper, bounds[:, 1], rtol=0, atol=1e-9)
    assert set(time[event == 1]) <= set(days)


def test_a_series_counts_by_hand() -> None:
    time = np.array([0.0, 1, 1, 3, 5, 5, 7])
    event = np.array([1.0, 0, 1, 1, 0, 1, 0])
    series = site_series(time, event, grid_days=2, threshold=1)
    assert series == SurvivalSeries(at_risk=[7, 4, 3, 1], events=[2, 1, 1, 0])
    assert site_series(time[:0], event[:0], 2, 1) == SurvivalSeries(at_risk=[], events=[])


def test_small_counts_are_carried_until_they_reach_the_threshold() -> None:
    # day 0: 1 event; 1: 1 event; 2: 1 event, 2 censored; 3: 2 censored; 4: 3 events;
    # 10: 10 censored. Threshold 3: events of days 0-2 are shown on day 2, censorings of days
    # 2-3 leave the risk set after day 3; the last 10 are all censored, so the series ends
    # where fewer than 3 are really at risk (day 11), never showing the 1 or 2 left.
    time = np.repeat([0.0, 1, 2, 2, 3, 4, 10], [1, 1, 1, 2, 2, 3, 10])
    event = np.repeat([1.0, 1, 1, 0, 0, 1, 0], [1, 1, 1, 2, 2, 3, 10])
    series = site_series(time, event, grid_days=1, threshold=3)
    assert series.at_risk == [20, 20, 20, 17, 13, 10, 10, 10, 10, 10, 10]
    assert series.events == [0, 0, 3, 0, 3, 0, 0, 0, 0, 0, 0]
    exact = site_series(time, event, grid_days=1, threshold=1)
    assert exact.at_risk == [20, 19, 18, 15, 13, 10, 10, 10, 10, 10, 10]
    # a tail of fewer than the threshold is never reported
    short = site_series(np.array([0.0, 1, 2, 5, 6]), np.ones(5), grid_days=1, threshold=3)
    assert short == SurvivalSeries(at_risk=[5, 5, 5], events=[0, 0, 3])


def test_with_a_threshold_every_count_is_zero_or_at_least_it() -> None:
    sites = _sites(_gbsg2(), [0.5, 0.3, 0.15, 0.05], seed=1)
    analysis = KaplanMeierAnalysis(outcome=OS, group="grade", grid_days=30)
    parts, report = _federated(analysis, sites, threshold=11)
    assert "G1" not in parts["site3"].groups  # a handful of patients: nothing sent
    for name, part in parts.items():
        for group, series in part.groups.items():
            at_risk, events = np.array(series.at_risk), np.array(series.events)
            gone = at_risk[:-1] - at_risk[1:]
            censored = gone - events[:-1]
            for counts in (events, gone, censored):
                assert ((counts == 0) | (counts >= 11)).all()
            assert (at_risk >= 11).all()
            table = sites[name]
            time = table["os_days"][table["grade"] == group]
            really = (time[:, None] >= 30 * np.arange(len(at_risk))).sum(axis=0)
            assert (really >= 11).all()  # no interval with fewer than 11 really at risk
    for curve in report.groups.values():
        assert all(n >= 11 for n in curve.at_risk)
        assert all(d == 0 or d >= 11 for d in curve.events)


def test_the_suppressed_curve_stays_close_to_the_exact_one() -> None:
    frame = _gbsg2()
    sites = _sites(frame, [0.5, 0.3, 0.2], seed=2)
    analysis = KaplanMeierAnalysis(outcome=OS, grid_days=30)
    _, report = _federated(analysis, sites, threshold=11)
    curve = report.groups["all"]
    exact = KaplanMeierFitter().fit(frame["os_days"], frame["os_event"])
    reference = exact.survival_function_at_times(curve.time).to_numpy()
    # observed: from 0 to 0.049 above the exact curve over five years (the 30-day grid alone:
    # 0.007), 0.052 at most after; the series end after their last released events (day 2009
    # of 2659), where a burst of 11 carried events against 36 at risk takes the last point
    # 0.096 below
    difference = np.asarray(curve.survival) - reference
    five_years = np.asarray(curve.time) <= 5 * 365
    assert difference[five_years].max() < 0.06
    assert difference[five_years].min() > -0.02
    assert difference.max() < 0.06 and difference.min() > -0.11
    assert curve.time[-1] >= 0.7 * frame["os_days"].max()


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_a_one_day_grid_equals_lifelines_on_the_pooled_rows(confidence: float) -> None:
    frame = _gbsg2()
    sites = _sites(frame, [0.6, 0.25, 0.1, 0.05], seed=0)
    analysis = KaplanMeierAnalysis(outcome=OS, group="grade", grid_days=1, confidence=confidence)
    _, report = _federated(analysis, sites, threshold=1)
    assert list(report.groups) == ["G1", "G2", "G3"]
    for group, curve in report.groups.items():
        rows = frame[frame["grade"] == group]
        time, event = rows["os_days"].to_numpy(), rows["os_event"].to_numpy()
        _assert_lifelines(curve, time, event, 1 - confidence)
        assert curve.at_risk[0] == len(rows) and sum(curve.events) == event.sum()
    test = multivariate_logrank_test(frame["os_days"], frame["grade"], frame["os_event"])
    assert report.logrank is not None and report.logrank.df == 2
    assert report.logrank.statistic == pytest.approx(test.test_statistic, rel=0, abs=1e-9)
    assert report.logrank.p == pytest.approx(test.p_value, rel=0, abs=1e-9)


def test_rossi_in_weeks_without_groups_and_two_groups() -> None:
    rossi = load_rossi()
    frame = pd.DataFrame(
        {
            "os_days": rossi["week"].astype(float),
            "os_event": rossi["arrest"].astype(float),
            "treatment.other": rossi["fin"].astype(float),
        }
    )
    sites = _sites(frame, [0.7, 0.3], seed=4)
    alone = KaplanMeierAnalysis(outcome=OS, grid_days=1)
    _, report = _federated(alone, sites, threshold=1)
    assert list(report.groups) == ["all"] and report.logrank is None
    _assert_lifelines(report.groups["all"], frame["os_days"].to_numpy(), rossi["arrest"], 0.05)
    grouped = KaplanMeierAnalysis(outcome=OS, group="treatment.other", grid_days=1)
    _, report = _federated(grouped, sites, threshold=1)
    test = multivariate_logrank_test(rossi["week"], rossi["fin"], rossi["arrest"])
    assert list(report.groups) == ["0", "1"] and report.logrank is not None
    assert report.logrank.statistic == pytest.approx(test.test_statistic, rel=0, abs=1e-9)
    assert report.logrank.p == pytest.approx(test.p_value, rel=0, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_synthetic_ties_and_a_curve_down_to_zero_equal_lifelines(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    group = rng.choice(["G1", "G2", "G3"], size=n).astype(object)
    scale = np.where(group == "G1", 400.0, np.where(group == "G2", 250.0, 150.0))
    time = np.floor(rng.exponential(scale)).astype(float)
    event = (rng.random(n) < 0.75).astype(float)
    event[np.argmax(time)] = 1.0  # the last patient dies: the curve reaches 0
    frame = pd.DataFrame({"os_days": time, "os_event": event, "grade": group})
    sites = _sites(frame, [0.5, 0.35, 0.15], seed=seed)
    analysis = KaplanMeierAnalysis(outcome=OS, group="grade", grid_days=1)
    _, report = _federated(analysis, sites, threshold=1)
    for name, curve in report.groups.items():
        rows = frame[frame["grade"] == name]
        _assert_lifelines(curve, rows["os_days"].to_numpy(), rows["os_event"].to_numpy(), 0.05)
    last = report.groups[frame["grade"][np.argmax(time)]]
    assert last.survival[-1] == last.lower[-1] == last.upper[-1] == 0.0
    test = multivariate_logrank_test(time, group, event)
    assert report.logrank is not None
    assert report.logrank.statistic == pytest.approx(test.test_statistic, rel=0, abs=1e-9)
    assert report.logrank.p == pytest.approx(test.p_value, rel=0, abs=1e-9)


def test_a_coarse_grid_puts_points_at_the_end_of_each_bin() -> None:
    table = {
        "os_days": np.array([3.0, 10, 12, 29, 30, 45]),
        "os_event": np.array([1.0, 0, 1, 1, 0, 1]),
    }
    analysis = KaplanMeierAnalysis(outcome=OS, grid_days=15)
    curve = pooled_survival(analysis, {"a": site_survival(analysis, table, 1)}).groups["all"]
    assert curve.time == [14.0, 29.0, 44.0, 59.0]
    assert curve.at_risk == [6, 3, 2, 1] and curve.events == [2, 1, 0, 1]
    np.testing.assert_allclose(curve.survival, [4 / 6, 4 / 6 * 2 / 3, 4 / 6 * 2 / 3, 0.0])


def test_bad_parts_are_refused() -> None:
    analysis = KaplanMeierAnalysis(outcome=OS, group="grade")
    series = SurvivalSeries(at_risk=[20], events=[0])
    with pytest.raises(ValueError, match=r"site 'a' sent unknown groups \['G9'\]"):
        pooled_survival(analysis, {"a": SurvivalPart(groups={"G9": series})})
    more = SurvivalSeries(at_risk=[20, 5], events=[0, 11])
    with pytest.raises(ValueError, match="more events than patients at risk"):
        pooled_survival(analysis, {"b": SurvivalPart(groups={"G1": more})})


def test_a_series_with_withheld_events_ends_at_its_last_release() -> None:
    """Events still carried end the series after the bin where carried events were last
    released, never at an unreleased event's day; fewer than T events in all send nothing."""
    # 11 events on days 0-10 (released together on day 10), 5 on days 20-24 (never released),
    # 40 censored on day 100: the series ends on day 10, not on day 19 before the first of the 5
    time = np.concatenate([np.arange(11.0), np.arange(20.0, 25), np.full(40, 100.0)])
    event = np.concatenate([np.ones(16), np.zeros(40)])
    series = site_series(time, event, grid_days=1, threshold=11)
    assert series == SurvivalSeries(at_risk=[56] * 11, events=[0] * 10 + [11])
    assert len(site_series(time, event, grid_days=1, threshold=1).at_risk) == 101
    # one event on day 100 among 30 patients: nothing, not 100 bins at S = 1
    one = np.zeros(30)
    one[0] = 1
    assert site_series(np.arange(100.0, 130), one, 1, 11).at_risk == []
    rng = np.random.default_rng(5)
    few = np.zeros(80)
    few[:8] = 1  # 8 events: below the threshold of 11
    assert site_series(rng.integers(0, 2000, 80).astype(float), few, 30, 11).at_risk == []


def test_a_group_without_an_event_is_withheld_and_left_out_of_the_log_rank() -> None:
    analysis = KaplanMeierAnalysis(outcome=OS, group="grade", grid_days=1)
    g2 = SurvivalSeries(at_risk=[40, 29, 20], events=[11, 0, 0])
    g3 = SurvivalSeries(at_risk=[30, 30, 19], events=[0, 11, 0])
    flat = SurvivalSeries(at_risk=[20, 20], events=[0, 0])
    both = {"a": SurvivalPart(groups={"G2": g2, "G3": g3})}
    report = pooled_survival(analysis, {**both, "b": SurvivalPart(groups={"G1": flat})})
    assert list(report.groups) == ["G2", "G3"] and report.withheld == ["G1", "G4", "GX"]
    assert report == pooled_survival(analysis, both)
    assert report.logrank is not None and report.logrank.df == 1
    alone = pooled_survival(KaplanMeierAnalysis(outcome=OS), {"a": SurvivalPart(groups={})})
    assert alone.groups == {} and alone.withheld == ["all"] and alone.logrank is None


@pytest.mark.parametrize(
    ("sizes", "missing", "unusable", "sent"),
    [
        ({"G1": 4, "G2": 30, "G3": 40}, 0, 0, ["G3"]),  # G1 and its partner G2 hidden
        ({"G1": 4, "G2": 50, "G3": 60}, 0, 15, ["G3"]),  # 15 public: not G1's partner
        ({"G1": 20, "G2": 30, "G3": 40}, 3, 0, ["G2", "G3"]),  # a missing 3 hides G1 too
        ({"G1": 20, "G2": 30, "G3": 40}, 0, 3, ["G2", "G3"]),  # and so does an unusable 3
        ({"G1": 20, "G2": 30, "G3": 40}, 0, 11, ["G1", "G2", "G3"]),
    ],
)
def test_group_sizes_sent_never_give_away_a_small_group(
    sizes: dict[str, int], missing: int, unusable: int, sent: list[str]
) -> None:
    """The sent at-risk counts at day 0 (the group sizes) and the ungrouped one, against the
    cohort size published elsewhere, leave every hidden group at least T patients wide."""
    grade = np.concatenate([np.repeat(list(sizes), list(sizes.values())), [None] * missing])
    grade = np.concatenate([grade, np.repeat("G3", unusable)]).astype(object)
    n = len(grade)
    time = np.tile(np.arange(30.0), n // 30 + 1)[:n]
    time[n - unusable :] = np.nan
    table = {"os_days": time, "os_event": np.ones(n), "grade": grade}
    grouped = site_survival(KaplanMeierAnalysis(outcome=OS, group="grade"), table, 11)
    assert list(grouped.groups) == sent
    starts = [s.at_risk[0] for s in grouped.groups.values()]
    assert starts == [sizes[g] for g in sent]
    ungrouped = site_survival(KaplanMeierAnalysis(outcome=OS), table, 11).groups
    assert list(ungrouped) == ([] if 0 < unusable < 11 else ["all"])
    known = [n, *(s.at_risk[0] for s in ungrouped.values())]
    for total in known:  # the cohort, and the usable patients when sent
        assert total - sum(starts) == 0 or total - sum(starts) >= 11


def test_follow_up_beyond_the_horizon_is_censored_at_it() -> None:
    frame = _gbsg2()
    sites = _sites(frame, [0.6, 0.4], seed=3)
    analysis = KaplanMeierAnalysis(outcome=OS, grid_days=1, horizon_days=1000)
    _, report = _federated(analysis, sites, threshold=1)
    beyond = frame["os_days"].to_numpy() > 1000
    time = np.where(beyond, 1000.0, frame["os_days"])
    event = np.where(beyond, 0.0, frame["os_event"])
    _assert_lifelines(report.groups["all"], time, event, 0.05)
    assert len(report.groups["all"].time) == 1001  # days 0 to 1000: the last bin holds it
