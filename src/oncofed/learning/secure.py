"""A training job's answers under secure aggregation: every number a plain answer carries,
weighted so that the sum over sites gives the pooled value, in a layout fixed by the spec.

- stats round: the count, sums and sums of squares of the numeric features (their sums are
  exactly the pooled totals the standardisation is derived from);
- training round: each tensor's update (the site's model minus the global model, clipped),
  times the site's training rows, and those rows; the training loss times the rows; the
  held-out metrics as below;
- evaluation (and each training round's held-out figures): the held-out rows; a binary
  model's score histogram of each label at the finest level of the grid (``positive``,
  ``negative``: count, 2048 bins), the rows classified correctly (count), the sums of the
  rows' cross-entropy and predicted probabilities (real), so that the pooled AUC, accuracy,
  log-loss and mean probability are those of the pooled rows; a survival model's C-index
  times the held-out rows where it is defined, and those rows, so that the pooled figure is
  the mean of the sites' own C-index weighted by their rows (a C-index compares patients
  across sites: none is computed over the pooled rows).

Every layout ends with ``sites``, to which each site adds 1: when the masks did not cancel
(a site was sent something different) the unmasked count is not the number of sites.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from oncofed.learning.metrics import (
    MEAN_NOTE,
    SCORE_BINS,
    SITE_MEAN,
    PooledEvaluation,
    SiteScores,
    cell_counts,
    disclosed_edges,
    histogram_auc,
)
from oncofed.learning.registry import TASKS, parameter_shapes
from oncofed.privacy.secagg.layout import SITES, Layout, count, model, real
from oncofed.wire.messages import Evaluation, StatsResult
from oncofed.wire.spec import JobSpec
from oncofed.wire.tensors import Weights

Values = dict[str, np.ndarray]
SECURE_AUC_NOTE = (
    "auc: of the pooled held-out rows, from their pooled score histograms in {cells} cells "
    "(none holding 1 to {threshold} - 1 rows of a label); any order of the rows within their "
    "cells gives an AUC from auc_lower to auc_upper"
)
MODEL = "model/"
"""Prefix of the segments holding the weighted update of each tensor."""
MAX_SITE_ROWS = 1 << 20
"""Most training rows one site's update may weigh: it bounds every weighted update element,
so the narrow ring's scale can be chosen for the job's sites before anyone has computed."""


def stats_layout(spec: JobSpec) -> Layout:
    width = len(spec.numeric_names)
    return {"n": count(), "sums": real(width), "sumsq": real(width), SITES: count()}


def stats_values(stats: StatsResult) -> Values:
    return {
        "n": np.array(stats.n),
        "sums": np.asarray(stats.sums, dtype=np.float64),
        "sumsq": np.asarray(stats.sumsq, dtype=np.float64),
        SITES: np.array(1),
    }


def pooled_stats(sums: Mapping[str, np.ndarray]) -> StatsResult:
    """The pooled totals from the unmasked sums."""
    return StatsResult(n=int(sums["n"]), sums=sums["sums"].tolist(), sumsq=sums["sumsq"].tolist())


def evaluation_layout(spec: JobSpec) -> Layout:
    if TASKS[spec.model.type] == "binary":
        return {
            "n_eval": count(),
            "positive": count(SCORE_BINS),
            "negative": count(SCORE_BINS),
            "correct": count(),
            "log_loss": real(),
            "probability": real(),
            SITES: count(),
        }
    return {"n_eval": count(), "c_index": real(), "c_index_rows": count(), SITES: count()}


def evaluation_values(spec: JobSpec, evaluation: Evaluation) -> Values:
    """A site's held-out figures in ``evaluation_layout``; its score histogram (if any) must
    be at the finest level (``ValueError`` else), and a site without one or without sums
    (a model that gave a NaN score) cannot take part."""
    n = np.array(evaluation.n_eval)
    if TASKS[spec.model.type] != "binary":
        c_index = evaluation.metrics.get("c_index")
        rows = 0 if c_index is None else evaluation.n_eval
        return {
            "n_eval": n,
            "c_index": np.array((c_index or 0.0) * rows),
            "c_index_rows": np.array(rows),
            SITES: np.array(1),
        }
    scores, sums = evaluation.scores, evaluation.sums
    if scores is None or sums is None or len(scores.positive) != SCORE_BINS:
        raise ValueError(
            "the global model gives this site's held-out rows no score (NaN): "
            "no score histogram and sums to add to the sum over sites"
        )
    return {
        "n_eval": n,
        "positive": np.array(scores.positive),
        "negative": np.array(scores.negative),
        "correct": np.array(sums.correct),
        "log_loss": np.array(sums.log_loss),
        "probability": np.array(sums.probability),
        SITES: np.array(1),
    }


def pooled_evaluation(
    spec: JobSpec, sums: Mapping[str, np.ndarray], threshold: int
) -> PooledEvaluation:
    """The pooled held-out figures from the unmasked sums. A binary model's AUC is that of
    the pooled histograms in the finest cells in which no cell holds 1 to ``threshold`` - 1
    rows of a label (none when even one cell would: a note says so); a
    survival model's figure is the mean of the sites' own C-index, named so."""
    n_eval = int(sums["n_eval"])
    if TASKS[spec.model.type] != "binary":
        rows = int(sums["c_index_rows"])
        if not rows:
            note = "mean_site_c_index: no site's held-out rows have a C-index"
            return PooledEvaluation(n_eval, {}, {}, [note])
        mean = float(sums["c_index"]) / rows
        return PooledEvaluation(n_eval, {SITE_MEAN: mean}, {SITE_MEAN: rows}, [MEAN_NOTE])
    metrics, notes = {}, []
    if n_eval:
        metrics = {
            "accuracy": int(sums["correct"]) / n_eval,
            "log_loss": float(sums["log_loss"]) / n_eval,
            "mean_probability": float(sums["probability"]) / n_eval,
        }
    positive, negative = sums["positive"], sums["negative"]
    edges = disclosed_edges(positive, negative, threshold)
    if edges is None:
        notes.append(
            f"auc: not shown, a label has 1 to {threshold - 1} pooled held-out rows "
            f"(small-cell threshold {threshold})"
        )
    else:
        pooled = SiteScores(cell_counts(positive, edges), cell_counts(negative, edges), edges)
        found = histogram_auc([pooled])
        if found is None:
            notes.append("auc: the pooled held-out rows have one class")
        else:
            metrics |= {"auc": found.auc, "auc_lower": found.lower, "auc_upper": found.upper}
            notes.append(SECURE_AUC_NOTE.format(cells=len(edges) - 1, threshold=threshold))
    return PooledEvaluation(n_eval, metrics, dict.fromkeys(metrics, n_eval), notes)


def update_layout(spec: JobSpec, fraction_bits: int, scored: bool) -> Layout:
    """A training answer: the weighted update of each tensor (narrow ring, ``fraction_bits``
    chosen for the job), the rows, the weighted loss and, in a ``scored`` round, the held-out
    figures (else the count of sites alone)."""
    shapes = parameter_shapes(spec.model, spec.n_inputs)
    tensors = {MODEL + name: model(shape, fraction_bits) for name, shape in shapes.items()}
    held_out = evaluation_layout(spec) if scored else {SITES: count()}
    return {**tensors, "n_train": count(), "loss": real(), **held_out}


def update_values(
    spec: JobSpec, update: Weights, n_train: int, loss: float, evaluation: Evaluation | None
) -> Values:
    """A site's training answer (``update_layout``, scored when ``evaluation`` is given);
    ``update`` is its clipped model minus the global model."""
    if n_train > MAX_SITE_ROWS:
        raise ValueError(
            f"{n_train:,} training rows here; a securely aggregated update weighs at most "
            f"{MAX_SITE_ROWS:,}"
        )
    tensors = {MODEL + name: n_train * np.asarray(d, np.float64) for name, d in update.items()}
    return {
        **tensors,
        "n_train": np.array(n_train),
        "loss": np.array(n_train * loss),
        **(evaluation_values(spec, evaluation) if evaluation is not None else {SITES: np.array(1)}),
    }
