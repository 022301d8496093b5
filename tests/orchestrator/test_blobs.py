"""The blob store keeps small blobs in memory once read (``BlobStore.small``): every site
downloads the round's global model and every update is measured against it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from oncofed.orchestrator import blobs
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.errors import NotFound


def stored(store: BlobStore, data: bytes) -> str:
    with store.spool() as (handle, path):
        handle.write(data)
    sha = hashlib.sha256(data).hexdigest()
    store.adopt(path, sha)
    return sha


def test_a_small_blob_is_read_once_and_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = stored(store, b"model")
    assert store.small(sha) == b"model"
    store.path(sha).write_bytes(b"other")  # never done to a blob: shows it is not read again
    assert store.small(sha) == b"model"


def test_a_large_blob_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs, "SMALL_BLOB", 4)
    store = BlobStore(tmp_path)
    assert store.small(stored(store, b"model")) is None


def test_a_deleted_blob_is_forgotten(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = stored(store, b"model")
    assert store.small(sha) == b"model"
    store.delete(sha)
    with pytest.raises(NotFound):
        store.small(sha)


def test_only_the_most_recently_read_are_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    shas = [stored(store, f"model {i}".encode()) for i in range(blobs.KEPT_BLOBS + 1)]
    for sha in shas:
        store.small(sha)
    assert store.small(shas[-1]) is not None  # the newest is kept, and read again last
    for sha in shas:  # the oldest was let go: it is read from its file again
        store.path(sha).write_bytes(b"changed")
    assert store.small(shas[0]) == b"changed"
    assert store.small(shas[-1]) == f"model {blobs.KEPT_BLOBS}".encode()
