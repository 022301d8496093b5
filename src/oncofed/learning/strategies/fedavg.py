"""FedAvg (McMahan et al., 2017): the next global model is the sample-weighted mean."""

from __future__ import annotations

from oncofed.learning.strategies.base import Strategy
from oncofed.wire.tensors import Weights


class FedAvg(Strategy):
    def update(self, current: Weights, average: Weights, state: Weights) -> tuple[Weights, Weights]:
        return dict(average), state
