"""FedAdam (Reddi et al., 2021, "Adaptive Federated Optimization", Algorithm 2).

With ``delta = mean_i(w_i) - w``:
``m <- b1 m + (1 - b1) delta``, ``v <- b2 v + (1 - b2) delta^2``,
``w <- w + lr * m / (sqrt(v) + tau)``.

Step bound, per element, for updates of L2 norm at most ``c`` (so ``|delta| <= c`` in each
element and, from zero moments, ``m_t = (1 - b1) sum_i b1^i delta_{t-i}``,
``v_t = (1 - b2) sum_i b2^i delta_{t-i}^2``): ``|m| <= c`` gives ``lr c / tau``; and when
``b1^2 < b2``, Cauchy-Schwarz on ``sum_i (b1 / sqrt(b2))^i (sqrt(b2)^i delta_{t-i})`` gives
``|m| / sqrt(v) <= (1 - b1) / sqrt((1 - b2) (1 - b1^2 / b2))``, whatever the deltas. The move
is at most ``lr`` times the smaller of the two.
"""

from __future__ import annotations

import math

import numpy as np

from oncofed.learning.strategies.base import StateChunk, StepBound, Strategy


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

    def max_step(self, clip_norm: float) -> StepBound:
        b1, b2 = self.beta1, self.beta2
        ratio = clip_norm / self.tau
        if b1**2 < b2:
            ratio = min(ratio, (1 - b1) / math.sqrt((1 - b2) * (1 - b1**2 / b2)))
        return StepBound("linf", self.lr * ratio)
