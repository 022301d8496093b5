"""Evaluation metrics over numpy arrays: AUC, accuracy, log-loss, Harrell's concordance."""

from __future__ import annotations

import numpy as np

PRIMARY = {"binary": "auc", "survival": "c_index"}


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
