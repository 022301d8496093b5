"""Update clipping and the step check: what a site sends, and how far a global model may have
moved since the last one the site saw. Pure numpy, no torch: tensors are read a chunk at a time
so a 10M-parameter model costs no float64 copy of itself."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Protocol

import numpy as np

from oncofed.learning.strategies import StepBound
from oncofed.wire.stream import CHUNK
from oncofed.wire.tensors import DTYPE, Weights

REL_TOLERANCE = 2.0**-20
"""Slack for float32 rounding, relative to the models' magnitude and per round: a site rounds
its model to float32 and the orchestrator rounds the next global model (2 x 2**-24 each), and
FedAdam's moments are stored as float32."""


class Tensors(Protocol):
    """Named tensors read as flat float32 elements (a ``wire.stream.TensorFile`` is one)."""

    def read(self, name: str, start: int = 0, count: int | None = None) -> np.ndarray: ...


class InMemory:
    """Weights held in memory, read like a ``TensorFile``."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self._weights = weights

    def read(self, name: str, start: int = 0, count: int | None = None) -> np.ndarray:
        flat = self._weights[name].reshape(-1)
        return flat[start : flat.size if count is None else start + count]


Piece = tuple[str, int, np.ndarray]
"""A tensor's name, the flat index its elements start at and those elements."""


def clip_update(
    global_model: Mapping[str, np.ndarray], local: Mapping[str, np.ndarray], clip_norm: float
) -> Weights:
    """``global + delta`` as float32, where ``delta = local - global`` (float64) is scaled down
    to an L2 norm of ``clip_norm`` when it is longer (else ``local`` itself)."""
    local_model = InMemory(local)
    norm = math.sqrt(
        sum(
            sum_squares(difference(_read(local_model, pieces), _values(pieces)))
            for pieces in _blocks(global_model)
        )
    )
    if norm <= clip_norm:
        return dict(local)
    scale = clip_norm / norm
    clipped: Weights = {}
    for name, g in global_model.items():
        delta = difference(local[name], g)
        delta *= scale
        delta += g
        clipped[name] = delta.astype(DTYPE)
    return clipped


def within_step(
    previous: Tensors, current: Mapping[str, np.ndarray], bound: StepBound, rounds: int
) -> bool:
    """Whether ``current`` is within ``rounds`` strategy steps of ``previous`` (same names and
    shapes), up to float32 rounding (relative to the magnitude of ``previous``, the model the
    site saw, plus the steps); ``rounds`` 0 asks for equality."""
    allowed = rounds * bound.size
    squares = old_squares = 0.0
    for pieces in _blocks(current):
        new = _values(pieces)
        old = _read(previous, pieces)
        if rounds == 0:
            if not np.array_equal(old, new):
                return False
            continue
        moved = difference(new, old)
        if bound.norm == "linf":
            slack = REL_TOLERANCE * rounds * (np.abs(old, dtype=np.float64) + allowed)
            if np.any(np.abs(moved) > allowed + slack):
                return False
            continue
        squares += sum_squares(moved)
        old_squares += sum_squares(old)
    if rounds == 0 or bound.norm == "linf":
        return True
    slack = REL_TOLERANCE * rounds * (math.sqrt(old_squares) + allowed)
    return math.sqrt(squares) <= allowed + slack


def _blocks(weights: Mapping[str, np.ndarray]) -> Iterator[list[Piece]]:
    """The flat elements of ``weights`` in blocks of at most ``CHUNK``, in their order: a large
    tensor cut into chunks, small ones gathered, so that a model of a few small tensors is
    checked in a handful of numpy calls rather than a dozen per tensor."""
    block: list[Piece] = []
    size = 0
    for name, values in weights.items():
        flat = values.reshape(-1)
        for start in range(0, flat.size, CHUNK):
            piece = flat[start : start + CHUNK]
            if size + piece.size > CHUNK and block:
                yield block
                block, size = [], 0
            block.append((name, start, piece))
            size += piece.size
    if block:
        yield block


def _read(tensors: Tensors, pieces: list[Piece]) -> np.ndarray:
    """The elements of ``tensors`` where ``pieces`` lie, joined."""
    return _joined([tensors.read(name, start, values.size) for name, start, values in pieces])


def _values(pieces: list[Piece]) -> np.ndarray:
    return _joined([values for *_, values in pieces])


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def difference(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``values - start`` in float64 (exact for float32 inputs of similar magnitude)."""
    delta = values.astype(np.float64)
    delta -= start
    return delta


def sum_squares(values: np.ndarray) -> float:
    """The sum of squares in float64 (no float32 overflow, whatever the values). Not a BLAS dot
    product: OpenBLAS splits one over threads that spin-wait, which on a machine whose cores
    are busy (an edge training beside others) cost tens of milliseconds per model."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(np.einsum("i,i->", flat, flat))
