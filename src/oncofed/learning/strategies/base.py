"""The one narrow interface every aggregation strategy implements (server half, pure numpy)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from oncofed.wire.tensors import DTYPE, Weights

StateChunk = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class StepBound:
    """How far one round can move the global model when every site's update (its model minus
    the global one) has an L2 norm of at most the job's clip norm: ``size`` bounds the L2 norm
    of the whole move (``"l2"``) or the magnitude of each element's (``"linf"``)."""

    norm: Literal["l2", "linf"]
    size: float


class Strategy(ABC):
    """Turns the sample-weighted mean of the sites' models into the next global model.

    The weighted mean itself is computed by streaming (``WeightedMean``). A strategy's update
    is elementwise, so the orchestrator applies it to one chunk of one tensor at a time and
    never holds a whole model: ``current`` and ``average`` are matching pieces of the global
    model and of the mean, ``state`` holds the same piece of each of the strategy's
    ``state_keys`` (e.g. Adam's moments; zeros before the first round).
    """

    proximal_mu: float = 0.0
    """Weight of the proximal term the sites add to their local loss (FedProx)."""

    state_keys: tuple[str, ...] = ()
    """Names of the per-parameter state the strategy keeps between rounds."""

    @abstractmethod
    def update(
        self, current: np.ndarray, average: np.ndarray, state: StateChunk
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Return ``(next_global, next_state)`` for these elements; inputs are not modified."""

    @abstractmethod
    def max_step(self, clip_norm: float) -> StepBound:
        """The largest move of the global model in one round, for updates clipped to
        ``clip_norm``: what a site checks each new global model against."""


class RobustStrategy(Strategy):
    """A strategy that needs every site's update at once, not their running sum (so not under
    secure aggregation): the median, a trimmed mean, Krum.

    The orchestrator reads the same chunk of every site's clipped update (its model minus the
    global one, scaled to the clip norm when longer) and ``combine`` turns them into that chunk
    of the aggregate update; ``select`` first picks the sites whose updates count (all, unless
    the strategy overrides it). The next global model is the global model plus the aggregate
    update: ``update`` then takes it as it is, as FedAvg takes the mean.
    """

    def select(self, weights: np.ndarray, distances: Callable[[], np.ndarray]) -> np.ndarray:
        """Indices of the updates to combine, given the sites' sample counts and, on demand,
        the matrix of squared L2 distances between their updates."""
        return np.arange(weights.size)

    @abstractmethod
    def combine(self, deltas: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The aggregate of ``deltas`` (one row per selected site, a chunk of elements each,
        float64) given their sites' sample counts ``weights``."""

    def update(
        self, current: np.ndarray, average: np.ndarray, state: StateChunk
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return average, {}


def apply_strategy(
    strategy: Strategy, current: Weights, average: Weights, state: Weights
) -> tuple[Weights, Weights]:
    """Whole-model form of ``update``; state tensors are named ``"{key}/{tensor}"``."""
    new: Weights = {}
    new_state: Weights = {}
    for name, weights in current.items():
        piece = {k: state.get(f"{k}/{name}", np.zeros_like(weights)) for k in strategy.state_keys}
        new[name], updated = strategy.update(weights, average[name], piece)
        new[name] = new[name].astype(DTYPE)
        new_state.update({f"{k}/{name}": v.astype(DTYPE) for k, v in updated.items()})
    return new, new_state
