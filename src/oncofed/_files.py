"""Files and folders only their owner can use (files 0600, folders 0700), whatever the
process umask: the edge's store, credential, ledger and egress log, the orchestrator's
database, blobs and keys. A umask only takes bits away, so each is created with the owner's
bits alone, and one found open to others is closed to them before it is written."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700
_FLAGS = {
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
}


def private_dir(path: Path) -> Path:
    """``path`` and the missing folders above it, created owner-only (an existing one is left
    as it is: a site may have chosen to share a folder above its edge directory)."""
    missing = [folder for folder in (path, *path.parents) if not folder.is_dir()]
    for folder in reversed(missing):
        try:
            folder.mkdir(DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # another process made it (owner-only, when it is ours)
        os.chmod(folder, DIR_MODE)  # mkdir's mode passes through the umask
    return path


def private_open(path: Path, mode: str = "wb", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for writing (``w``, ``a``, ``a+`` or ``x``, text or ``b``) with the file
    owner-only: created so, or made so before a byte is written."""
    descriptor = os.open(path, _FLAGS[mode[0] + "+" * ("+" in mode)], FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
        return os.fdopen(descriptor, mode, **kwargs)
    except BaseException:
        os.close(descriptor)
        raise


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path``, owner-only."""
    with private_open(path, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def write_over(path: Path, data: bytes) -> None:
    """``write_private``, but an existing file's bytes written over in place and cut to
    ``data``'s length only when longer: on ext4, truncating a file to nothing and writing it
    again makes its close wait for the new blocks' allocation (``auto_da_alloc``), and under
    other processes' syncs that wait was a tenth of an edge's busy time."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        _write_all(descriptor, data)
        if os.fstat(descriptor).st_size > len(data):
            os.ftruncate(descriptor, len(data))
    finally:
        os.close(descriptor)


def append_private(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created when missing), owner-only, in one ``write`` where the
    kernel takes it whole: no buffered text file, whose set-up (a ``stat``, a terminal check,
    three seeks) made a line of the egress log cost five system calls more. Each releases the
    interpreter lock, and in an edge serving many sites a release under contention costs two
    thread switches."""
    descriptor = os.open(path, _FLAGS["a"], FILE_MODE)
    try:
        _write_all(descriptor, data)
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, data: bytes) -> None:
    """Make the open file owner-only, then write all of ``data`` to it."""
    os.fchmod(descriptor, FILE_MODE)
    written = 0
    while written < len(data):
        written += os.write(descriptor, data[written:])


def private_file(path: Path) -> Path:
    """``path`` created empty when missing (a SQLite database before SQLite opens it: its
    journal and write-ahead log take its mode), owner-only either way."""
    private_open(path, "ab").close()
    return path


def replace_file(path: Path, data: bytes | str, mode: int = FILE_MODE) -> None:
    """Replace ``path`` whole with ``data`` (a reader sees the old file or the new one, never
    a part; synced before the rename), with ``mode`` (owner-only by default) whatever the
    umask."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(os.open(scratch, _FLAGS["w"], mode), "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


LOCK_FILE = ".lock"


class FolderInUse(OSError):
    """Another process holds the folder's lock (``exclusive``)."""


@contextmanager
def exclusive(folder: Path, holder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while the block runs: ``flock`` on its ``.lock``
    file, which the system releases when the process ends however it ends, so a lock is never
    left stale. ``FolderInUse`` names the folder, and the process holding it, when another
    process (``holder``: what it runs, for the message) has it."""
    handle = private_open(folder / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            pid = handle.read().strip()
            by = f" (process {pid})" if pid.isdigit() else ""
            raise FolderInUse(
                f"{folder} is in use by another {holder}{by}: stop it first, or give another "
                "directory"
            ) from exc
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()
