"""The one narrow interface every aggregation strategy implements (server half, pure numpy)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from oncofed.wire.tensors import Weights


class Strategy(ABC):
    """Turns the sample-weighted mean of the sites' models into the next global model.

    The weighted mean itself is computed by streaming (``WeightedMean``); a strategy only sees
    its result, the current global model and its own persistent state (e.g. Adam moments).
    """

    proximal_mu: float = 0.0
    """Weight of the proximal term the sites add to their local loss (FedProx)."""

    @abstractmethod
    def update(self, current: Weights, average: Weights, state: Weights) -> tuple[Weights, Weights]:
        """Return ``(next_global, next_state)``; inputs are not modified."""
