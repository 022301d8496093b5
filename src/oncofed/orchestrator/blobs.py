"""Content-addressed file store for model weights and results (named by SHA-256)."""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from oncofed._db import sync
from oncofed._files import private_dir
from oncofed.orchestrator.errors import NotFound
from oncofed.wire.stream import Shapes, TensorWriter

_HEX = set("0123456789abcdef")
FOLDERS = [a + b for a in sorted(_HEX) for b in sorted(_HEX)]
"""The folders blobs go in, by the first two hex digits of their SHA-256."""
SMALL_BLOB = 4 << 20
"""Largest blob kept in memory once read (``BlobStore.small``)."""
KEPT_BLOBS = 8
"""Small blobs kept in memory at most (the most recently read)."""
SPARES = 1024
SPARE_BYTES = 256 << 20
"""Files, and bytes, of answers the orchestrator is done with kept at most as spares
(``BlobStore.retire``), emptied and written again by the next spools rather than deleted and
new ones made: on ext4 a file made beside many just deleted cost more CPU than its 400 KB
written (the search for a free inode looks at each recently deleted one; DEVELOPERS.md,
"Twenty-fifth pass")."""
SPARE_PREFIX = "spare-"
_serials = itertools.count()  # spare files' names, unique in the process


class BlobStore:
    """``root/ab/abcdef...``; writes go through a temporary file and an atomic rename. Its
    folders and files are owner-only (``tempfile.mkstemp`` creates files so), whatever the
    umask."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        private_dir(self.tmp)
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._kept_lock = threading.Lock()
        self._spares: dict[Path, int] = {}  # spare file -> its size
        self._spare_bytes = 0
        self._spares_lock = threading.Lock()

    def clear_spool(self) -> int:
        """Remove uploads left half-written by a crash (how many is returned, spares not
        counted), and the spares; only when no request is running."""
        with self._spares_lock:
            self._spares.clear()
            self._spare_bytes = 0
        leftovers = [p for p in self.tmp.iterdir() if p.is_file()]
        for path in leftovers:
            path.unlink(missing_ok=True)
        return sum(not path.name.startswith(SPARE_PREFIX) for path in leftovers)

    def make_folders(self) -> None:
        """Every folder a blob can go in (``FOLDERS``), made now when missing. Made by the
        first blob it holds, a folder cost that blob's round a folder made and the store's
        folder synced besides its own syncs: in a new orchestrator's first jobs, most rounds
        (their models go to 256 folders at random)."""
        missing = [self.root / name for name in FOLDERS if not (self.root / name).is_dir()]
        for folder in missing:
            private_dir(folder)
        if missing:
            sync(self.root)

    def path(self, sha: str) -> Path:
        if len(sha) != 64 or not set(sha) <= _HEX:
            raise NotFound(f"no blob {sha!r}")
        return self.root / sha[:2] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).exists()

    @contextmanager
    def spool(self) -> Iterator[tuple[BinaryIO, Path]]:
        """An empty temporary file in the store (a spare, ``retire``, or a new one); removed
        on error, to be ``adopt``-ed on success."""
        fd, path = self._spare()
        try:
            with os.fdopen(fd, "w+b") as handle:
                yield handle, path
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    @contextmanager
    def write_tensors(self, shapes: Shapes) -> Iterator[TensorWriter]:
        """A new float32 safetensors blob written piece by piece; its hash is the writer's
        ``sha256`` once the block ends."""
        with self.spool() as (handle, path):
            writer = TensorWriter(handle, shapes)
            yield writer
            writer.finish()
        self.adopt(path, writer.sha256)

    def adopt(self, path: Path, sha: str) -> Path:
        """Move a spooled file into place under its hash (the caller computed it), on disk
        before this returns: its bytes, then the directory entry naming it. The caller
        records it in the database afterwards, so a committed row never names a lost file."""
        target = self.path(sha)
        if target.exists():
            path.unlink(missing_ok=True)
            return target
        if not target.parent.exists():
            private_dir(target.parent)
            sync(self.root)
        sync(path)
        os.replace(path, target)
        sync(target.parent)
        return target

    def small(self, sha: str) -> bytes | None:
        """The bytes of a blob of at most ``SMALL_BLOB`` bytes, kept in memory once read (a
        blob never changes: a global model is downloaded by every site and every update is
        measured against it); None for a larger one."""
        with self._kept_lock:
            if (data := self._kept.get(sha)) is not None:
                self._kept.move_to_end(sha)
                return data
        path = self.path(sha)
        try:
            if path.stat().st_size > SMALL_BLOB:
                return None
            data = path.read_bytes()
        except FileNotFoundError as exc:  # never stored, or deleted meanwhile
            raise NotFound(f"no blob {sha}") from exc
        with self._kept_lock:
            self._kept[sha] = data
            while len(self._kept) > KEPT_BLOBS:
                self._kept.popitem(last=False)
        return data

    def read(self, sha: str) -> bytes:
        path = self.path(sha)
        if not path.exists():
            raise NotFound(f"no blob {sha}")
        return path.read_bytes()

    def _spare(self) -> tuple[int, Path]:
        """A spare emptied, opened for writing, when there is one; else a new file's."""
        while True:
            with self._spares_lock:
                if not self._spares:
                    break
                path = next(iter(self._spares))
                self._spare_bytes -= self._spares.pop(path)
            try:
                return os.open(path, os.O_RDWR | os.O_TRUNC), path
            except FileNotFoundError:  # removed meanwhile (``clear_spool``): the next
                continue
        fd, name = tempfile.mkstemp(dir=self.tmp)
        return fd, Path(name)

    def retire(self, sha: str) -> None:
        """Done with an answer's blob for good (no one reads it again, nor holds it open):
        kept as a spare for a later ``spool`` while the spares allow (``SPARES``,
        ``SPARE_BYTES``), else deleted."""
        with self._kept_lock:
            self._kept.pop(sha, None)
        path = self.path(sha)
        with self._spares_lock:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return
            if len(self._spares) < SPARES and self._spare_bytes + size <= SPARE_BYTES:
                spare = self.tmp / f"{SPARE_PREFIX}{os.getpid()}-{next(_serials)}"
                os.replace(path, spare)
                self._spares[spare] = size
                self._spare_bytes += size
                return
        path.unlink(missing_ok=True)
