"""FedAvg (McMahan et al., 2017): the next global model is the sample-weighted mean."""

from __future__ import annotations

import numpy as np

from oncofed.learning.strategies.base import StateChunk, Strategy


class FedAvg(Strategy):
    def update(
        self, current: np.ndarray, average: np.ndarray, state: StateChunk
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return average, {}
