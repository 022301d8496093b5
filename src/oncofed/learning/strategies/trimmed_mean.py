"""Coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", Algorithm 2 with one step per round): for each element, the
``k = floor(trim x n)`` highest and ``k`` lowest values over the ``n`` sites are dropped and the
rest averaged, unweighted (``scipy.stats.trim_mean``). Up to ``k`` sites cannot move it beyond
the honest sites' range; with fewer than ``1 / trim`` sites nothing is dropped.

Step bound: each element's trimmed mean squared is at most the mean of the ``n - 2k`` kept
squares (Jensen), so ``||t||^2 <= sum_i ||d_i||^2 / (n - 2k) <= n c^2 / (n - 2k)`` for updates
``d_i`` clipped to ``c``; with ``n - 2k >= n (1 - 2 trim)``: an L2 step of
``c / sqrt(1 - 2 trim)``, whatever the number of sites.
"""

from __future__ import annotations

import math

import numpy as np

from oncofed.learning.strategies.base import RobustStrategy, StepBound


class TrimmedMean(RobustStrategy):
    def __init__(self, trim: float) -> None:
        if not 0.0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}")
        self.trim = trim

    def combine(self, deltas: np.ndarray, weights: np.ndarray) -> np.ndarray:
        n = deltas.shape[0]
        k = int(self.trim * n)  # as scipy.stats.trim_mean cuts
        return np.sort(deltas, axis=0)[k : n - k].mean(axis=0)

    def max_step(self, clip_norm: float) -> StepBound:
        return StepBound("l2", clip_norm / math.sqrt(1 - 2 * self.trim))
