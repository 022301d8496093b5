"""Aggregation of the sites' model updates, streamed so no update is ever held whole.

- ``clip_scale`` and ``Clipped``: a site's update (its model minus the round's global model)
  measured and, when longer than the job's clip norm, scaled down to it, read a chunk at a
  time (two passes over the update: its norm, then its elements);
- ``WeightedMean``: the running sample-weighted mean of the clipped models, one per round,
  O(model) memory;
- ``RobustMean``: a robust strategy's aggregate over every site's clipped update at once, read
  one chunk of every update at a time (O(sites x chunk) memory, never O(sites x model)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from oncofed.learning.steps import Tensors, difference, sum_squares
from oncofed.learning.strategies.base import RobustStrategy
from oncofed.wire.stream import TensorFile
from oncofed.wire.tensors import DTYPE, Shapes, Weights

_CHUNK = 1 << 20  # elements folded at a time, bounding temporaries for large tensors
ROBUST_BUDGET = 1 << 21
"""Elements of all sites' updates a robust strategy combines at a time (16 MB of float64)."""
CLIP_TOLERANCE = 2.0**-23
"""How much longer than the clip norm an update may measure and be folded as sent, relative to
the norms of the global model plus the clip norm: a site rounds its clipped model to float32
(at most 2**-24 of each element), so an honest update can measure that much over."""
MAX_OVERSHOOT = 1e9
"""An update more than this many times longer than the clip norm is refused, not scaled: no
training step that clipping would correct is that long; its weights overflowed or were made up
(values near float32's largest, 3.4e38), and the site's task is rejected so that shows."""


class UpdateRefused(ValueError):
    """An update that is not folded at all: not finite, absurdly long, or longer than the clip
    norm when the job refuses such updates."""


def clip_scale(
    update: Tensors, start: Tensors, shapes: Shapes, clip_norm: float, refuse: bool = False
) -> float:
    """The factor ``s`` that brings ``update - start`` (the site's move from the global model)
    within ``clip_norm`` in L2 norm: 1 when it is within (up to ``CLIP_TOLERANCE``), else
    ``clip_norm / norm``. Raises ``UpdateRefused`` for a move that is not finite or more than
    ``MAX_OVERSHOOT`` times the clip norm, or (``refuse``) any move longer than the clip norm."""
    known = start.squares if isinstance(start, HeldStart) else None
    squares = start_squares = 0.0
    if isinstance(start, HeldStart) and (moved := start.moved(update)) is not None:
        for name in shapes:  # each tensor's sum, in the order of the loop below
            squares += sum_squares(moved[start.places[name]])
    else:
        for name, offset, count in pieces(shapes, _CHUNK):
            base = start.read(name, offset, count)
            squares += sum_squares(difference(update.read(name, offset, count), base))
            if known is None:
                start_squares += sum_squares(base)
    norm = math.sqrt(squares)
    if not math.isfinite(norm):
        raise UpdateRefused("the update is not finite")
    start_norm = math.sqrt(start_squares if known is None else known)
    if norm <= clip_norm + CLIP_TOLERANCE * (start_norm + clip_norm):
        return 1.0
    if refuse or norm > MAX_OVERSHOOT * clip_norm:
        why = (
            "the job refuses longer updates"
            if refuse
            else f"over {MAX_OVERSHOOT:g} times longer is no training step: refused, not scaled"
        )
        raise UpdateRefused(
            f"the update moves the model by {norm:.3g} (L2 norm), over the job's clip norm "
            f"{clip_norm:g}; {why}"
        )
    return clip_norm / norm


class HeldStart:
    """A round's global model held in float64 while the round is open, with its sum of squares
    (``Tensors``): every update of the round is measured and clipped from it, read once rather
    than once per update (then, for each element, a float32 converted and its square summed).

    Its tensors lie one after another as a site's update lays them out (``flat``,
    ``flat_places``): an update held in memory is then measured and folded in a few array
    operations over all its elements (``moved``, ``WeightedMean.add_flat``), not a few per
    tensor."""

    def __init__(self, model: Tensors, shapes: Shapes) -> None:
        self.places = flat_places(shapes)
        self.sizes = {name: place.stop - place.start for name, place in self.places.items()}
        self.flat = np.empty(sum(self.sizes.values()), dtype=np.float64)
        for name, place in self.places.items():
            self.flat[place] = model.read(name)
        self.flat.flags.writeable = False
        self._weights = {name: self.flat[self.places[name]] for name in shapes}
        self.squares = sum(sum_squares(values) for values in self._weights.values())

    def moved(self, update: Tensors) -> np.ndarray | None:
        """``update - start`` over every element at once (float64, laid out as ``flat``), when
        ``update`` is a payload in memory laid out so (``TensorFile.flat``); else None."""
        values = update.flat(self.sizes) if isinstance(update, TensorFile) else None
        return None if values is None else difference(values, self.flat)

    def read(self, name: str, start: int = 0, count: int | None = None) -> np.ndarray:
        """Elements ``start .. start + count`` of tensor ``name`` in float64 (a read-only
        view: exact, float32 values being float64 ones)."""
        flat = self._weights[name]
        view = flat[start : flat.size if count is None else start + count]
        view.flags.writeable = False
        return view


