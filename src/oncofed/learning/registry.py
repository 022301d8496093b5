"""The registry of vetted model types, described without torch so the orchestrator stays light.

Every model is a stack of dense layers. The architecture is declared here once (or by a
plugin the site installed: ``oncofed.learning.plugins``); the edge builds its torch module from
the same declaration (``oncofed.learning.torch_model``), so the agreed tensor names and shapes
cannot drift between the two sides.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from oncofed.learning import plugins
from oncofed.learning.plugins import PluginError, Task
from oncofed.wire.spec import BUILTIN_MODELS, ModelSpec
from oncofed.wire.tensors import DTYPE, Weights


def model_task(name: str) -> Task:
    """The outcome model type ``name`` fits; ``ValueError`` naming the installed types when no
    built-in or installed plugin has that name (nothing of a plugin is imported)."""
    builtin = BUILTIN_MODELS.get(name)
    if builtin is not None:
        return builtin
    plugin = plugins.declared().get(name)
    if plugin is not None:
        return plugin.task
    from_plugins = ", ".join(
        f"{m.name!r} ({m.distribution} {m.version})" for m in plugins.declared().values()
    )
    names = ", ".join(map(repr, BUILTIN_MODELS))
    raise ValueError(
        f"{name!r} is not an installed model type: built-in {names}; "
        f"from plugins: {from_plugins or 'none installed'}"
    )


class _Tasks(Mapping[str, Task]):
    """Every installed model type and the outcome it fits: the built-ins, then the plugins'."""

    def __getitem__(self, name: str) -> Task:
        try:
            return model_task(name)
        except ValueError as exc:
            raise KeyError(name) from exc

    def __iter__(self) -> Iterator[str]:
        yield from BUILTIN_MODELS
        yield from plugins.declared()

    def __len__(self) -> int:
        return len(BUILTIN_MODELS) + len(plugins.declared())


TASKS: Mapping[str, Task] = _Tasks()


@dataclass(frozen=True)
class Dense:
    """A fully connected layer ``y = x W^T + b``."""

    n_in: int
    n_out: int
    bias: bool


def architecture(model: ModelSpec, n_inputs: int) -> list[Dense]:
    """Layers of a registered model type for ``n_inputs`` features.

    Cox models have no output bias: the baseline hazard absorbs it (partial likelihood).
    A plugin's model type is declared by its own function (``plugins.load``), checked here.
    """
    if model.type not in BUILTIN_MODELS:
        return _plugin_layers(model, n_inputs)
    hidden = tuple(model.hidden) if model.type in ("mlp", "cox_mlp") else ()
    return list(_builtin_layers(model.type, hidden, n_inputs))


@functools.lru_cache(maxsize=256)
def _builtin_layers(name: str, hidden: tuple[int, ...], n_inputs: int) -> tuple[Dense, ...]:
    """A built-in type's layers, worked out once per architecture (the orchestrator asks for
    them with every update it receives)."""
    output_bias = BUILTIN_MODELS[name] == "binary"
    widths = [n_inputs, *hidden]
    layers = [Dense(a, b, True) for a, b in itertools.pairwise(widths)]
    return (*layers, Dense(widths[-1], 1, output_bias))


def _plugin_layers(model: ModelSpec, n_inputs: int) -> list[Dense]:
    """A plugin's layers, held to the built-ins' contract: dense layers, each taking the last
    one's outputs, the first ``n_inputs``, the last one score (without a bias for survival)."""
    layers = plugins.load(model.type)(model, n_inputs)
    said = f"plugin model type {model.type!r}"
    if not isinstance(layers, list) or not layers:
        raise PluginError(f"{said} declares no layers (a non-empty list of Dense)")
    width = n_inputs
    for index, layer in enumerate(layers):
        if not (
            isinstance(layer, Dense)
            and all(type(v) is int and v >= 1 for v in (layer.n_in, layer.n_out))
            and type(layer.bias) is bool
        ):
            raise PluginError(f"{said}: layer {index} is not a Dense of positive widths")
        if layer.n_in != width:
            raise PluginError(f"{said}: layer {index} takes {layer.n_in} inputs, not {width}")
        width = layer.n_out
    last = layers[-1]
    if last.n_out != 1:
        raise PluginError(f"{said}: the last layer must give one score, not {last.n_out}")
    if last.bias and model_task(model.type) == "survival":
        raise PluginError(f"{said}: a survival model's last layer has no bias (Cox)")
    return list(layers)


def parameter_shapes(model: ModelSpec, n_inputs: int) -> dict[str, tuple[int, ...]]:
    """The agreed tensor names and shapes, as torch names them in ``DenseStack``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, layer in enumerate(architecture(model, n_inputs)):
        shapes[f"layers.{i}.weight"] = (layer.n_out, layer.n_in)
        if layer.bias:
            shapes[f"layers.{i}.bias"] = (layer.n_out,)
    return shapes


def parameter_count(model: ModelSpec, n_inputs: int) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(model, n_inputs).values())


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
