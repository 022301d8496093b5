"""FedAvg (McMahan et al., 2017): the next global model is the sample-weighted mean.

The move ``mean_i(w_i) - w = mean_i(w_i - w)`` is a weighted mean of the sites' updates, so
its L2 norm is at most the clip norm (the triangle inequality).
"""

from __future__ import annotations

import numpy as np

from oncofed.learning.strategies.base import StateChunk, StepBound, Strategy


class FedAvg(Strategy):
    def update(
        self, current: np.ndarray, average: np.ndarray, state: StateChunk
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return average, {}

    def max_step(self, clip_norm: float) -> StepBound:
        return StepBound("l2", clip_norm)
