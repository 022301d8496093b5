"""Streaming weighted mean of model updates: one running sum per job, O(model) memory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from oncofed.wire.tensors import DTYPE, Shapes, Weights

_CHUNK = 1 << 20  # elements folded at a time, bounding temporaries for large tensors


class EmptyAggregate(ValueError):
    """No update with positive weight was folded in."""


class BrokenAggregate(ValueError):
    """An earlier ``add`` failed part-way; the sum must be rebuilt from its updates."""


class WeightedMean:
    """``sum_i w_i x_i / sum_i w_i``, folded one update at a time in float64.

    Updates are folded tensor by tensor, so no update is ever held whole. An update that turns
    out incomplete or malformed part-way leaves the sum unusable (``BrokenAggregate``) rather
    than silently wrong; the orchestrator then rebuilds it from the accepted updates.
    """

    def __init__(self, shapes: Shapes) -> None:
        self._sums = {k: np.zeros(s, dtype=np.float64) for k, s in shapes.items()}
        self.total_weight = 0.0
        self.count = 0
        self._broken = False

    def add(
        self, update: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], weight: float
    ) -> None:
        """Fold in one update, as a mapping or as (name, array) pairs read one at a time."""
        if self._broken:
            raise BrokenAggregate("an earlier update failed part-way; rebuild the sum")
        if not weight > 0:
            raise ValueError(f"weight must be positive, got {weight}")
        items = update.items() if isinstance(update, Mapping) else update
        seen: set[str] = set()
        try:
            for name, array in items:
                if name in seen or name not in self._sums:
                    raise ValueError(f"tensor {name!r} is repeated or not part of the model")
                seen.add(name)
                self._fold(self._sums[name], np.asarray(array), weight)
            if len(seen) != len(self._sums):
                raise ValueError(f"update lacks tensors {sorted(set(self._sums) - seen)}")
        except BaseException:
            self._broken = True
            raise
        self.total_weight += weight
        self.count += 1

    @staticmethod
    def _fold(acc: np.ndarray, array: np.ndarray, weight: float) -> None:
        if array.shape != acc.shape:
            raise ValueError(f"shape {array.shape}, expected {acc.shape}")
        flat_acc, flat_in = acc.reshape(-1), array.reshape(-1)
        for start in range(0, flat_acc.size, _CHUNK):
            stop = start + _CHUNK
            flat_acc[start:stop] += weight * flat_in[start:stop].astype(np.float64)

    def result(self) -> Weights:
        """The weighted mean as float32 arrays."""
        if self._broken:
            raise BrokenAggregate("an earlier update failed part-way; rebuild the sum")
        if self.count == 0 or self.total_weight <= 0:
            raise EmptyAggregate("no update was accepted in this round")
        return {k: (v / self.total_weight).astype(DTYPE) for k, v in self._sums.items()}
