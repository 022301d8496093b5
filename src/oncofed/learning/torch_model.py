"""Torch modules built from the registry's declaration; only the edge and baselines import it."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils import skip_init

from oncofed.learning.registry import architecture
from oncofed.wire.spec import ModelSpec
from oncofed.wire.tensors import Weights

P = ParamSpec("P")
R = TypeVar("R")
_turn = threading.Lock()


def one_at_a_time(work: Callable[P, R]) -> Callable[P, R]:
    """``work`` (a whole training or prediction) in turn with every other in the process.

    The sites of one edge process seed torch's one default generator for their dropout masks:
    training at once, they would draw each other's, and a site's weights would depend on its
    neighbours' timing. In turn, each gets what it gets alone. The cost: a process trains one
    site at a time, on the threads ``oncofed edge run --threads`` gives torch (sites with large
    models or long private trainings are better in processes of their own). For small models
    it also saves CPU: torch lets go of the GIL around each of its small operations, and 25
    threads training at once took 4.3 ms of CPU a step against 1.7 ms in turn."""

    @functools.wraps(work)
    def in_turn(*args: P.args, **kwargs: P.kwargs) -> R:
        with _turn:
            return work(*args, **kwargs)

    return in_turn


class DenseStack(nn.Module):
    """Dense layers with ReLU and dropout between them; outputs one score per row."""

    def __init__(self, model: ModelSpec, n_inputs: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(  # uninitialised: weights always come from the registry
            skip_init(nn.Linear, d.n_in, d.n_out, bias=d.bias)
            for d in architecture(model, n_inputs)
        )
        self.dropout = nn.Dropout(model.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self.layers
        for layer in hidden:
            x = self.dropout(torch.relu(layer(x)))
        return last(x).squeeze(-1)


def build_module(model: ModelSpec, n_inputs: int, weights: Mapping[str, np.ndarray]) -> DenseStack:
    """A new module holding ``weights``; names and shapes must match exactly."""
    return _load(DenseStack(model, n_inputs), weights)


_reused = threading.local()
"""Per thread, the last module ``reused_module`` built and its architecture's key."""


def reused_module(model: ModelSpec, n_inputs: int, weights: Mapping[str, np.ndarray]) -> DenseStack:
    """``build_module``'s module, but the layers this thread built last when the architecture
    is the same (a site's rounds of a job load new weights rather than build again): the
    caller owns it until its next call in this thread, and adds no hooks to it."""
    key = (model, n_inputs)
    module: DenseStack | None = getattr(_reused, "module", None)
    if module is None or getattr(_reused, "key", None) != key:
        module = DenseStack(model, n_inputs)
        _reused.module, _reused.key = module, key
    return _load(module, weights)


def _load(module: DenseStack, weights: Mapping[str, np.ndarray]) -> DenseStack:
    """Copy ``weights`` into ``module``'s parameters (its whole state: it has no buffers), as
    ``load_state_dict`` would, without its walk of every submodule; a missing, unexpected or
    misshapen tensor raises ``RuntimeError`` and leaves the module as it was."""
    params = dict(module.named_parameters())
    if params.keys() != weights.keys():
        raise RuntimeError(
            f"the weights' tensors {sorted(weights)} are not the module's {sorted(params)}"
        )
    values = {name: torch.from_numpy(np.array(weights[name])) for name in params}
    for name, param in params.items():
        if values[name].shape != param.shape:
            raise RuntimeError(
                f"size mismatch for {name}: {tuple(values[name].shape)} given, "
                f"{tuple(param.shape)} in the module"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(values[name])
    return module


def module_weights(module: nn.Module) -> Weights:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
