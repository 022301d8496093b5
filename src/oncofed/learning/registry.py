"""The registry of vetted model types, described without torch so the orchestrator stays light.

Every model is a stack of dense layers. The architecture is declared here once; the edge builds
its torch module from the same declaration (``oncofed.learning.torch_model``), so the agreed
tensor names and shapes cannot drift between the two sides.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from oncofed.wire.spec import ModelSpec
from oncofed.wire.tensors import DTYPE, Weights

Task = Literal["binary", "survival"]
TASKS: dict[str, Task] = {
    "logistic": "binary",
    "mlp": "binary",
    "cox": "survival",
    "cox_mlp": "survival",
}


@dataclass(frozen=True)
class Dense:
    """A fully connected layer ``y = x W^T + b``."""

    n_in: int
    n_out: int
    bias: bool


def architecture(model: ModelSpec, n_inputs: int) -> list[Dense]:
    """Layers of a registered model type for ``n_inputs`` features.

    Cox models have no output bias: the baseline hazard absorbs it (partial likelihood).
    """
    hidden = model.hidden if model.type in ("mlp", "cox_mlp") else []
    output_bias = TASKS[model.type] == "binary"
    widths = [n_inputs, *hidden]
    layers = [Dense(a, b, True) for a, b in itertools.pairwise(widths)]
    return [*layers, Dense(widths[-1], 1, output_bias)]


def parameter_shapes(model: ModelSpec, n_inputs: int) -> dict[str, tuple[int, ...]]:
    """The agreed tensor names and shapes, as torch names them in ``DenseStack``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, layer in enumerate(architecture(model, n_inputs)):
        shapes[f"layers.{i}.weight"] = (layer.n_out, layer.n_in)
        if layer.bias:
            shapes[f"layers.{i}.bias"] = (layer.n_out,)
    return shapes


def parameter_count(model: ModelSpec, n_inputs: int) -> int:
    return sum(int(np.prod(s)) for s in parameter_shapes(model, n_inputs).values())


def initial_weights(model: ModelSpec, n_inputs: int, seed: int) -> Weights:
    """Seeded initial weights: uniform in +-1/sqrt(fan_in), torch's default for linear layers.

    The last layer starts at zero so round one begins from the null model (all risks equal,
    all probabilities one half), which keeps early federated rounds stable.
    """
    rng = np.random.default_rng(seed)
    layers = architecture(model, n_inputs)
    weights: Weights = {}
    for i, layer in enumerate(layers):
        scale = 0.0 if i == len(layers) - 1 else 1.0 / np.sqrt(layer.n_in)
        weights[f"layers.{i}.weight"] = _uniform(rng, scale, (layer.n_out, layer.n_in))
        if layer.bias:
            weights[f"layers.{i}.bias"] = _uniform(rng, scale, (layer.n_out,))
    return weights


def _uniform(rng: np.random.Generator, scale: float, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform in [-scale, scale), drawn directly in float32 (no float64 copy of a big layer)."""
    values = rng.random(shape, dtype=DTYPE)
    values *= 2 * scale
    values -= scale
    return values
