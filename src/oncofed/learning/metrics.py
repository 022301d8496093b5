"""Evaluation metrics over numpy arrays: AUC, accuracy, log-loss, Harrell's concordance; and
the score histograms from which the AUC of several sites' pooled held-out rows is computed
without moving them (docs/metrics.md).

The histogram grid is fixed: ``2 ** SCORE_LEVELS`` bins of equal width on the probability
scale (the sigmoid of the logit), 1/2048 wide; a site releases its histograms in cells, runs
of those bins (``disclosed_edges``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from oncofed.wire.base import MAX_STATISTIC, SCORE_LEVELS, Evaluation, RowSums, ScoreHistogram

PRIMARY = {"binary": "auc", "survival": "c_index"}
POOLED_PRIMARY = {"binary": "auc", "survival": "mean_site_c_index"}
"""The pooled figure shown for a job's primary metric: a C-index compares patients across
sites, so its pooled figure is the mean of the sites' own, and named so."""
SCORE_BINS = 1 << SCORE_LEVELS


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN if one class."""
    pos = label == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _midranks(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def accuracy(label: np.ndarray, logit: np.ndarray) -> float:
    return float(np.mean((logit > 0) == (label == 1)))


def log_loss(label: np.ndarray, logit: np.ndarray) -> float:
    """Mean binary cross-entropy, computed stably from logits."""
    return float(np.mean(np.logaddexp(0.0, logit) - label * logit))


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: among comparable pairs, the share where the earlier failure has the higher
    risk (ties in risk count one half); NaN without pairs. A pair is comparable when there is
    an event at ``t_i`` and ``t_j > t_i``, or ``t_j == t_i`` with ``j`` censored (still at
    risk at ``t_i``), as in lifelines and R's survival package.
    """
    order = np.argsort(time, kind="stable")
    time, event, risk = time[order], event[order], risk[order]
    concordant = 0.0
    comparable = 0
    for i in np.flatnonzero(event == 1):
        later = (time > time[i]) | ((time == time[i]) & (event == 0))
        others = risk[later]
        comparable += others.size
        concordant += np.sum(risk[i] > others) + 0.5 * np.sum(risk[i] == others)
    return float(concordant / comparable) if comparable else float("nan")


def binary_metrics(label: np.ndarray, logit: np.ndarray) -> dict[str, float]:
    return {
        "auc": auc(label, logit),
        "accuracy": accuracy(label, logit),
        "log_loss": log_loss(label, logit),
        "mean_probability": float(np.mean(0.5 * (1.0 + np.tanh(logit / 2)))),  # sigmoid
    }


def survival_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    return {"c_index": concordance_index(time, event, risk)}


def weighted_mean(values: list[tuple[float, int]]) -> float | None:
    """Sample-weighted mean of per-site values, skipping NaN; None when nothing is left."""
    pairs = [(v, n) for v, n in values if n > 0 and np.isfinite(v)]
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else None


