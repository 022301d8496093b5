"""Tensor codec: safetensors bytes with an optional JSON header, never pickle or JSON lists."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import safetensors.numpy
from pydantic import BaseModel, ValidationError
from safetensors import safe_open

from oncofed.wire.errors import BadTensorPayload

Weights = dict[str, np.ndarray]
Shapes = Mapping[str, tuple[int, ...]]
M = TypeVar("M", bound=BaseModel)
META_KEY = "oncofed"
DTYPE = np.dtype(np.float32)


def encode(tensors: Mapping[str, np.ndarray], meta: BaseModel | None = None) -> bytes:
    """Serialise named arrays (C-contiguous float32) and an optional pydantic header."""
    arrays = {k: np.ascontiguousarray(v, dtype=DTYPE) for k, v in tensors.items()}
    metadata = {META_KEY: meta.model_dump_json()} if meta is not None else None
    return safetensors.numpy.save(arrays, metadata=metadata)


def read_header(data: bytes) -> dict[str, object]:
    """The JSON header of a safetensors payload, checked against the payload's length."""
    if len(data) < 8:
        raise BadTensorPayload("payload is shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8 or size > 100_000_000:
        raise BadTensorPayload("safetensors header length exceeds the payload")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadTensorPayload(f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise BadTensorPayload("safetensors header is not an object")
    return header


def read_meta(data: bytes, model: type[M]) -> M:
    """Validate the payload's ``oncofed`` header entry as ``model``."""
    metadata = read_header(data).get("__metadata__")
    if not isinstance(metadata, dict) or not isinstance(metadata.get(META_KEY), str):
        raise BadTensorPayload(f"safetensors header has no {META_KEY!r} metadata")
    try:
        return model.model_validate_json(metadata[META_KEY])
    except ValidationError as exc:
        raise BadTensorPayload(f"invalid result header: {exc}") from exc


def decode(data: bytes) -> Weights:
    """Parse a safetensors payload into arrays."""
    try:
        return safetensors.numpy.load(data)
    except Exception as exc:  # safetensors raises its own untyped errors
        raise BadTensorPayload(f"not a valid safetensors payload: {exc}") from exc


def _check_names(names: Iterable[str], shapes: Shapes) -> None:
    names = set(names)
    missing, extra = sorted(set(shapes) - names), sorted(names - set(shapes))
    if missing or extra:
        raise BadTensorPayload(f"tensor names differ: missing {missing}, unexpected {extra}")


def _check_layout(name: str, dtype: str, shape: Sequence[int], shapes: Shapes) -> None:
    if dtype not in ("F32", "float32"):
        raise BadTensorPayload(f"{name}: dtype {dtype}, expected float32")
    if tuple(shape) != tuple(shapes[name]):
        raise BadTensorPayload(f"{name}: shape {tuple(shape)}, expected {tuple(shapes[name])}")


def _check_finite(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        raise BadTensorPayload(f"{name}: contains NaN or infinite values")


def check_weights(weights: Mapping[str, np.ndarray], shapes: Shapes) -> None:
    """Refuse anything but exactly the agreed names, shapes, float32 and finite values."""
    _check_names(weights, shapes)
    for name, array in weights.items():
        _check_layout(name, str(array.dtype), array.shape, shapes)
        _check_finite(name, array)


def check_file(path: Path, shapes: Shapes, meta_model: type[M]) -> M:
    """Validate a safetensors file tensor by tensor (one in memory at a time); its header."""
    with _open(path) as handle:
        _check_names(handle.keys(), shapes)
        for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            view = handle.get_slice(name)
            _check_layout(name, view.get_dtype(), view.get_shape(), shapes)
        for name in handle.keys():  # noqa: SIM118
            _check_finite(name, handle.get_tensor(name))
        metadata = handle.metadata() or {}
    if META_KEY not in metadata:
        raise BadTensorPayload(f"safetensors header has no {META_KEY!r} metadata")
    try:
        return meta_model.model_validate_json(metadata[META_KEY])
    except ValidationError as exc:
        raise BadTensorPayload(f"invalid result header: {exc}") from exc


def iter_file(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Tensors of a (validated) safetensors file, loaded one at a time."""
    with _open(path) as handle:
        for name in handle.keys():  # noqa: SIM118
            yield name, handle.get_tensor(name)


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    try:
        handle = safe_open(str(path), framework="numpy")
    except Exception as exc:  # safetensors raises untyped errors on malformed input
        raise BadTensorPayload(f"not a valid safetensors payload: {exc}") from exc
    with handle:
        yield handle


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
