"""The edge's local data store: imported datasets in the common data model, as Parquet tables
inside the edge directory, each with its data quality report. Rows never leave the site."""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from oncofed._files import private_dir, private_open, write_private
from oncofed.cdm.errors import RejectedPatient
from oncofed.cdm.fields import TABLES
from oncofed.cdm.frame import Columns
from oncofed.cdm.tables import CdmData
from oncofed.edge.errors import StoreError
from oncofed.wire.profile import DataProfile

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
EXTENSIONS = "extension"
PROFILE = "profile.json"
REJECTED = "rejected-patients.csv"
"""The patients an import left out, one row each: source key, where, every reason. Read by
the site admin; never published or sent (it holds the source's own patient keys)."""


def check_dataset_name(name: str) -> str:
    if not _NAME.match(name) or name.startswith("."):
        raise StoreError(f"dataset name {name!r}: use letters, digits, '_', '-', '.'")
    return name


class LocalStore:
    """Datasets a site admin imported, by name; every folder and file owner-only, whatever
    the umask (``oncofed._files``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The dataset loaded last, by its name and the identity of its files, with its
        # columns as jobs ask for them: an import replaces the dataset's folder, so a changed
        # inode or time means read it again.
        self._loaded: tuple[str, tuple[int, int], Columns] | None = None
        self._loading = threading.Lock()

    def save(
        self,
        name: str,
        data: CdmData,
        profile: DataProfile,
        rejections: Sequence[RejectedPatient] = (),
    ) -> None:
        """Store ``data`` (already validated and pseudonymised) under ``name``, with the list
        of patients left out (:data:`REJECTED`, for the site admin: it holds source keys),
        replacing an earlier import of that name only once the new one is completely written."""
        target = self.root / check_dataset_name(name)
        private_dir(self.root)
        self._loaded = None
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))  # mode 700
        try:
            for table in TABLES:
                _write_table(data[table], staging / f"{table}.parquet")
            if data.extensions is not None:
                _write_table(data.extensions, staging / f"{EXTENSIONS}.parquet")
            write_private(staging / PROFILE, profile.model_dump_json(indent=2) + "\n")
            _write_rejections(staging / REJECTED, rejections)
            retired = self.root / f".{name}.retired"
            shutil.rmtree(retired, ignore_errors=True)
            if target.exists():
                target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
            self.refused_path(name).unlink(missing_ok=True)  # a later import replaced it
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        found = (p.parent.name for p in self.root.glob(f"*/{PROFILE}"))
        return sorted(name for name in found if not name.startswith("."))  # not staging

    def load(self, name: str) -> CdmData:
        """The dataset's tables (kept in memory until another dataset is loaded or this one
        is imported again: its tasks of a job read it once, not at every round)."""
        return self.columns(name).data

    def columns(self, name: str) -> Columns:
        """The dataset's variables (``cdm.frame.Columns``), kept with its tables."""
        folder = self._folder(name)
        try:
            stamp = (folder / PROFILE).stat()
            version = (stamp.st_ino, stamp.st_mtime_ns)
            with self._loading:
                if self._loaded is not None and self._loaded[:2] == (name, version):
                    return self._loaded[2]
                tables = {t: pq.read_table(folder / f"{t}.parquet") for t in TABLES}
                extra = folder / f"{EXTENSIONS}.parquet"
                extensions = pq.read_table(extra) if extra.exists() else None
                columns = Columns(CdmData(tables, extensions))
                self._loaded = (name, version, columns)
                return columns
        except (OSError, ValueError) as exc:
            raise StoreError(f"dataset {name!r} is damaged ({exc}); import it again") from exc

    def profile(self, name: str) -> DataProfile:
        path = self.profile_path(name)
        try:
            return DataProfile.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise StoreError(f"{path} is damaged ({exc}); import the dataset again") from exc

    def profile_path(self, name: str) -> Path:
        return self._folder(name) / PROFILE

    def rejections_path(self, name: str) -> Path:
        return self._folder(name) / REJECTED

    def refused_path(self, name: str) -> Path:
        """Where the patients of a refused import of ``name`` are listed (no one passed)."""
        return self.root / f"{check_dataset_name(name)}.{REJECTED}"

    def save_refused(self, name: str, rejections: Sequence[RejectedPatient]) -> Path:
        """List the patients of an import of ``name`` that was refused: none passed."""
        path = self.refused_path(name)
        private_dir(self.root)
        path.unlink(missing_ok=True)
        _write_rejections(path, rejections)
        return path

    def profiles(self) -> list[DataProfile]:
        return [self.profile(name) for name in self.names()]

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        if not _NAME.match(name) or not (folder / PROFILE).exists():
            known = ", ".join(self.names()) or "none"
            raise StoreError(f"dataset {name!r} is not imported at this site (imported: {known})")
        return folder


def _write_table(rows: pa.Table, path: Path) -> None:
    """A Parquet file of patient-level ``rows``, readable by its owner only."""
    with private_open(path, "xb") as out:
        pq.write_table(rows, out)


def _write_rejections(path: Path, rejections: Sequence[RejectedPatient]) -> None:
    """The CSV of ``rejections``, readable by its owner only; reasons joined by ``"; "``."""
    with private_open(path, "x", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["source_key", "where", "reasons"])
        for rejected in rejections:
            writer.writerow([rejected.key, rejected.where, "; ".join(rejected.reasons)])
