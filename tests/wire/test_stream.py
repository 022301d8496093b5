"""Chunked safetensors reading and writing: bounded memory, byte-compatible with the library."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from oncofed.wire.errors import BadTensorPayload
from oncofed.wire.stream import TensorFile, TensorWriter

SHAPES = {"w": (3, 5), "b": (5,), "empty": (0,)}


def test_pieces_written_in_any_order_are_read_by_the_library(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    buffer = io.BytesIO()
    writer = TensorWriter(buffer, SHAPES)
    writer.write("b", 3, b[3:])
    writer.write("w", 7, w.reshape(-1)[7:])
    writer.write("b", 0, b[:3])
    writer.write("w", 0, w.reshape(-1)[:7])
    sha = writer.finish()
    data = buffer.getvalue()
    loaded = safetensors.numpy.load(data)
    np.testing.assert_array_equal(loaded["w"], w)
    np.testing.assert_array_equal(loaded["b"], b)
    assert loaded["empty"].shape == (0,)
    assert sha == hashlib.sha256(data).hexdigest()
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    with TensorFile(path) as opened:
        opened.check(SHAPES)
        np.testing.assert_array_equal(opened.read("w", 4, 6), w.reshape(-1)[4:10])
        assert [(n, o, c.size) for n, o, c in opened.chunks(chunk=4)] == [
            ("w", 0, 4),
            ("w", 4, 4),
            ("w", 8, 4),
            ("w", 12, 3),
            ("b", 0, 4),
            ("b", 4, 1),
        ]


def test_incomplete_or_overflowing_writes_are_refused() -> None:
    writer = TensorWriter(io.BytesIO(), SHAPES)
    writer.write("w", 0, np.zeros(15))
    with pytest.raises(ValueError, match="not written exactly once"):
        writer.finish()
    with pytest.raises(ValueError, match="beyond the tensor"):
        writer.write("b", 3, np.zeros(3))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}, "malformed tensor entry"),
        ({"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}, "malformed tensor entry"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}, "gap or overlap"),
        ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "malformed tensor entry"),
        ("not an object", "malformed tensor entry"),
    ],
)
def test_malformed_headers_are_refused(tmp_path: Path, entry: object, message: str) -> None:
    header = json.dumps({"x": entry}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 12)
    with pytest.raises(BadTensorPayload, match=message):
        TensorFile(path)


def test_uint64_tensors_are_written_and_read_like_float32(tmp_path: Path) -> None:
    shapes = {"limbs": (3, 4), "sites": (4,)}
    values = np.array([[0, 1, 2**63, 2**64 - 1]] * 3, dtype=np.uint64)
    buffer = io.BytesIO()
    writer = TensorWriter(buffer, shapes, dtype="U64")
    writer.write("sites", 0, np.arange(4, dtype=np.uint64))
    writer.write("limbs", 0, values.reshape(-1))
    writer.finish()
    data = buffer.getvalue()
    np.testing.assert_array_equal(safetensors.numpy.load(data)["limbs"], values)
    path = tmp_path / "masked.safetensors"
    path.write_bytes(data)
    for source in (data, path):  # a payload in memory or a file
        with TensorFile(source) as opened:
            opened.check(shapes, "U64")
            limbs = opened.read("limbs", 2, 5)
            assert limbs.dtype == np.uint64
            np.testing.assert_array_equal(limbs, values.reshape(-1)[2:7])
            with pytest.raises(BadTensorPayload, match="dtype U64, expected float32"):
                opened.check(shapes)  # float32 callers never take a masked input


def test_a_payload_in_memory_is_checked_like_a_file() -> None:
    data = safetensors.numpy.save({"w": np.array([1.0, np.nan], dtype=np.float32)})
    with TensorFile(data) as opened, pytest.raises(BadTensorPayload, match="NaN or infinite"):
        opened.check({"w": (2,)})
    with pytest.raises(BadTensorPayload, match="data section does not match the header"):
        TensorFile(data[:-4])


def test_a_payload_in_memory_is_read_whole_only_as_it_is_laid_out(tmp_path: Path) -> None:
    w, b = np.arange(15, dtype=np.float32).reshape(3, 5), np.full(5, -1.5, dtype=np.float32)
    data = safetensors.numpy.save({"w": w, "b": b})  # the library writes them by name
    with TensorFile(data) as opened:
        assert opened.order == ("b", "w")
        whole = opened.flat({"b": 5, "w": 15})
        assert whole is not None and not whole.flags.writeable
        np.testing.assert_array_equal(whole, np.concatenate([b, w.reshape(-1)]))
        assert opened.flat({"w": 15, "b": 5}) is None  # another order
        assert opened.flat({"b": 4, "w": 16}) is None  # as many elements, other tensors
        assert opened.flat({"b": 5}) is None
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    with TensorFile(path) as opened:  # a file is read a chunk at a time
        assert opened.flat({"b": 5, "w": 15}) is None
    limbs = safetensors.numpy.save({"b": np.zeros(5, np.uint64), "w": np.zeros(15, np.float32)})
    with TensorFile(limbs) as opened:
        assert opened.flat({"b": 5, "w": 15}) is None


def test_a_non_finite_value_in_memory_is_named_by_its_tensor() -> None:
    values = {"a": np.zeros(4, np.float32), "z": np.array([0.0, np.inf], np.float32)}
    with (
        TensorFile(safetensors.numpy.save(values)) as opened,
        pytest.raises(BadTensorPayload, match=r"^z: contains NaN or infinite"),
    ):
        opened.check({"a": (4,), "z": (2,)})
