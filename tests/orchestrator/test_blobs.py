"""The blob store keeps small blobs in memory once read (``BlobStore.small``): every site
downloads the round's global model and every update is measured against it. The files of
answers it is done with are written again by the next spools (``BlobStore.retire``)."""

from __future__ import annotations

import hashlib
import os
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


@pytest.mark.parametrize("made", [False, True], ids=["on-demand", "made-first"])
def test_with_its_folders_made_first_a_blob_makes_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: bool
) -> None:
    """Made first (``make_folders``, as the server starts), every folder a blob can go in is
    there, owner-only: storing a blob then syncs its file and its folder only. Left to the
    first blob, its folder is made and the store's folder synced too."""
    store = BlobStore(tmp_path / "blobs")
    if made:
        store.make_folders()
        folders = [p for p in store.root.iterdir() if p.name != "tmp"]
        assert sorted(p.name for p in folders) == blobs.FOLDERS and len(folders) == 256
        assert {p.stat().st_mode & 0o777 for p in folders} == {0o700}
    synced: list[Path] = []
    monkeypatch.setattr(blobs, "sync", synced.append)
    sha = stored(store, b"model")
    folder = store.path(sha).parent
    assert synced[-1] == folder and synced[-2].parent == store.tmp  # the file, then its folder
    assert synced[:-2] == ([] if made else [store.root])


def test_a_retired_blob_is_forgotten(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = stored(store, b"model")
    assert store.small(sha) == b"model"
    store.retire(sha)
    with pytest.raises(NotFound):
        store.small(sha)
    assert not store.path(sha).exists()


def test_a_retired_file_is_emptied_and_written_again_by_the_next_spool(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = stored(store, b"an update of many bytes" * 100)
    inode = store.path(sha).stat().st_ino
    store.retire(sha)
    with store.spool() as (handle, path):
        assert os.fstat(handle.fileno()).st_ino == inode  # no file made for it
        handle.write(b"short")
    new = hashlib.sha256(b"short").hexdigest()
    store.adopt(path, new)
    assert store.path(new).read_bytes() == b"short"  # nothing of the old bytes left
    assert store.path(new).stat().st_mode & 0o777 == 0o600
    with store.spool() as (handle, _):  # the spare was taken: a new file
        assert os.fstat(handle.fileno()).st_ino != inode


def test_spares_are_bounded_in_number_and_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path)
    monkeypatch.setattr(blobs, "SPARES", 2)
    monkeypatch.setattr(blobs, "SPARE_BYTES", 25)
    shas = [stored(store, data) for data in (b"ten bytes!", b"20 bytes, too many..", b"ten.")]
    for sha in [*shas, stored(store, b"ten bytes?")]:
        store.retire(sha)
    assert sorted(p.stat().st_size for p in store.tmp.iterdir()) == [4, 10]
    assert len(list(store.root.glob("??/*"))) == 0  # the others deleted


def test_a_spare_removed_meanwhile_is_passed_over(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.retire(stored(store, b"one"))
    (store.tmp / "tmp0half").write_bytes(b"an upload a crash left")
    assert store.clear_spool() == 1  # at start-up: the spares go too, not counted as uploads
    assert list(store.tmp.iterdir()) == []
    store.retire(stored(store, b"two"))
    for spare in store.tmp.iterdir():
        spare.unlink()  # by someone else
    with store.spool() as (handle, path):
        handle.write(b"three")
    store.adopt(path, hashlib.sha256(b"three").hexdigest())
    assert [p.read_bytes() for p in store.root.glob("??/*")] == [b"three"]


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