class Clipped:
    """A site's model with its move from the global model scaled by ``scale``
    (``clip_scale``): ``start + scale * (update - start)``, read a chunk at a time."""

    def __init__(self, update: Tensors, start: Tensors, scale: float) -> None:
        self._update, self._start, self.scale = update, start, scale

    def delta(self, name: str, offset: int, count: int) -> np.ndarray:
        """Elements ``offset .. offset + count`` of the scaled move, in float64."""
        start = self._start.read(name, offset, count)
        moved = difference(self._update.read(name, offset, count), start)
        if self.scale != 1.0:
            moved *= self.scale
        return moved

    def chunks(self, shapes: Shapes) -> Iterator[tuple[str, int, np.ndarray]]:
        """``(name, flat offset, elements)`` of the clipped model, for ``WeightedMean``; an
        update that needed no scaling is read as sent (so it is folded exactly)."""
        for name, offset, count in pieces(shapes, _CHUNK):
            if self.scale == 1.0:
                yield name, offset, self._update.read(name, offset, count)
                continue
            model = self._start.read(name, offset, count) + self.delta(name, offset, count)
            yield name, offset, model


def flat_places(shapes: Shapes) -> dict[str, slice]:
    """Where each tensor of ``shapes`` lies when they are laid out one after another in the
    order safetensors writes them (by name), in that order."""
    places, at = {}, 0
    for name in sorted(shapes):
        size = math.prod(shapes[name])
        places[name], at = slice(at, at + size), at + size
    return places


def pieces(shapes: Shapes, chunk: int) -> Iterator[tuple[str, int, int]]:
    """``(name, flat offset, count)`` covering every tensor of ``shapes`` in ``chunk``s."""
    for name, shape in shapes.items():
        size = math.prod(shape)
        for offset in range(0, size, chunk):
            yield name, offset, min(chunk, size - offset)


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
        self.places = flat_places(shapes)
        size = sum(place.stop - place.start for place in self.places.values())
        self._flat = np.zeros(size, dtype=np.float64)  # the sums, laid out as ``HeldStart``'s
        self._sums = {k: self._flat[self.places[k]].reshape(s) for k, s in shapes.items()}
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

    def add_flat(self, model: np.ndarray, weight: float) -> None:
        """Fold in one model given whole, its tensors laid out as ``places`` says
        (``HeldStart.flat``)."""
        if self._broken:
            raise BrokenAggregate("an earlier update failed part-way; rebuild the sum")
        if not weight > 0:
            raise ValueError(f"weight must be positive, got {weight}")
        if model.shape != self._flat.shape:
            raise ValueError(f"{model.size} elements, expected {self._flat.size}")
        self._flat += weight * model.astype(np.float64)
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


class RobustMean:
    """A robust strategy's next model from every site's clipped update at once, streamed like
    ``WeightedMean.mean_chunks``: each chunk of the aggregate reads the same chunk of every
    selected update (``ROBUST_BUDGET`` elements in all), never a whole one.

    ``start`` is the round's global model, ``updates`` the sites' ``Clipped`` updates and
    ``weights`` their sample counts. A strategy that selects sites by their distances (Krum)
    costs one more pass over every update, for the matrix of squared distances.
    """

    def __init__(
        self,
        strategy: RobustStrategy,
        start: Tensors,
        updates: Sequence[Clipped],
        weights: Sequence[float],
        shapes: Shapes,
        budget: int = ROBUST_BUDGET,
    ) -> None:
        if not updates:
            raise EmptyAggregate("no update was accepted in this round")
        sample = np.asarray(weights, dtype=np.float64)
        if sample.shape != (len(updates),) or not np.all(sample > 0):
            raise ValueError("each update needs a positive weight")
        self._strategy, self._start = strategy, start
        self._shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self._chunk = max(1, budget // len(updates))
        chosen = strategy.select(sample, lambda: self._distances(updates))
        self._updates = [updates[i] for i in chosen]
        self._weights = sample[chosen]
        self.count = len(self._updates)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def _stack(self, updates: Sequence[Clipped], name: str, offset: int, count: int) -> np.ndarray:
        return np.stack([u.delta(name, offset, count) for u in updates])

    def _distances(self, updates: Sequence[Clipped]) -> np.ndarray:
        """Squared L2 distances between the updates, from their Gram matrix (of the moves, not
        the models, so no cancellation against the global model's magnitude)."""
        gram = np.zeros((len(updates), len(updates)))
        for name, offset, count in pieces(self._shapes, self._chunk):
            moves = self._stack(updates, name, offset, count)
            gram += moves @ moves.T
        norms = np.diag(gram)
        distances = norms[:, None] + norms[None, :] - 2 * gram
        np.fill_diagonal(distances, 0.0)
        return np.maximum(distances, 0.0)

    def mean_chunks(self, name: str) -> Iterator[tuple[int, np.ndarray]]:
        """``(flat offset, float64 elements)`` of one tensor of the next model, a chunk at a
        time: the global model plus the strategy's aggregate of the selected moves."""
        size = math.prod(self._shapes[name])
        for offset in range(0, size, self._chunk):
            count = min(self._chunk, size - offset)
            moves = self._stack(self._updates, name, offset, count)
            aggregate = self._strategy.combine(moves, self._weights)
            yield offset, self._start.read(name, offset, count) + aggregate


RoundMean = WeightedMean | RobustMean
"""What a closing training round's next model is read from."""
