"""Chunked reading and writing of safetensors files, so memory stays bounded for any model size.

The safetensors library reads and writes whole models at once. The orchestrator must never
hold a site's whole update (let alone several), so it reads files a chunk at a time and writes
new models the same way. The format is the library's own (8-byte little-endian header length,
a JSON header of dtype, shape and byte offsets, then the raw little-endian data); every file
written here is read back by the library in the tests. Two dtypes are exchanged: float32
(models and updates) and uint64 (the limbs of masked inputs under secure aggregation).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from oncofed.wire.errors import BadTensorPayload

CHUNK = 1 << 20
"""Elements per chunk (4 MB of float32)."""
F32 = np.dtype("<f4")
DTYPES: dict[str, np.dtype[Any]] = {"F32": F32, "U64": np.dtype("<u8")}
"""The dtypes read and written here, by their safetensors names."""
META_KEY = "oncofed"
MAX_HEADER = 1 << 20  # ~10,000 tensors' entries plus metadata; bounds parsing cost
M = TypeVar("M", bound=BaseModel)
Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class Entry:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section
    end: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class TensorFile:
    """A safetensors file (or payload in memory) whose header has been checked, read one
    chunk at a time."""

    def __init__(self, source: Path | bytes) -> None:
        self._memory = source if isinstance(source, bytes) else None
        if isinstance(source, bytes):
            self._handle: io.BytesIO | io.BufferedReader = io.BytesIO(source)
            size = len(source)
        else:
            self._handle = source.open("rb")
            size = source.stat().st_size
        try:
            self.entries, self.metadata, self._data_start = _read_layout(self._handle, size)
        except BaseException:
            self._handle.close()
            raise
        self.order = tuple(sorted(self.entries, key=lambda name: self.entries[name].begin))
        """The tensors' names in the order of their data."""

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def check(self, shapes: Shapes, dtype: str = "F32") -> None:
        """Exactly the agreed names and shapes, all of ``dtype``, every float finite."""
        missing, extra = (
            sorted(set(shapes) - set(self.entries)),
            sorted(set(self.entries) - set(shapes)),
        )
        if missing or extra:
            raise BadTensorPayload(f"tensor names differ: missing {missing}, unexpected {extra}")
        for name, entry in self.entries.items():
            if entry.dtype != dtype:
                raise BadTensorPayload(
                    f"{name}: dtype {entry.dtype}, expected {DTYPES[dtype].name}"
                )
            if entry.shape != tuple(shapes[name]):
                raise BadTensorPayload(
                    f"{name}: shape {entry.shape}, expected {tuple(shapes[name])}"
                )
        if DTYPES[dtype].kind != "f":
            return
        whole = self.flat({name: self.entries[name].size for name in self.order})
        if whole is not None and np.isfinite(whole).all():  # else each, to name the tensor
            return
        for name, _, chunk in self.chunks():
            if not np.isfinite(chunk).all():
                raise BadTensorPayload(f"{name}: contains NaN or infinite values")

    def flat(self, sizes: Mapping[str, int]) -> np.ndarray | None:
        """Every element at once, as one read-only float32 array (a view of the payload, no
        copy), when the payload is in memory and holds exactly the float32 tensors of ``sizes``
        (name -> elements) one after another in that order; else None (``read`` it)."""
        if self._memory is None or tuple(sizes) != self.order:
            return None
        for name, size in sizes.items():
            entry = self.entries[name]
            if entry.dtype != "F32" or entry.size != size:
                return None
        count = sum(sizes.values())
        return np.frombuffer(self._memory, dtype=F32, count=count, offset=self._data_start)

    def meta(self, model: type[M]) -> M:
        """The ``oncofed`` entry of the header's metadata, validated as ``model``."""
        return meta_of(self.metadata, model)

    def read(self, name: str, start: int = 0, count: int | None = None) -> np.ndarray:
        """Flat elements ``start .. start + count`` of tensor ``name``, in its own dtype."""
        entry = self.entries[name]
        if entry.dtype not in DTYPES:
            raise BadTensorPayload(f"{name}: dtype {entry.dtype} is not exchanged")
        dtype = DTYPES[entry.dtype]
        count = entry.size - start if count is None else count
        if start < 0 or count < 0 or start + count > entry.size:
            raise BadTensorPayload(f"{name}: read beyond the tensor")
        self._handle.seek(self._data_start + entry.begin + start * dtype.itemsize)
        data = np.empty(count, dtype=dtype)
        if self._handle.readinto(data.data.cast("B")) != data.nbytes:
            raise BadTensorPayload(f"{name}: file is truncated")
        return data

    def chunks(self, chunk: int = CHUNK) -> Iterator[tuple[str, int, np.ndarray]]:
        """``(name, flat offset, elements)`` over every tensor, in file order."""
        for name, entry in sorted(self.entries.items(), key=lambda item: item[1].begin):
            for start in range(0, entry.size, chunk):
                yield name, start, self.read(name, start, min(chunk, entry.size - start))


