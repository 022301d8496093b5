"""Summary statistics: the histogram's bins, pooled mean and standard deviation against numpy
on the pooled rows of a real cohort, grouped-data quantiles, and suppression of the counts, the
missing count among them."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.datasets import load_gbsg2

from oncofed.analytics.summary import histogram, pooled_summary, quantile, site_summary
from oncofed.wire.analysis import SummaryAnalysis, SummaryPart

EDGES = [float(e) for e in np.arange(30.3, 80.0, 5.0)]  # ages are whole years: no value on an edge
AGE = SummaryAnalysis(variable="age_at_diagnosis", bins=EDGES, quantiles=[0.1, 0.25, 0.5, 0.9])


def _sites(every: int = 97) -> list[np.ndarray]:
    """gbsg2 ages in three unequal sites, one in ``every`` missing (none for 0)."""
    age = load_gbsg2()["age"].to_numpy(dtype=np.float64)
    if every:
        age[::every] = np.nan
    site = np.random.default_rng(3).choice(3, size=len(age), p=[0.55, 0.3, 0.15])
    return [age[site == s] for s in range(3)]


def test_the_histogram_has_open_ends_and_a_closed_last_bin() -> None:
    values = np.array([-1.0, 0.0, 5.0, 10.0, 20.0, 20.5, 30.0])
    assert histogram(values, [0.0, 10.0, 20.0]).tolist() == [1, 2, 2, 2]
    part = site_summary(
        SummaryAnalysis(variable="tumour_size_mm", bins=[0.0, 10.0, 20.0]),
        np.append(values, np.nan),
        threshold=1,
    )
    assert part.n == 7 and part.histogram == [1, 2, 2, 2, 1]  # the missing count last
    assert part.total == pytest.approx(84.5) and part.total_squares == pytest.approx(1846.25)


@pytest.mark.parametrize(("threshold", "every"), [(1, 97), (11, 0), (11, 5)])
def test_pooled_mean_and_sd_equal_numpy_on_the_pooled_rows(threshold: int, every: int) -> None:
    sites = _sites(every)  # missing counts 0 or at least 11 at each site when suppressed
    parts = {f"s{i}": site_summary(AGE, ages, threshold) for i, ages in enumerate(sites)}
    report = pooled_summary(AGE, parts)
    pooled = np.concatenate(sites)
    pooled = pooled[np.isfinite(pooled)]
    assert report.pooled.n == len(pooled)
    assert report.pooled.mean == pytest.approx(pooled.mean(), rel=1e-12)
    assert report.pooled.sd == pytest.approx(pooled.std(ddof=1), rel=1e-12)
    own = sites[2][np.isfinite(sites[2])]
    assert report.sites["s2"].mean == pytest.approx(own.mean(), rel=1e-12)
    assert report.sites["s2"].sd == pytest.approx(own.std(ddof=1), rel=1e-12)
    for cells in [report.pooled.histogram, *(s.histogram for s in report.sites.values())]:
        assert all(c == 0 or c >= threshold for c in cells if isinstance(c, int))


def test_pooled_quantiles_interpolate_within_the_pooled_bin() -> None:
    sites = _sites()
    report = pooled_summary(AGE, {f"s{i}": site_summary(AGE, a, 1) for i, a in enumerate(sites)})
    pooled = np.concatenate(sites)
    pooled = pooled[np.isfinite(pooled)]
    counts = histogram(pooled, EDGES)
    missing = sum(int(np.isnan(a).sum()) for a in sites)
    assert report.pooled.histogram == [*counts.tolist(), missing]
    below = np.concatenate([[0], np.cumsum(counts)])
    for p in AGE.quantiles:
        k = int(np.searchsorted(below, p * len(pooled))) - 1  # C_k < pN <= C_k + c_k
        low, high = EDGES[k - 1], EDGES[k]
        expected = low + (p * len(pooled) - below[k]) / counts[k] * (high - low)
        found = report.pooled.quantiles[str(p)]
        assert found == pytest.approx(expected, rel=1e-12)
        assert low <= np.quantile(pooled, p) <= high  # the same bin as the pooled rows' quantile


def test_a_quantile_uses_counts_from_the_side_that_is_shown() -> None:
    edges = [0.0, 10.0, 20.0]
    # below the first edge hidden: the counts below bin [10, 20] follow from n
    assert quantile(["<11", 20, 30, 0], 55, edges, 0.5) == pytest.approx(10 + 2.5 / 30 * 10)
    assert quantile([0, 20, 30, "<11"], 55, edges, 0.2) == pytest.approx(0 + 11 / 20 * 10)
    # hidden on both sides of the bin, or its own count hidden: unknown
    assert quantile(["<11", 20, 30, "<11"], 60, edges, 0.5) is None
    assert quantile([0, "suppressed", "<11", 30], 50, edges, 0.3) is None
    # in an open bin, or without n
    assert quantile([12, 20, 30, 0], 62, edges, 0.1) is None
    assert quantile([12, 20, 30, 0], "suppressed", edges, 0.5) is None


def test_a_small_site_sends_no_sums_and_hides_the_pooled_statistics() -> None:
    sites = _sites(every=0)
    sites[2] = sites[2][:6]
    parts = {f"s{i}": site_summary(AGE, a, 11) for i, a in enumerate(sites)}
    small = parts["s2"]
    assert small.n == "<11" and small.total is None and small.total_squares is None
    assert all(c in (0, "<11") for c in small.histogram)
    report = pooled_summary(AGE, parts)
    assert report.pooled.n == "suppressed"
    assert report.pooled.mean is None and report.pooled.sd is None
    assert set(report.pooled.quantiles.values()) == {None}
    assert report.sites["s0"].mean is not None and report.sites["s2"].quantiles["0.5"] is None


def test_a_small_missing_count_hides_the_count_and_the_sums() -> None:
    ages = load_gbsg2()["age"].to_numpy(dtype=np.float64)[:200]
    ages[:6] = np.nan  # six blanked values: the cohort size less n would tell how many
    part = site_summary(AGE, ages, 11)
    assert part.histogram[-1] == "<11" and not isinstance(part.n, int)
    assert part.total is None and part.total_squares is None
    ages[:11] = np.nan
    part = site_summary(AGE, ages, 11)
    assert part.histogram[-1] == 11 and part.n == 189
    assert part.total == pytest.approx(np.nansum(ages), rel=1e-12)


def test_a_small_count_of_values_is_hidden_even_with_the_missing_count_shown() -> None:
    ages = np.full(20, np.nan)
    ages[:8] = 50.0  # 12 missing shown would leave n = 20 - 12 = 8
    part = site_summary(AGE, ages, 11)
    assert not isinstance(part.n, int) and not isinstance(part.histogram[-1], int)
    assert part.total is None and part.total_squares is None
    assert all(c in (0, "<11", "suppressed") for c in part.histogram)


def test_one_value_has_a_mean_and_no_sd() -> None:
    summary = pooled_summary(AGE, {"a": site_summary(AGE, np.array([50.0]), 1)}).pooled
    assert (summary.n, summary.mean, summary.sd) == (1, 50.0, None)


def test_a_histogram_with_other_bins_is_refused() -> None:
    part = SummaryPart(n=0, total=0.0, total_squares=0.0, histogram=[0, 0])
    with pytest.raises(ValueError, match="site 'x' sent 2 histogram counts, not 12"):
        pooled_summary(AGE, {"x": part})
