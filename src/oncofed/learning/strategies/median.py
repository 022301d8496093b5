"""Coordinate-wise median (Yin et al., 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", Algorithm 1 with one step per round): each element of the update is
the median of that element over the sites, unweighted (an even number of sites averages the two
middle values). Fewer than half the sites cannot move it beyond the honest sites' range.

Step bound: if an element's median ``m`` is positive, at least ``n / 2`` sites have that
element at ``m`` or more (likewise below when negative), so ``m^2 <= 2 / n sum_i d_i^2`` and,
summed over elements, ``||median||^2 <= 2 / n sum_i ||d_i||^2 <= 2 c^2`` for updates ``d_i``
clipped to ``c``: an L2 step of ``sqrt(2) c`` (not ``c``: e.g. ``(1, 1, 0)``, ``(0, 1, 1)`` and
``(1, 0, 1)`` have the median ``(1, 1, 1)``).
"""

from __future__ import annotations

import math

import numpy as np

from oncofed.learning.strategies.base import RobustStrategy, StepBound


class Median(RobustStrategy):
    def combine(self, deltas: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.median(deltas, axis=0)

    def max_step(self, clip_norm: float) -> StepBound:
        return StepBound("l2", math.sqrt(2) * clip_norm)
