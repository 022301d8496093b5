"""The pooled held-out metrics are those of the pooled rows, computed without moving them
(issue 14): the AUC from the sites' score histograms, accuracy, log-loss and mean probability
from their sums; a C-index, which compares patients across sites, is named as a mean."""

from __future__ import annotations

import numpy as np
import pytest

from oncofed.learning.metrics import (
    MEAN_NOTE,
    SCORE_BINS,
    SiteScores,
    auc,
    binary_evaluation,
    cell_counts,
    disclosed_edges,
    histogram_auc,
    log_loss,
    own_pair_bounds,
    pool_evaluations,
    score_bins,
    score_histograms,
    weighted_mean,
)
from oncofed.wire.base import Evaluation

FINEST = np.arange(SCORE_BINS + 1)
TOLERANCE = 1e-3
"""How far the AUC of the finest histograms (2048 bins of 1/2048 probability) may be from the exact
AUC of the same rows: it differs only by pairs of a positive and a negative in one bin, each
counted one half, and those are a small share of all pairs (below 0.3% here); the exact AUC
always lies within the bounds, which count those pairs as all concordant or none."""


def _sites(
    rng: np.random.Generator, sizes: list[int], shift: float = 0.3
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out labels and logits of sites of ``sizes``, each site's scores shifted: a model
    that ranks within each site better than across them."""
    out = []
    for i, n in enumerate(sizes):
        x = rng.normal(size=n) * 1.5
        label = (rng.random(n) < 1 / (1 + np.exp(-(x + rng.normal(size=n))))).astype(np.int64)
        out.append((label, x + shift * (i % 5) - 0.6))
    return out


def _evaluation(label: np.ndarray, logit: np.ndarray, threshold: int | None) -> Evaluation:
    """What a site sends (``binary_evaluation``): the finite metrics, its sums, and its
    histograms in the cells its threshold allows (None: the finest grid)."""
    return binary_evaluation(label.astype(np.float64), logit, threshold)


@pytest.mark.parametrize(("n_sites", "low", "high"), [(4, 100, 400), (50, 20, 200)])
def test_the_pooled_auc_is_that_of_the_pooled_rows(n_sites: int, low: int, high: int) -> None:
    """At the finest grid the histogram AUC is the exact AUC of the concatenated rows within
    ``TOLERANCE``, and the exact one lies within the bounds: 4 sites (1,205 rows) 0.76452
    from the histograms, 0.76450 exact, bounds 0.76431 to 0.76473; 50 sites (5,408 rows)
    0.78037 and 0.78036, bounds 0.78018 to 0.78055. The old report's sample-weighted mean of
    the sites' AUCs (0.77324 and 0.78551) is further off."""
    rng = np.random.default_rng(1)
    sites = _sites(rng, list(rng.integers(low, high, size=n_sites)))
    label = np.concatenate([y for y, _ in sites])
    logit = np.concatenate([s for _, s in sites])
    exact = auc(label, logit)
    found = histogram_auc([SiteScores(*score_histograms(y, s), FINEST) for y, s in sites])
    assert found is not None
    assert found.auc == pytest.approx(exact, abs=TOLERANCE)
    assert found.lower <= exact <= found.upper
    assert found.upper - found.lower < TOLERANCE
    site_mean = weighted_mean([(auc(y, s), y.size) for y, s in sites])
    assert site_mean is not None and abs(site_mean - exact) > 5 * abs(found.auc - exact)

    pooled = pool_evaluations(
        {f"s{i}": _evaluation(y, s, None) for i, (y, s) in enumerate(sites)}, False
    )
    assert pooled.metrics["auc"] == pytest.approx(exact, abs=TOLERANCE)
    assert pooled.metrics["auc_lower"] <= exact <= pooled.metrics["auc_upper"]
    assert pooled.rows["auc"] == label.size
    # accuracy, log-loss and mean probability from the sums: those of the pooled rows
    assert pooled.metrics["log_loss"] == pytest.approx(log_loss(label, logit), rel=1e-12)
    assert pooled.metrics["accuracy"] == pytest.approx(np.mean((logit > 0) == (label == 1)))
    probability = 1 / (1 + np.exp(-logit))
    assert pooled.metrics["mean_probability"] == pytest.approx(probability.mean(), rel=1e-12)


def test_sites_whose_own_auc_is_one_do_not_make_a_pooled_auc_of_one() -> None:
    """Each site ranks its own rows perfectly, but one site's scores sit above the other's:
    the old report gave 1.0000; the pooled rows' AUC is below."""
    low = (np.array([0, 0, 0, 1, 1, 1]), np.array([-3.0, -2.5, -2.0, -1.0, -0.5, 0.0]))
    high = (np.array([0, 0, 0, 1, 1, 1]), np.array([0.25, 0.5, 1.0, 2.0, 2.5, 3.0]))
    label = np.concatenate([low[0], high[0]])
    logit = np.concatenate([low[1], high[1]])
    exact = auc(label, logit)
    assert exact == pytest.approx(27 / 36)
    evaluations = {"low": _evaluation(*low, None), "high": _evaluation(*high, None)}
    assert weighted_mean([(e.metrics["auc"], e.n_eval) for e in evaluations.values()]) == 1.0
    pooled = pool_evaluations(evaluations, False)
    assert pooled.metrics["auc"] == pytest.approx(exact, abs=1e-12)  # no two rows share a bin


def test_sites_with_one_held_out_row_each_have_a_pooled_auc() -> None:
    """50 sites of one held-out row each: no site has an AUC of its own (one class), yet the
    pooled rows have one, from the histograms (under secure aggregation the pooled ones)."""
    rng = np.random.default_rng(7)
    sites = _sites(rng, [1] * 50)
    label = np.concatenate([y for y, _ in sites])
    logit = np.concatenate([s for _, s in sites])
    evaluations = {f"s{i}": _evaluation(y, s, 1) for i, (y, s) in enumerate(sites)}
    assert all("auc" not in e.metrics for e in evaluations.values())
    pooled = pool_evaluations(evaluations, False)
    assert pooled.metrics["auc"] == pytest.approx(auc(label, logit), abs=1e-12)
    assert pooled.rows["auc"] == 50
    assert not [note for note in pooled.notes if "leaves out" in note]


def test_a_site_of_one_row_under_the_default_threshold_is_named_as_left_out() -> None:
    """With the default threshold (11) a site of one held-out row sends no histogram (its one
    row would be a small cell however coarse its cells): the pooled AUC is of the other
    sites' rows, and a note says whose rows it leaves out."""
    rng = np.random.default_rng(3)
    big = _sites(rng, [300, 250])
    evaluations = {f"s{i}": _evaluation(y, s, 11) for i, (y, s) in enumerate(big)}
    evaluations["tiny"] = _evaluation(np.array([1]), np.array([0.4]), 11)
    assert evaluations["tiny"].scores is None
    pooled = pool_evaluations(evaluations, False)
    assert pooled.rows["auc"] == 550 and pooled.rows["accuracy"] == 551
    assert any("leaves out 1 held-out rows of tiny" in note for note in pooled.notes)


def test_small_sites_left_out_of_the_pooled_auc_have_a_mean_named_as_one() -> None:
    """Sites whose held-out rows hold a small cell of a label send no histogram: beside the
    pooled AUC of the others (or, when no site has one, in its place) comes the mean of every
    site's own AUC, named ``mean_site_auc`` and noted as a mean; with nothing left out, none."""
    rng = np.random.default_rng(5)
    small = _sites(rng, [15, 16, 14])
    evaluations = {f"s{i}": _evaluation(y, s, 11) for i, (y, s) in enumerate(small)}
    assert all(e.scores is None for e in evaluations.values())
    pooled = pool_evaluations(evaluations, False)
    assert "auc" not in pooled.metrics
    own = [(e.metrics["auc"], e.n_eval) for e in evaluations.values()]
    assert pooled.metrics["mean_site_auc"] == pytest.approx(weighted_mean(own))
    assert pooled.rows["mean_site_auc"] == 45
    assert any(
        note.startswith("mean_site_auc: the mean of the sites' own AUC") for note in pooled.notes
    )
    big = {f"b{i}": _evaluation(y, s, 11) for i, (y, s) in enumerate(_sites(rng, [300, 250]))}
    assert "mean_site_auc" not in pool_evaluations(big, False).metrics
    mixed = pool_evaluations(big | evaluations, False)
    assert mixed.rows["auc"] == 550 and mixed.rows["mean_site_auc"] == 595


def test_cells_under_the_threshold_bound_the_exact_auc() -> None:
    """Sites' histograms in the cells the default threshold allows: the exact AUC of the
    pooled rows lies within the reported bounds, and the estimate near it for large sites
    (4 sites of 2,000 to 3,000 rows: within 0.005)."""
    rng = np.random.default_rng(1)
    sites = _sites(rng, list(rng.integers(2000, 3000, size=4)))
    label = np.concatenate([y for y, _ in sites])
    logit = np.concatenate([s for _, s in sites])
    exact = auc(label, logit)
    evaluations = {f"s{i}": _evaluation(y, s, 11) for i, (y, s) in enumerate(sites)}
    pooled = pool_evaluations(evaluations, False)
    assert pooled.metrics["auc_lower"] <= exact <= pooled.metrics["auc_upper"]
    assert pooled.metrics["auc"] == pytest.approx(exact, abs=0.005)
    small = _sites(rng, list(rng.integers(20, 200, size=50)))
    label = np.concatenate([y for y, _ in small])
    logit = np.concatenate([s for _, s in small])
    evaluations = {f"s{i}": _evaluation(y, s, 11) for i, (y, s) in enumerate(small)}
    pooled = pool_evaluations(evaluations, False)
    kept = [i for i, (y, s) in enumerate(small) if evaluations[f"s{i}"].scores is not None]
    label = np.concatenate([small[i][0] for i in kept])
    logit = np.concatenate([small[i][1] for i in kept])
    assert pooled.metrics["auc_lower"] <= auc(label, logit) <= pooled.metrics["auc_upper"]


@pytest.mark.parametrize("threshold", [2, 5, 11, 20])
def test_no_released_cell_holds_a_small_count_of_a_label(threshold: int) -> None:
    """Whatever the rows, each cell holds 0 or at least ``threshold`` rows of each label; the
    cells cover the grid; and a site whose label count is itself small releases none."""
    rng = np.random.default_rng(threshold)
    for _ in range(200):
        n = int(rng.integers(1, 120))
        label = (rng.random(n) < rng.random()).astype(np.int64)
        logit = rng.normal(size=n) * rng.uniform(0.1, 8) + rng.normal() * 4
        positive, negative = score_histograms(label, logit)
        edges = disclosed_edges(positive, negative, threshold)
        small = [0 < c < threshold for c in (positive.sum(), negative.sum())]
        if any(small):
            assert edges is None
            continue
        assert edges is not None and edges[0] == 0 and edges[-1] == SCORE_BINS
        for counts in (cell_counts(positive, edges), cell_counts(negative, edges)):
            assert counts.sum() in (positive.sum(), negative.sum())
            assert not np.any((counts > 0) & (counts < threshold))


def test_a_lone_outlier_shares_its_cell() -> None:
    """A model that gives one patient a score far from everyone else's (a hostile
    orchestrator's probe) finds that patient in a cell with at least 11 rows of each label,
    whichever its label: the cells are the same either way."""
    rng = np.random.default_rng(0)
    label = (rng.random(60) < 0.5).astype(np.int64)
    logit = rng.normal(size=60) + 3
    cells = []
    for target in (0, 1):
        y = np.append(label, target)
        s = np.append(logit, -12.0)
        positive, negative = score_histograms(y, s)
        edges = disclosed_edges(positive, negative, 11)
        assert edges is not None
        cell = int(np.searchsorted(edges, score_bins(np.array([-12.0]))[0], side="right")) - 1
        held = (cell_counts(positive, edges)[cell], cell_counts(negative, edges)[cell])
        assert min(held) >= 11
        cells.append(edges[cell + 1])
    assert cells[0] == cells[1] or abs(cells[0] - cells[1]) < SCORE_BINS // 32


def test_a_site_cannot_claim_an_auc_its_histograms_rule_out() -> None:
    """A hostile site's AUC is held within what its own histograms allow."""
    label = np.array([0] * 11 + [1] * 11)
    logit = np.array([2.0] * 11 + [-2.0] * 11)  # every positive below every negative
    honest = _evaluation(label, logit, 11)
    assert honest.scores is not None
    lying = honest.model_copy(update={"metrics": {**honest.metrics, "auc": 1.0}})
    site = SiteScores(
        np.array(honest.scores.positive),
        np.array(honest.scores.negative),
        np.array(honest.scores.edges),
    )
    assert own_pair_bounds(site) == (0.0, 0.0)
    assert pool_evaluations({"liar": lying}, False).metrics["auc"] == 0.0


def test_a_c_index_is_named_as_the_mean_of_the_sites() -> None:
    evaluations = {
        "a": Evaluation(n_eval=30, metrics={"c_index": 0.7}),
        "b": Evaluation(n_eval=10, metrics={"c_index": 0.5}),
        "c": Evaluation(n_eval=12, metrics={}),  # no comparable pairs there
    }
    pooled = pool_evaluations(evaluations, True)
    assert "c_index" not in pooled.metrics
    assert pooled.metrics["mean_site_c_index"] == pytest.approx(0.65)
    assert pooled.rows["mean_site_c_index"] == 40
    assert MEAN_NOTE in pooled.notes
    assert any("leaves out 12 held-out rows of c" in note for note in pooled.notes)


def test_scores_fall_in_the_fixed_grid() -> None:
    bins = score_bins(np.array([-np.inf, -1e9, -8.0, -1e-9, 0.0, 1e-3, 8.0, 1e9, np.inf]))
    assert bins.tolist() == [0, 0, 0, 1023, 1024, 1024, 2047, 2047, 2047]
    with pytest.raises(ValueError, match="NaN"):
        score_bins(np.array([0.0, np.nan]))