def check_file(source: Path | TensorFile, shapes: Shapes, meta_model: type[M]) -> M:
    """Validate a whole update (layout, values, header) in bounded memory; its header."""
    if isinstance(source, Path):
        with TensorFile(source) as tensors:
            return check_file(tensors, shapes, meta_model)
    source.check(shapes)
    return source.meta(meta_model)


def read_header(handle: BinaryIO, size: int) -> dict[str, Any]:
    """The JSON header of a ``size``-byte safetensors payload, read from its start."""
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise BadTensorPayload("payload is shorter than a safetensors header")
    length = int.from_bytes(prefix, "little")
    if length > min(size - 8, MAX_HEADER):
        raise BadTensorPayload("safetensors header length exceeds the payload")
    try:
        header = json.loads(handle.read(length))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, absurd nesting or numbers
        raise BadTensorPayload(f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise BadTensorPayload("safetensors header is not an object")
    return header


def meta_of(metadata: object, model: type[M]) -> M:
    """The ``oncofed`` entry of a header's ``__metadata__``, validated as ``model``."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get(META_KEY), str):
        raise BadTensorPayload(f"safetensors header has no {META_KEY!r} metadata")
    try:
        return model.model_validate_json(metadata[META_KEY])
    except ValidationError as exc:
        raise BadTensorPayload(f"invalid result header: {exc}") from exc


def _read_layout(handle: BinaryIO, size: int) -> tuple[dict[str, Entry], dict[str, str], int]:
    header = read_header(handle, size)
    length = handle.tell() - 8  # the data section starts right after the header
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadTensorPayload("safetensors metadata must map names to strings")
    entries = {name: _entry(name, spec) for name, spec in header.items()}
    expected = 0
    for name, entry in sorted(entries.items(), key=lambda item: item[1].begin):
        if entry.begin != expected:
            raise BadTensorPayload(f"{name}: data offsets leave a gap or overlap")
        expected = entry.end
    if 8 + length + expected != size:
        raise BadTensorPayload("safetensors data section does not match the header")
    return entries, metadata, 8 + length


_ITEMSIZE = {
    "F16": 2,
    "BF16": 2,
    "F32": 4,
    "F64": 8,
    "I8": 1,
    "U8": 1,
    "I16": 2,
    "I32": 4,
    "I64": 8,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "BOOL": 1,
}


def _entry(name: str, spec: object) -> Entry:
    try:
        if not isinstance(spec, dict):
            raise TypeError
        dtype, shape, (begin, end) = spec["dtype"], tuple(spec["shape"]), spec["data_offsets"]
        valid = all(isinstance(v, int) and v >= 0 for v in (*shape, begin, end))
        if (
            not valid
            or dtype not in _ITEMSIZE
            or end - begin != math.prod(shape) * _ITEMSIZE[dtype]
        ):
            raise ValueError
    except (KeyError, TypeError, ValueError) as exc:
        raise BadTensorPayload(f"{name}: malformed tensor entry in the header") from exc
    return Entry(dtype, shape, begin, end)


class TensorWriter:
    """Writes a safetensors file of one dtype piece by piece, in any order, then hashes it.

    ``shapes`` fixes the tensors and the layout up front, so each ``write`` of a
    ``(name, flat offset, elements)`` piece goes straight to its place in the file.
    """

    def __init__(
        self,
        handle: BinaryIO,
        shapes: Shapes,
        meta: BaseModel | None = None,
        dtype: str = "F32",
    ) -> None:
        self._handle = handle
        self._dtype = DTYPES[dtype]
        header: dict[str, object] = {}
        if meta is not None:
            header["__metadata__"] = {META_KEY: meta.model_dump_json()}
        places: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, shape in shapes.items():
            size = math.prod(shape)
            end = offset + size * self._dtype.itemsize
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, end]}
            places[name] = (offset, size)
            offset = end
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the library aligns the data section to 8 bytes
        handle.write(len(text).to_bytes(8, "little") + text)
        start = 8 + len(text)
        self._places = {name: (start + at, size) for name, (at, size) in places.items()}
        self._covered = dict.fromkeys(shapes, 0)
        self.sha256 = ""

    def write(self, name: str, offset: int, piece: np.ndarray) -> None:
        at, size = self._places[name]
        if offset < 0 or offset + piece.size > size:
            raise ValueError(f"{name}: elements beyond the tensor")
        self._handle.seek(at + offset * self._dtype.itemsize)
        self._handle.write(np.ascontiguousarray(piece, dtype=self._dtype).tobytes())
        self._covered[name] += piece.size

    def finish(self) -> str:
        """Check every element was written once; return (and keep) the file's SHA-256."""
        short = [n for n, (_, size) in self._places.items() if self._covered[n] != size]
        if short:
            raise ValueError(f"tensors not written exactly once: {short}")
        self._handle.flush()
        self._handle.seek(0)
        digest = hashlib.sha256()
        while block := self._handle.read(CHUNK * self._dtype.itemsize):
            digest.update(block)
        self.sha256 = digest.hexdigest()
        return self.sha256
