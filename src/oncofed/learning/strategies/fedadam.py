"""FedAdam (Reddi et al., 2021, "Adaptive Federated Optimization", Algorithm 2).

With ``delta = mean_i(w_i) - w``:
``m <- b1 m + (1 - b1) delta``, ``v <- b2 v + (1 - b2) delta^2``,
``w <- w + lr * m / (sqrt(v) + tau)``.
"""

from __future__ import annotations

import numpy as np

from oncofed.learning.strategies.base import Strategy
from oncofed.wire.tensors import DTYPE, Weights


class FedAdam(Strategy):
    def __init__(self, lr: float, beta1: float, beta2: float, tau: float) -> None:
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau

    def update(self, current: Weights, average: Weights, state: Weights) -> tuple[Weights, Weights]:
        new: Weights = {}
        new_state: Weights = {}
        for name, w in current.items():
            delta = average[name].astype(np.float64) - w
            m = self.beta1 * state.get(f"m/{name}", 0.0) + (1 - self.beta1) * delta
            v = self.beta2 * state.get(f"v/{name}", 0.0) + (1 - self.beta2) * delta**2
            new[name] = (w + self.lr * m / (np.sqrt(v) + self.tau)).astype(DTYPE)
            new_state[f"m/{name}"] = np.asarray(m, dtype=DTYPE)
            new_state[f"v/{name}"] = np.asarray(v, dtype=DTYPE)
        return new, new_state
