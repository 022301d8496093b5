"""Streaming weighted mean of model updates: one running sum per job, O(model) memory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from oncofed.wire.tensors import DTYPE, Shapes, Weights

_CHUNK = 1 << 20  # elements folded at a time, bounding temporaries for large tensors


class EmptyAggregate(ValueError):
    """No update with positive weight was folded in."""


class WeightedMean:
    """``sum_i w_i x_i / sum_i w_i``, folded one update at a time in float64."""

    def __init__(self, shapes: Shapes) -> None:
        self._sums = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}
        self.total_weight = 0.0
        self.count = 0

    def add(
        self, update: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], weight: float
    ) -> None:
        """Fold in one update, given as a mapping or as (name, array) pairs read one at a time.

        The caller has checked names and shapes; every name must come exactly once.
        """
        if not weight > 0:
            raise ValueError(f"weight must be positive, got {weight}")
        items = update.items() if isinstance(update, Mapping) else update
        seen = 0
        for name, array in items:
            flat_acc = self._sums[name].reshape(-1)
            flat_in = np.asarray(array).reshape(-1)
            seen += 1
            for start in range(0, flat_acc.size, _CHUNK):
                stop = start + _CHUNK
                flat_acc[start:stop] += weight * flat_in[start:stop].astype(np.float64)
        if seen != len(self._sums):
            raise ValueError(f"update has {seen} tensors, expected {len(self._sums)}")
        self.total_weight += weight
        self.count += 1

    def result(self) -> Weights:
        """The weighted mean as float32 arrays."""
        if self.count == 0 or self.total_weight <= 0:
            raise EmptyAggregate("no update was accepted in this round")
        return {k: (v / self.total_weight).astype(DTYPE) for k, v in self._sums.items()}
