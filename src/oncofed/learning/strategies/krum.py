"""Krum and Multi-Krum (Blanchard et al., 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent"). Each site's score is the sum of the squared L2 distances from its
update to the ``n - f - 2`` updates closest to it (``f`` the byzantine sites tolerated, at least
one neighbour); Krum keeps the update of lowest score, Multi-Krum the ``m`` lowest, and the
aggregate is their sample-weighted mean (as Flower's ``Krum`` takes it). The guarantee needs
``n >= 2f + 3`` sites, which the job spec asks of ``min_sites``; ties go to the earlier site.

Step bound: a weighted mean of updates clipped to ``c`` is at most ``c`` long (FedAvg's).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from oncofed.learning.strategies.base import RobustStrategy, StepBound


class Krum(RobustStrategy):
    def __init__(self, byzantine: int, multi: int = 1) -> None:
        if byzantine < 0 or multi < 1:
            raise ValueError("byzantine must be >= 0 and multi >= 1")
        self.byzantine, self.multi = byzantine, multi

    def scores(self, distances: np.ndarray) -> np.ndarray:
        """Each site's sum of squared distances to its ``n - f - 2`` nearest other sites."""
        n = distances.shape[0]
        others = distances[~np.eye(n, dtype=bool)].reshape(n, n - 1)
        closest = min(max(1, n - self.byzantine - 2), n - 1)
        return np.sort(others, axis=1)[:, :closest].sum(axis=1)

    def select(self, weights: np.ndarray, distances: Callable[[], np.ndarray]) -> np.ndarray:
        if weights.size == 1:
            return np.arange(1)
        order = np.argsort(self.scores(distances()), kind="stable")
        return np.sort(order[: self.multi])

    def combine(self, deltas: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.average(deltas, axis=0, weights=weights)

    def max_step(self, clip_norm: float) -> StepBound:
        return StepBound("l2", clip_norm)
