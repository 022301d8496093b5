"""The edge's local data store: registered tables, kept as Parquet inside the edge directory."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from oncofed.edge.errors import StoreError

_CSV_NULLS = pacsv.ConvertOptions(strings_can_be_null=True)  # "", NA, NULL... are missing
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class LocalStore:
    """Named tables a site admin registered; rows are read here and never leave the site."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(self, name: str, source: Path) -> pa.Table:
        """Register a CSV or Parquet file under ``name`` (replacing an earlier one)."""
        if not _NAME.match(name):
            raise StoreError(f"dataset name {name!r}: use letters, digits, '_', '-', '.'")
        table = read_table(source)
        self.root.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, self._path(name))
        return table

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.parquet"))

    def load(self, name: str) -> dict[str, np.ndarray]:
        """The table as numpy columns (nulls become NaN or None)."""
        path = self._path(name)
        if not _NAME.match(name) or not path.exists():
            raise StoreError(f"dataset {name!r} is not registered at this site")
        table = pq.read_table(path)
        return {col: table[col].to_numpy(zero_copy_only=False) for col in table.column_names}

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.parquet"


def read_table(source: Path) -> pa.Table:
    """Read a CSV or Parquet file, with a clear error for anything else or a broken file."""
    if not source.is_file():
        raise StoreError(f"{source}: no such file")
    suffix = source.suffix.lower()
    try:
        if suffix == ".csv":
            table = pacsv.read_csv(source, convert_options=_CSV_NULLS)
        elif suffix in (".parquet", ".pq"):
            table = pq.read_table(source)
        else:
            raise StoreError(f"{source}: expected a .csv or .parquet file")
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"{source}: cannot be read: {exc}") from exc
    if table.num_rows == 0 or table.num_columns == 0:
        raise StoreError(f"{source}: the table is empty")
    names = table.column_names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise StoreError(f"{source}: duplicated column names {duplicated}")
    return table
