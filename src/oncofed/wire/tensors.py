"""Tensor codec: safetensors bytes with an optional JSON header, never pickle or JSON lists."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import TypeVar

import numpy as np
import safetensors.numpy
from pydantic import BaseModel

from oncofed.wire.errors import BadTensorPayload
from oncofed.wire.stream import META_KEY, Shapes, meta_of
from oncofed.wire.stream import read_header as read_stream_header

Weights = dict[str, np.ndarray]
M = TypeVar("M", bound=BaseModel)
DTYPE = np.dtype(np.float32)


def encode(tensors: Mapping[str, np.ndarray], meta: BaseModel | None = None) -> bytes:
    """Serialise named arrays (C-contiguous float32) and an optional pydantic header."""
    arrays = {k: np.ascontiguousarray(v, dtype=DTYPE) for k, v in tensors.items()}
    metadata = {META_KEY: meta.model_dump_json()} if meta is not None else None
    return safetensors.numpy.save(arrays, metadata=metadata)


def read_header(data: bytes) -> dict[str, object]:
    """The JSON header of a safetensors payload, checked against the payload's length."""
    return read_stream_header(io.BytesIO(data), len(data))


def read_meta(data: bytes, model: type[M]) -> M:
    """Validate the payload's ``oncofed`` header entry as ``model``."""
    return meta_of(read_header(data).get("__metadata__"), model)


def decode(data: bytes) -> Weights:
    """Parse a safetensors payload into arrays."""
    try:
        return safetensors.numpy.load(data)
    except Exception as exc:  # safetensors raises its own untyped errors
        raise BadTensorPayload(f"not a valid safetensors payload: {exc}") from exc


def check_weights(weights: Mapping[str, np.ndarray], shapes: Shapes) -> None:
    """Refuse anything but exactly the agreed names, shapes, float32 and finite values."""
    missing, extra = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
    if missing or extra:
        raise BadTensorPayload(f"tensor names differ: missing {missing}, unexpected {extra}")
    for name, array in weights.items():
        if array.dtype != DTYPE:
            raise BadTensorPayload(f"{name}: dtype {array.dtype}, expected float32")
        if tuple(array.shape) != tuple(shapes[name]):
            raise BadTensorPayload(f"{name}: shape {array.shape}, expected {tuple(shapes[name])}")
        if not np.isfinite(array).all():
            raise BadTensorPayload(f"{name}: contains NaN or infinite values")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
