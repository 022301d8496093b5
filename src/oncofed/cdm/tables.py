"""The model's tables as Arrow: one schema per table, and the set of tables an import yields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oncofed.cdm.fields import BY_TABLE, EXTENSION_PREFIX, KEY, TABLES, Field, Kind, TableName

_ARROW: dict[Kind, pa.DataType] = {
    "id": pa.string(),
    "category": pa.string(),
    "code": pa.string(),
    "text": pa.string(),
    "integer": pa.int32(),
    "day": pa.int32(),
    "flag": pa.int8(),
    "number": pa.float64(),
}


def arrow_type(f: Field) -> pa.DataType:
    return _ARROW[f.kind]


SCHEMAS: dict[TableName, pa.Schema] = {
    table: pa.schema([pa.field(f.name, arrow_type(f)) for f in BY_TABLE[table]]) for table in TABLES
}


def conform(table: TableName, data: pa.Table | Mapping[str, object]) -> pa.Table:
    """``data`` in the exact schema of ``table``: columns in model order, absent ones null.

    Raises ValueError for a column the model does not have or a value that does not cast.
    """
    source = data if isinstance(data, pa.Table) else pa.table(dict(data))
    schema = SCHEMAS[table]
    unknown = sorted(set(source.column_names) - set(schema.names))
    if unknown:
        raise ValueError(f"{table}: {unknown} are not fields of the data model")
    columns = []
    for target in schema:
        if target.name in source.column_names:
            columns.append(source[target.name].cast(target.type))
        else:
            columns.append(pa.nulls(source.num_rows, target.type))
    return pa.Table.from_arrays(columns, schema=schema)


def true_mask(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow mask as numpy, null counted as false."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def empty(table: TableName) -> pa.Table:
    return SCHEMAS[table].empty_table()


@dataclass
class CdmData:
    """All tables of one dataset. In an importer's output ``patient_id`` still holds the
    source's own key (used only to link rows); the import pipeline replaces it with a random
    pseudonym before anything is stored.

    ``extensions`` has ``patient_id`` plus one column per site-specific extension feature,
    named without the ``ext.`` prefix (numbers, or strings already mapped to codes).
    """

    tables: dict[TableName, pa.Table] = field(default_factory=dict)
    extensions: pa.Table | None = None

    def __post_init__(self) -> None:
        self.tables = {name: conform(name, self.tables.get(name, empty(name))) for name in TABLES}
        if self.extensions is not None and KEY not in self.extensions.column_names:
            raise ValueError(f"extensions need a {KEY!r} column")

    def __getitem__(self, table: TableName) -> pa.Table:
        return self.tables[table]

    @property
    def extension_names(self) -> list[str]:
        if self.extensions is None:
            return []
        return [EXTENSION_PREFIX + c for c in self.extensions.column_names if c != KEY]

    def num_rows(self) -> dict[str, int]:
        return {name: t.num_rows for name, t in self.tables.items()}