def score_bins(logit: np.ndarray) -> np.ndarray:
    """The finest bin of each logit: its probability times 2048, rounded down (probability
    1 in the last bin; a NaN logit has none: ``ValueError``). The order of the bins is that
    of the logits, finest where most models' probabilities are (a bin is 1/512 logit wide at
    probability 1/2, 1/20 at 0.01, 5 at 1e-4)."""
    logit = np.asarray(logit, dtype=np.float64)
    if np.isnan(logit).any():
        raise ValueError("a score is NaN: it falls in no bin")
    probability = 0.5 * (1.0 + np.tanh(logit / 2))  # the sigmoid, without overflow
    return np.minimum((probability * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)


def score_histograms(label: np.ndarray, logit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the positive and of the negative rows in each finest bin."""
    bins = score_bins(logit)
    pos = label == 1
    return (
        np.bincount(bins[pos], minlength=SCORE_BINS),
        np.bincount(bins[~pos], minlength=SCORE_BINS),
    )


def cell_counts(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """A finest-grid histogram summed over the cells between ``edges`` (0 first, the number
    of finest bins last)."""
    return np.add.reduceat(np.asarray(counts), np.asarray(edges)[:-1])


def disclosed_edges(
    positive: np.ndarray, negative: np.ndarray, threshold: int
) -> np.ndarray | None:
    """The cells a site may release finest-grid histograms in: runs of bins covering the
    grid, each holding no label's rows from 1 to ``threshold`` - 1, as fine as that allows. A
    run of rows closes at the first bin where both labels' rows are 0 or at least
    ``threshold``; a run of empty bins between them is a cell of its own; a short run left at
    the end joins the runs before it. Their edges, in finest bins; None where even one cell
    would hold 1 to ``threshold`` - 1 rows of a label (a label has that few rows in all).

    The cells are shared by both labels, so the label of one row changes them only through
    the counts every cell keeps above the threshold."""

    def small(pos: int, neg: int) -> bool:
        return 0 < pos < threshold or 0 < neg < threshold

    edges, pos, neg = [0], 0, 0
    cells: list[tuple[int, int]] = []
    positive, negative = np.asarray(positive), np.asarray(negative)
    held = np.flatnonzero((positive != 0) | (negative != 0))  # an empty bin changes nothing
    rows = zip(held.tolist(), positive[held].tolist(), negative[held].tolist(), strict=True)
    for b, p, n in rows:
        if pos + neg == 0 and b > edges[-1]:  # empty bins before: a cell
            edges.append(b)
            cells.append((0, 0))
        pos, neg = pos + int(p), neg + int(n)
        if pos + neg and not small(pos, neg):
            edges.append(b + 1)
            cells.append((pos, neg))
            pos = neg = 0
    while cells and small(pos, neg):  # the rest joins the cells before it
        last_pos, last_neg = cells.pop()
        edges.pop()
        pos, neg = pos + last_pos, neg + last_neg
    if small(pos, neg):
        return None
    if edges[-1] != len(positive):
        edges.append(len(positive))
    return np.array(edges)


def spread(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the cells between ``edges`` on the finest grid, each cell's shared evenly
    among the finest bins it covers (as if its rows were spread evenly over it)."""
    widths = np.diff(edges)
    return np.repeat(np.asarray(counts, dtype=np.float64) / widths, widths)


@dataclass(frozen=True)
class SiteScores:
    """One site's histograms of its positive and negative rows over the cells between
    ``edges`` (finest bins) and, when known, the exact Mann-Whitney count of its own
    positive-negative pairs (its AUC times its positives times its negatives: the site's own
    AUC is exact, so its own pairs need no histogram)."""

    positive: np.ndarray
    negative: np.ndarray
    edges: np.ndarray
    own_pairs: float | None = None


@dataclass(frozen=True)
class PooledAuc:
    """The AUC of the pooled rows from score histograms: ``auc`` is the estimate, and every
    ordering of the rows inside their cells gives an AUC from ``lower`` to ``upper``."""

    auc: float
    lower: float
    upper: float


def _pairs(pos: np.ndarray, neg: np.ndarray) -> float:
    """Positive-negative pairs of two finest-grid histograms where the positive is higher,
    counting one half within a bin."""
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float(pos @ below + 0.5 * pos @ neg)


def _surely_above(high: list[np.ndarray], low: list[np.ndarray], edges: list[np.ndarray]) -> float:
    """Pairs of a row of a ``high`` histogram and a row of a ``low`` one (of any sites, each
    over the cells of its ``edges``) whose cells do not overlap, ``high``'s above."""
    ending = np.zeros(SCORE_BINS + 1)  # rows of ``low`` whose cell ends at each edge
    for counts, cells in zip(low, edges, strict=True):
        np.add.at(ending, np.asarray(cells)[1:], counts)
    below = np.cumsum(ending)  # rows of ``low`` in cells ending at or before each edge
    return sum(
        float(counts @ below[np.asarray(cells)[:-1]])
        for counts, cells in zip(high, edges, strict=True)
    )


def own_pair_bounds(site: SiteScores) -> tuple[float, float]:
    """The fewest and the most concordant pairs (positive above negative) that rows with one
    site's histograms can have: an AUC a site reports must lie within them."""
    pos, neg = site.positive.astype(np.float64), site.negative.astype(np.float64)
    concordant = _surely_above([pos], [neg], [site.edges])
    discordant = _surely_above([neg], [pos], [site.edges])
    return concordant, float(pos.sum() * neg.sum() - discordant)


def histogram_auc(sites: list[SiteScores]) -> PooledAuc | None:
    """The AUC of the pooled rows of all ``sites``: every positive row compared with every
    negative row, of any site. A pair of one site whose own pairs are known counts as it does
    there (exactly); any other pair from the histograms, each cell's rows spread evenly over
    the finest bins it covers, two rows in the same finest bin counting one half. None when
    the pooled rows have one class.

    The bounds count every pair in overlapping cells as concordant (``upper``) or not
    (``lower``); at the finest grid they differ from the estimate by at most half the share
    of positive-negative pairs in one bin (1/2048 of probability)."""
    pos = [s.positive.astype(np.float64) for s in sites]
    neg = [s.negative.astype(np.float64) for s in sites]
    n_pos, n_neg = sum(p.sum() for p in pos), sum(n.sum() for n in neg)
    if n_pos <= 0 or n_neg <= 0:
        return None
    fine_pos, fine_neg = np.zeros(SCORE_BINS), np.zeros(SCORE_BINS)
    for p, n, site in zip(pos, neg, sites, strict=True):
        fine_pos += spread(p, site.edges)
        fine_neg += spread(n, site.edges)
    estimate = _pairs(fine_pos, fine_neg)
    edges = [s.edges for s in sites]
    sure, unsure = _surely_above(pos, neg, edges), _surely_above(neg, pos, edges)
    for i, site in enumerate(sites):  # a site's own pairs: exact where known
        if site.own_pairs is not None:
            estimate += site.own_pairs - _pairs(spread(pos[i], edges[i]), spread(neg[i], edges[i]))
            low, high = own_pair_bounds(site)
            sure += site.own_pairs - low
            unsure += high - site.own_pairs
    total = n_pos * n_neg
    return PooledAuc(float(estimate / total), float(sure / total), float(1 - unsure / total))


def row_sums(label: np.ndarray, logit: np.ndarray) -> tuple[int, float, float]:
    """The held-out rows' sums that pool exactly over sites: the rows classified correctly,
    the sum of the per-row cross-entropy and the sum of the predicted probabilities."""
    correct = int(np.sum((logit > 0) == (label == 1)))
    loss = float(np.sum(np.logaddexp(0.0, logit) - label * logit))
    probability = float(np.sum(0.5 * (1.0 + np.tanh(logit / 2))))
    return correct, loss, probability


SITE_MEAN = POOLED_PRIMARY["survival"]
MEAN_NOTE = (
    f"{SITE_MEAN}: the mean of the sites' own C-index weighted by their held-out rows, not a "
    "C-index of the pooled rows (a C-index compares patients across sites)"
)

UNSCORED_NOTE = (
    "no metrics: the job does not score training round {number} on the held-out rows "
    "(evaluation.every {every}); its final model is scored in the evaluation round"
)


SITE_MEAN_AUC = "mean_site_auc"
MEAN_AUC_NOTE = (
    f"{SITE_MEAN_AUC}: the mean of the sites' own AUC weighted by their held-out rows, not an "
    "AUC of the pooled rows; given because the pooled auc leaves sites out or is missing"
)
AUC_NOTE = (
    "auc: of the pooled held-out rows, from the sites' score histograms (each site's own "
    "pairs exact, pairs across sites from the histograms); any order of the rows within "
    "their cells gives an AUC from auc_lower to auc_upper"
)


@dataclass(frozen=True)
class PooledEvaluation:
    """The pooled held-out figures of a round: its rows, each metric with the rows behind
    it, and notes on what a metric leaves out or what it is."""

    n_eval: int
    metrics: dict[str, float]
    rows: dict[str, int]
    notes: list[str]


def pool_evaluations(evaluations: Mapping[str, Evaluation], survival: bool) -> PooledEvaluation:
    """The pooled held-out figures of the sites' ``evaluations`` (by site name). A binary
    model's AUC is that of the pooled rows of the sites' score histograms, its accuracy,
    log-loss and mean probability those of the pooled rows from the sites' sums; a site
    without a histogram (a small cell of a label however coarse its cells) or without sums
    is left out of that figure and a note names it. A survival model's figure is the mean of
    the sites' own C-index, weighted by their held-out rows, and named so."""
    n_eval = sum(e.n_eval for e in evaluations.values())
    if survival:
        have = {site: e for site, e in evaluations.items() if "c_index" in e.metrics}
        mean = weighted_mean([(e.metrics["c_index"], e.n_eval) for e in have.values()])
        if mean is None:
            return PooledEvaluation(n_eval, {}, {}, [f"{SITE_MEAN}: no site has a C-index"])
        rows = sum(e.n_eval for e in have.values())
        said = [MEAN_NOTE, *_left_out(SITE_MEAN, evaluations, have, "no C-index")]
        return PooledEvaluation(n_eval, {SITE_MEAN: mean}, {SITE_MEAN: rows}, said)
    metrics: dict[str, float] = {}
    counted: dict[str, int] = {}
    notes: list[str] = []
    histograms = {site: e for site, e in evaluations.items() if e.scores is not None}
    found = histogram_auc([_site_scores(e) for e in histograms.values()])
    if found is not None:
        metrics |= {"auc": found.auc, "auc_lower": found.lower, "auc_upper": found.upper}
        rows = sum(e.n_eval for e in histograms.values())
        counted |= dict.fromkeys(("auc", "auc_lower", "auc_upper"), rows)
        notes.append(AUC_NOTE)
    elif histograms:
        notes.append("auc: the pooled held-out rows have one class")
    if found is not None or not histograms:
        why = "no score histogram: a small cell of a label however coarse its cells"
        left_out = _left_out("auc", evaluations, histograms, why)
        notes += left_out
        own = {site: e for site, e in evaluations.items() if "auc" in e.metrics}
        mean = weighted_mean([(e.metrics["auc"], e.n_eval) for e in own.values()])
        if (left_out or found is None) and mean is not None:
            metrics[SITE_MEAN_AUC] = mean
            counted[SITE_MEAN_AUC] = sum(e.n_eval for e in own.values())
            notes.append(MEAN_AUC_NOTE)
    summed = {site: e for site, e in evaluations.items() if e.sums is not None}
    rows = sum(e.n_eval for e in summed.values())
    if rows:
        totals = [e.sums for e in summed.values() if e.sums is not None]
        metrics["accuracy"] = sum(t.correct for t in totals) / rows
        metrics["log_loss"] = sum(t.log_loss for t in totals) / rows
        metrics["mean_probability"] = sum(t.probability for t in totals) / rows
        counted |= dict.fromkeys(("accuracy", "log_loss", "mean_probability"), rows)
    notes += _left_out("accuracy, log_loss, mean_probability", evaluations, summed, "no sums")
    return PooledEvaluation(n_eval, metrics, counted, notes)


def _site_scores(evaluation: Evaluation) -> SiteScores:
    """A site's histograms, with its own pairs from its exact AUC where it has one (held
    within what its histograms allow: a site cannot move the pooled figure beyond them)."""
    scores = evaluation.scores
    assert scores is not None
    site = SiteScores(
        np.asarray(scores.positive), np.asarray(scores.negative), np.asarray(scores.edges)
    )
    own = evaluation.metrics.get("auc")
    if own is None or not site.positive.sum() or not site.negative.sum():
        return site
    low, high = own_pair_bounds(site)
    pairs = own * site.positive.sum() * site.negative.sum()
    return replace(site, own_pairs=min(max(pairs, low), high))


def _left_out(
    name: str, evaluations: Mapping[str, Evaluation], used: Mapping[str, Evaluation], why: str
) -> list[str]:
    """A note naming the sites with held-out rows that ``name`` leaves out, or none."""
    out = sorted(site for site, e in evaluations.items() if site not in used and e.n_eval)
    if not out:
        return []
    rows = sum(evaluations[site].n_eval for site in out)
    return [f"{name}: leaves out {rows} held-out rows of {', '.join(out)} ({why})"]


def binary_evaluation(label: np.ndarray, logit: np.ndarray, threshold: int | None) -> Evaluation:
    """What a site sends of a binary model's ``logit`` on its held-out rows: the finite
    metrics, the sums and the score histogram that pool over sites. The histogram's cells are
    as fine as they can be with no cell holding 1 to ``threshold`` - 1 rows of a label
    (``disclosed_edges``), and it is left out where even one cell would; ``threshold`` None
    (secure aggregation: the rule applies to the sum over sites) gives the finest grid."""
    n = len(label)
    finite = {k: v for k, v in binary_metrics(label, logit).items() if np.isfinite(v)}
    if np.isnan(logit).any():  # a model that gives no score has no sums nor histogram
        return Evaluation(n_eval=n, metrics=finite)
    correct, loss, probability = row_sums(label, logit)
    sums = None
    if np.isfinite(loss) and loss <= MAX_STATISTIC:
        sums = RowSums(correct=correct, log_loss=loss, probability=min(probability, n))
    positive, negative = score_histograms(label, logit)
    edges: np.ndarray | None = np.arange(SCORE_BINS + 1)
    if threshold is not None:
        edges = disclosed_edges(positive, negative, threshold)
    scores = None
    if edges is not None:
        scores = ScoreHistogram(
            edges=edges.tolist(),
            positive=cell_counts(positive, edges).tolist(),
            negative=cell_counts(negative, edges).tolist(),
        )
    return Evaluation(n_eval=n, metrics=finite, sums=sums, scores=scores)
