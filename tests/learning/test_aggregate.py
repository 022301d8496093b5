"""An update held in memory is measured and folded over all its elements at once: exactly the
figures of the chunked path, whatever its layout, clipped or not."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from oncofed.learning.aggregate import HeldStart, WeightedMean, clip_scale
from oncofed.learning.registry import initial_weights, parameter_shapes
from oncofed.learning.steps import InMemory
from oncofed.orchestrator.updates import fold
from oncofed.wire import tensors
from oncofed.wire.spec import ModelSpec
from oncofed.wire.stream import TensorFile, TensorWriter

MODEL = ModelSpec.model_validate({"type": "mlp", "hidden": [8, 4]})
SHAPES = parameter_shapes(MODEL, 6)


def _updates(count: int) -> list[dict[str, np.ndarray]]:
    start, rng = initial_weights(MODEL, 6, 3), np.random.default_rng(5)
    return [
        {k: (v + 10 ** rng.uniform(-3, 0) * rng.normal(size=v.shape)).astype(np.float32)
         for k, v in start.items()}
        for _ in range(count)
    ]  # fmt: skip


def _mean(
    sources: Sequence[bytes | Path], held: bool, clip: float
) -> tuple[list[float], dict[str, np.ndarray]]:
    """Each update's clip factor, and the weighted mean, from a held or a streamed start."""
    start = InMemory(initial_weights(MODEL, 6, 3))
    origin = HeldStart(start, SHAPES) if held else start
    total, scales = WeightedMean(SHAPES), []
    for weight, source in enumerate(sources, start=1):
        with TensorFile(source) as update:
            scales.append(clip_scale(update, origin, SHAPES, clip))
            fold(total, update, origin, scales[-1], float(weight))
    return scales, total.result()


@pytest.mark.parametrize("clip", [1e6, 0.5])
def test_an_update_in_memory_is_folded_at_once_exactly_as_a_chunk_at_a_time(
    tmp_path: Path, clip: float
) -> None:
    models = _updates(12)
    in_memory = [tensors.encode(m) for m in models]
    files = []
    for i, data in enumerate(in_memory):
        (path := tmp_path / f"{i}.safetensors").write_bytes(data)
        files.append(path)
    with TensorFile(in_memory[0]) as update:  # the held start reads it whole
        assert HeldStart(InMemory(models[0]), SHAPES).moved(update) is not None
    scales, mean = _mean(in_memory, held=True, clip=clip)
    assert (min(scales) < 1.0) == (clip < 1)
    for other in (_mean(files, held=True, clip=clip), _mean(in_memory, held=False, clip=clip)):
        assert other[0] == scales
        for name in SHAPES:
            np.testing.assert_array_equal(other[1][name], mean[name])


def test_an_update_laid_out_otherwise_is_read_by_name() -> None:
    """A payload whose tensors are not in the library's order (another writer's) is read a
    chunk at a time, by name: the same mean."""
    models = _updates(3)
    assert list(SHAPES) != sorted(SHAPES)  # the writer below keeps the model's own order
    reordered = []
    for model in models:
        handle = io.BytesIO()
        writer = TensorWriter(handle, SHAPES)
        for name, values in model.items():
            writer.write(name, 0, values.reshape(-1))
        writer.finish()
        reordered.append(handle.getvalue())
    start = HeldStart(InMemory(initial_weights(MODEL, 6, 3)), SHAPES)
    with TensorFile(reordered[0]) as update:
        assert start.moved(update) is None
    expected = _mean([tensors.encode(m) for m in models], held=True, clip=1e6)[1]
    for name, values in _mean(reordered, held=True, clip=1e6)[1].items():
        np.testing.assert_array_equal(values, expected[name])


def test_a_whole_model_of_the_wrong_size_is_refused_and_counts_nothing() -> None:
    total = WeightedMean(SHAPES)
    size = sum(int(np.prod(s)) for s in SHAPES.values())
    with pytest.raises(ValueError, match=f"expected {size}"):
        total.add_flat(np.zeros(size + 1, np.float32), 1.0)
    with pytest.raises(ValueError, match="weight must be positive"):
        total.add_flat(np.zeros(size, np.float32), 0.0)
    assert total.count == 0 and total.total_weight == 0.0
