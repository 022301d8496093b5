"""A training job's answers under secure aggregation: every number a plain answer carries,
weighted so that the sum over sites gives the pooled value, in a layout fixed by the spec.

- stats round: the count, sums and sums of squares of the numeric features (their sums are
  exactly the pooled totals the standardisation is derived from);
- training round: each tensor's update (the site's model minus the global model, clipped),
  times the site's training rows, and those rows; the training loss times the rows; the
  held-out metrics as below;
- evaluation (and each training round's held-out figures): the held-out rows, and for each
  metric its value times those rows and the rows behind it (0 where the metric is undefined
  at the site, e.g. an AUC with one class), so the pooled value is the sample-weighted mean
  over the sites that have one, as plain rounds report it.

Every layout ends with ``sites``, to which each site adds 1: when the masks did not cancel
(a site was sent something different) the unmasked count is not the number of sites.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from oncofed.learning.registry import TASKS, parameter_shapes
from oncofed.privacy.secagg.layout import SITES, Layout, count, model, real
from oncofed.wire.messages import Evaluation, StatsResult
from oncofed.wire.spec import JobSpec
from oncofed.wire.tensors import Weights

Values = dict[str, np.ndarray]
MODEL = "model/"
"""Prefix of the segments holding the weighted update of each tensor."""
MAX_SITE_ROWS = 1 << 20
"""Most training rows one site's update may weigh: it bounds every weighted update element,
so the narrow ring's scale can be chosen for the job's sites before anyone has computed."""
METRICS = {"binary": ("auc", "accuracy", "log_loss", "mean_probability"), "survival": ("c_index",)}


def metric_names(spec: JobSpec) -> tuple[str, ...]:
    return METRICS[TASKS[spec.model.type]]


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
    k = len(metric_names(spec))
    return {
        "n_eval": count(),
        "metric_sums": real(k),
        "metric_rows": count(k),
        SITES: count(),
    }


def evaluation_values(spec: JobSpec, evaluation: Evaluation) -> Values:
    names = metric_names(spec)
    known = [name in evaluation.metrics for name in names]
    rows = np.array([evaluation.n_eval if ok else 0 for ok in known])
    values = np.array([evaluation.metrics.get(name, 0.0) for name in names], dtype=np.float64)
    return {
        "n_eval": np.array(evaluation.n_eval),
        "metric_sums": values * rows,
        "metric_rows": rows,
        SITES: np.array(1),
    }


def pooled_evaluation(spec: JobSpec, sums: Mapping[str, np.ndarray]) -> Evaluation:
    """The held-out rows of all sites, and each metric's sample-weighted mean over the sites
    where it is defined (left out where no site has it)."""
    metrics = {
        name: float(total / rows)
        for name, total, rows in zip(
            metric_names(spec), sums["metric_sums"], sums["metric_rows"], strict=True
        )
        if rows > 0
    }
    return Evaluation(n_eval=int(sums["n_eval"]), metrics=metrics)


def update_layout(spec: JobSpec, fraction_bits: int) -> Layout:
    """A training answer: the weighted update of each tensor (narrow ring, ``fraction_bits``
    chosen for the job), the rows, the weighted loss and the held-out figures."""
    shapes = parameter_shapes(spec.model, spec.n_inputs)
    tensors = {MODEL + name: model(shape, fraction_bits) for name, shape in shapes.items()}
    return {**tensors, "n_train": count(), "loss": real(), **evaluation_layout(spec)}


def update_values(
    spec: JobSpec, update: Weights, n_train: int, loss: float, evaluation: Evaluation
) -> Values:
    """A site's training answer; ``update`` is its clipped model minus the global model."""
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
        **evaluation_values(spec, evaluation),
    }
