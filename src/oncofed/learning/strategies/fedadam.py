"""FedAdam (Reddi et al., 2021, "Adaptive Federated Optimization", Algorithm 2).

With ``delta = mean_i(w_i) - w``:
``m <- b1 m + (1 - b1) delta``, ``v <- b2 v + (1 - b2) delta^2``,
``w <- w + lr * m / (sqrt(v) + tau)``.
"""

from __future__ import annotations

import numpy as np

from oncofed.learning.strategies.base import StateChunk, Strategy


class FedAdam(Strategy):
    state_keys = ("m", "v")

    def __init__(self, lr: float, beta1: float, beta2: float, tau: float) -> None:
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau

    def update(
        self, current: np.ndarray, average: np.ndarray, state: StateChunk
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        w = current.astype(np.float64)
        delta = average.astype(np.float64) - w
        m = self.beta1 * state["m"] + (1 - self.beta1) * delta
        v = self.beta2 * state["v"] + (1 - self.beta2) * delta**2
        return w + self.lr * m / (np.sqrt(v) + self.tau), {"m": m, "v": v}
