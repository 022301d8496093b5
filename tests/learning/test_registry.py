"""The model registry against the torch modules built from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oncofed.learning.registry import (
    TASKS,
    architecture,
    initial_weights,
    parameter_count,
    parameter_shapes,
)
from oncofed.learning.torch_model import DenseStack, build_module, module_weights
from oncofed.wire.spec import ModelSpec

N_INPUTS = 7
MODELS = [
    ModelSpec(type="logistic"),
    ModelSpec(type="mlp", hidden=[8, 4], dropout=0.2),
    ModelSpec(type="cox"),
    ModelSpec(type="cox_mlp", hidden=[5]),
]
IDS = [m.type for m in MODELS]
DEEP = [m for m in MODELS if m.type in ("mlp", "cox_mlp")]


def test_every_model_type_is_registered() -> None:
    assert set(TASKS) == {"logistic", "mlp", "cox", "cox_mlp"}
    assert {m.type for m in MODELS} == set(TASKS)


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_torch_state_dict_matches_parameter_shapes(model: ModelSpec) -> None:
    module = DenseStack(model, N_INPUTS)
    torch_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert torch_shapes == parameter_shapes(model, N_INPUTS)


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_module_round_trips_initial_weights(model: ModelSpec) -> None:
    weights = initial_weights(model, N_INPUTS, seed=4)
    module = build_module(model, N_INPUTS, weights)
    back = module_weights(module)
    assert set(back) == set(weights)
    for k, v in weights.items():
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], v)


def test_expected_layouts() -> None:
    assert parameter_shapes(ModelSpec(type="logistic"), 3) == {
        "layers.0.weight": (1, 3),
        "layers.0.bias": (1,),
    }
    # Cox models have no output bias (the baseline hazard absorbs it)
    assert parameter_shapes(ModelSpec(type="cox"), 3) == {"layers.0.weight": (1, 3)}
    assert parameter_shapes(ModelSpec(type="cox_mlp", hidden=[6]), 3) == {
        "layers.0.weight": (6, 3),
        "layers.0.bias": (6,),
        "layers.1.weight": (1, 6),
    }
    # linear models ignore ``hidden``
    assert parameter_shapes(ModelSpec(type="logistic", hidden=[64]), 3) == parameter_shapes(
        ModelSpec(type="logistic"), 3
    )


@pytest.mark.parametrize(
    ("model", "count"),
    [
        (MODELS[0], N_INPUTS + 1),
        (MODELS[1], (7 * 8 + 8) + (8 * 4 + 4) + (4 + 1)),
        (MODELS[2], N_INPUTS),
        (MODELS[3], (7 * 5 + 5) + 5),
    ],
    ids=IDS,
)
def test_parameter_count(model: ModelSpec, count: int) -> None:
    assert parameter_count(model, N_INPUTS) == count
    assert sum(p.numel() for p in DenseStack(model, N_INPUTS).parameters()) == count


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_initial_weights_are_float32_with_zero_last_layer(model: ModelSpec) -> None:
    weights = initial_weights(model, N_INPUTS, seed=0)
    assert {k: v.shape for k, v in weights.items()} == parameter_shapes(model, N_INPUTS)
    assert all(v.dtype == np.float32 for v in weights.values())
    last = len(architecture(model, N_INPUTS)) - 1
    for k, v in weights.items():
        if k.startswith(f"layers.{last}."):
            assert not v.any(), k
    # null model: every row gets the same score (0)
    module = build_module(model, N_INPUTS, weights)
    module.eval()
    with torch.no_grad():
        out = module(torch.randn(5, N_INPUTS))
    assert torch.equal(out, torch.zeros(5))


@pytest.mark.parametrize("model", DEEP, ids=[m.type for m in DEEP])
def test_initial_weights_are_seeded(model: ModelSpec) -> None:
    a = initial_weights(model, N_INPUTS, seed=11)
    b = initial_weights(model, N_INPUTS, seed=11)
    c = initial_weights(model, N_INPUTS, seed=12)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["layers.0.weight"], c["layers.0.weight"])
    # hidden layers: non-zero, uniform within +-1/sqrt(fan_in)
    first = a["layers.0.weight"]
    assert np.abs(first).max() <= 1 / np.sqrt(N_INPUTS)
    assert np.abs(first).min() > 0
    assert first.std() > 0.1 / np.sqrt(N_INPUTS)
