"""Streaming weighted mean of model updates: one running sum per job, O(model) memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

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
        """Fold in one update, as a mapping or as (name, array) pairs."""
        items = update.items() if isinstance(update, Mapping) else update
        chunks = ((name, 0, np.asarray(array)) for name, array in items)
        shapes = {name: acc.shape for name, acc in self._sums.items()}

        def checked() -> Iterator[tuple[str, int, np.ndarray]]:
            for name, offset, array in chunks:
                if name in shapes and array.shape != shapes[name]:
                    raise ValueError(f"{name}: shape {array.shape}, expected {shapes[name]}")
                yield name, offset, array

        self.add_chunks(checked(), weight)

    def add_chunks(self, chunks: Iterable[tuple[str, int, np.ndarray]], weight: float) -> None:
        """Fold in one update given as ``(name, flat offset, elements)`` pieces, in any order;
        together they must cover every element of every tensor exactly once."""
        if self._broken:
            raise BrokenAggregate("an earlier update failed part-way; rebuild the sum")
        if not weight > 0:
            raise ValueError(f"weight must be positive, got {weight}")
        covered = dict.fromkeys(self._sums, 0)
        try:
            for name, offset, piece in chunks:
                if name not in self._sums:
                    raise ValueError(f"tensor {name!r} is not part of the model")
                flat = self._sums[name].reshape(-1)
                values = piece.reshape(-1)
                if offset < 0 or offset + values.size > flat.size:
                    raise ValueError(f"{name}: elements beyond the tensor")
                for start in range(0, values.size, _CHUNK):
                    part = values[start : start + _CHUNK]
                    at = offset + start
                    flat[at : at + part.size] += weight * part.astype(np.float64)
                covered[name] += values.size
            wrong = sorted(n for n, c in covered.items() if c != self._sums[n].size)
            if wrong:
                raise ValueError(f"update lacks tensors or repeats elements: {wrong}")
        except BaseException:
            self._broken = True
            raise
        self.total_weight += weight
        self.count += 1

    def mean_chunks(self, name: str, chunk: int = _CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        """``(flat offset, float64 elements)`` of one tensor's weighted mean, a chunk at a time."""
        self._check_ready()
        flat = self._sums[name].reshape(-1)
        for start in range(0, flat.size, chunk):
            yield start, flat[start : start + chunk] / self.total_weight

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: acc.shape for name, acc in self._sums.items()}

    def _check_ready(self) -> None:
        if self._broken:
            raise BrokenAggregate("an earlier update failed part-way; rebuild the sum")
        if self.count == 0 or self.total_weight <= 0:
            raise EmptyAggregate("no update was accepted in this round")

    def result(self) -> Weights:
        """The weighted mean as float32 arrays (whole; ``mean_chunks`` streams it)."""
        self._check_ready()
        return {k: (v / self.total_weight).astype(DTYPE) for k, v in self._sums.items()}
