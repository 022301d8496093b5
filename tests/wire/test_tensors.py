"""The tensor codec: safetensors round trips and every way a payload is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from oncofed.wire import tensors
from oncofed.wire.errors import BadTensorPayload, WireError
from oncofed.wire.messages import Decline, Evaluation, TrainResult
from oncofed.wire.stream import TensorFile, check_file

SHAPES: dict[str, tuple[int, ...]] = {
    "layers.0.weight": (3, 4),
    "layers.0.bias": (3,),
    "layers.1.weight": (1, 3),
}


@pytest.fixture
def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


@pytest.fixture
def meta() -> TrainResult:
    return TrainResult(
        task_id="task-1",
        n_train=42,
        train_loss=0.5,
        evaluation=Evaluation(n_eval=10, metrics={"auc": 0.75}),
        compute_seconds=1.5,
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _assert_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray], meta: TrainResult, message: str
) -> None:
    """``check_weights`` on the arrays and ``check_file`` on the encoded file both refuse."""
    with pytest.raises(BadTensorPayload, match=message):
        tensors.check_weights(weights, SHAPES)
    path = _write(tmp_path / "update.safetensors", tensors.encode(weights, meta))
    with pytest.raises(BadTensorPayload, match=message):
        check_file(path, SHAPES, TrainResult)


# -- round trips -------------------------------------------------------------------------


def test_encode_decode_round_trip(weights: dict[str, np.ndarray]) -> None:
    decoded = tensors.decode(tensors.encode(weights))
    assert set(decoded) == set(SHAPES)
    for name, array in weights.items():
        assert decoded[name].dtype == np.float32
        assert decoded[name].shape == SHAPES[name]
        np.testing.assert_array_equal(decoded[name], array)
    tensors.check_weights(decoded, SHAPES)  # accepted as is


def test_encode_casts_to_contiguous_float32() -> None:
    source = np.arange(12, dtype=np.float64).reshape(4, 3).T / 3  # float64, not C-contiguous
    decoded = tensors.decode(tensors.encode({"w": source}))
    assert decoded["w"].dtype == np.float32
    np.testing.assert_array_equal(decoded["w"], source.astype(np.float32))


def test_read_meta_round_trip(weights: dict[str, np.ndarray], meta: TrainResult) -> None:
    data = tensors.encode(weights, meta)
    assert tensors.read_meta(data, TrainResult) == meta
    header = tensors.read_header(data)
    assert set(SHAPES) <= set(header)
    assert header["layers.0.weight"]["shape"] == [3, 4]  # type: ignore[index]


def test_check_file_and_iter_file(
    tmp_path: Path, weights: dict[str, np.ndarray], meta: TrainResult
) -> None:
    path = _write(tmp_path / "update.safetensors", tensors.encode(weights, meta))
    assert check_file(path, SHAPES, TrainResult) == meta
    with TensorFile(path) as opened:
        pieces = list(opened.chunks(chunk=2))
    streamed = [
        (name, np.concatenate([c for n, _, c in pieces if n == name]).reshape(SHAPES[name]))
        for name in dict.fromkeys(n for n, _, _ in pieces)
    ]
    assert sorted(name for name, _ in streamed) == sorted(SHAPES)
    for name, array in streamed:
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, weights[name])


def test_sha256_is_hex_digest_of_bytes() -> None:
    assert tensors.sha256(b"") == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert tensors.sha256(b"oncofed") == hashlib.sha256(b"oncofed").hexdigest()


def test_bad_payload_is_a_wire_error() -> None:
    assert issubclass(BadTensorPayload, WireError)
    assert issubclass(BadTensorPayload, ValueError)


# -- rejected layouts and values ---------------------------------------------------------


def test_wrong_shape_is_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray], meta: TrainResult
) -> None:
    weights["layers.0.weight"] = np.zeros((4, 3), dtype=np.float32)
    _assert_rejected(
        tmp_path, weights, meta, r"layers\.0\.weight: shape \(4, 3\), expected \(3, 4\)"
    )


def test_wrong_dtype_is_rejected(tmp_path: Path, weights: dict[str, np.ndarray]) -> None:
    as_float64 = {k: v.astype(np.float64) for k, v in weights.items()}
    data = safetensors.numpy.save(as_float64, metadata={"oncofed": "{}"})
    path = _write(tmp_path / "f64.safetensors", data)
    with pytest.raises(BadTensorPayload, match=r"dtype F64, expected float32"):
        check_file(path, SHAPES, TrainResult)
    with pytest.raises(BadTensorPayload, match=r"dtype float64, expected float32"):
        tensors.check_weights(tensors.decode(data), SHAPES)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
def test_non_finite_values_are_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray], meta: TrainResult, value: float
) -> None:
    weights["layers.0.bias"][1] = value
    _assert_rejected(tmp_path, weights, meta, r"layers\.0\.bias: contains NaN or infinite")


def test_missing_tensor_is_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray], meta: TrainResult
) -> None:
    del weights["layers.1.weight"]
    _assert_rejected(tmp_path, weights, meta, r"missing \['layers\.1\.weight'\], unexpected \[\]")


def test_extra_tensor_is_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray], meta: TrainResult
) -> None:
    weights["layers.9.weight"] = np.zeros((1, 1), dtype=np.float32)
    _assert_rejected(tmp_path, weights, meta, r"missing \[\], unexpected \['layers\.9\.weight'\]")


# -- malformed bytes ---------------------------------------------------------------------


def test_garbage_bytes_are_rejected(tmp_path: Path) -> None:
    garbage = b"this is not a safetensors payload at all"
    with pytest.raises(BadTensorPayload, match="not a valid safetensors payload"):
        tensors.decode(garbage)
    with pytest.raises(BadTensorPayload, match="header length exceeds the payload"):
        tensors.read_header(garbage)
    with pytest.raises(BadTensorPayload, match="header length exceeds the payload"):
        tensors.read_meta(garbage, TrainResult)
    path = _write(tmp_path / "garbage.safetensors", garbage)
    with pytest.raises(BadTensorPayload, match="header length exceeds the payload"):
        check_file(path, SHAPES, TrainResult)


def test_payload_shorter_than_header_is_rejected() -> None:
    with pytest.raises(BadTensorPayload, match="shorter than a safetensors header"):
        tensors.read_header(b"\x01\x02\x03")
    with pytest.raises(BadTensorPayload, match="not a valid safetensors payload"):
        tensors.decode(b"\x01\x02\x03")


def test_truncated_payload_is_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray], meta: TrainResult
) -> None:
    truncated = tensors.encode(weights, meta)[:-5]
    with pytest.raises(BadTensorPayload, match="not a valid safetensors payload"):
        tensors.decode(truncated)
    path = _write(tmp_path / "truncated.safetensors", truncated)
    with pytest.raises(BadTensorPayload, match="data section does not match the header"):
        check_file(path, SHAPES, TrainResult)


def test_header_length_beyond_payload_is_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray]
) -> None:
    good = tensors.encode(weights)
    lying = (len(good) + 1).to_bytes(8, "little") + good[8:]
    with pytest.raises(BadTensorPayload, match="header length exceeds the payload"):
        tensors.read_header(lying)
    with pytest.raises(BadTensorPayload, match="not a valid safetensors payload"):
        tensors.decode(lying)
    path = _write(tmp_path / "lying.safetensors", lying)
    with pytest.raises(BadTensorPayload, match="header length exceeds the payload"):
        check_file(path, SHAPES, TrainResult)


def test_header_that_is_not_a_json_object_is_rejected() -> None:
    not_json = b"{nope"
    with pytest.raises(BadTensorPayload, match="header is not JSON"):
        tensors.read_header(len(not_json).to_bytes(8, "little") + not_json)
    a_list = json.dumps([1, 2]).encode()
    with pytest.raises(BadTensorPayload, match="header is not an object"):
        tensors.read_header(len(a_list).to_bytes(8, "little") + a_list)


# -- the oncofed header entry ------------------------------------------------------------


def test_missing_oncofed_metadata_is_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray]
) -> None:
    for data in (
        tensors.encode(weights),  # no metadata at all
        safetensors.numpy.save(weights, metadata={"other": "{}"}),  # metadata, not ours
    ):
        with pytest.raises(BadTensorPayload, match="has no 'oncofed' metadata"):
            tensors.read_meta(data, TrainResult)
        path = _write(tmp_path / "nometa.safetensors", data)
        with pytest.raises(BadTensorPayload, match="has no 'oncofed' metadata"):
            check_file(path, SHAPES, TrainResult)


def test_metadata_not_matching_the_model_is_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray]
) -> None:
    data = tensors.encode(weights, Decline(reason="not today"))
    with pytest.raises(BadTensorPayload, match="invalid result header") as excinfo:
        tensors.read_meta(data, TrainResult)
    assert "task_id" in str(excinfo.value)  # pydantic's report names the missing field
    path = _write(tmp_path / "wrongmeta.safetensors", data)
    with pytest.raises(BadTensorPayload, match="invalid result header") as excinfo:
        check_file(path, SHAPES, TrainResult)
    assert "task_id" in str(excinfo.value)


def test_metadata_that_is_not_json_is_rejected(
    tmp_path: Path, weights: dict[str, np.ndarray]
) -> None:
    data = safetensors.numpy.save(weights, metadata={"oncofed": "not json"})
    with pytest.raises(BadTensorPayload, match="invalid result header"):
        tensors.read_meta(data, TrainResult)
    path = _write(tmp_path / "badjson.safetensors", data)
    with pytest.raises(BadTensorPayload, match="invalid result header"):
        check_file(path, SHAPES, TrainResult)


def test_invalid_metadata_values_are_rejected(
    weights: dict[str, np.ndarray], meta: TrainResult
) -> None:
    entry = json.loads(meta.model_dump_json())
    entry["n_train"] = 0  # must be >= 1
    data = safetensors.numpy.save(weights, metadata={"oncofed": json.dumps(entry)})
    with pytest.raises(BadTensorPayload, match="n_train"):
        tensors.read_meta(data, TrainResult)
