"""The data quality report of an import: counts only, every one of them suppressed.

What it holds: rows read, patients, rows per table, patients rejected by reason, and for every
field (but the pseudonymous id) how many rows have it and how many miss it; for a category
field (or a code field with a fixed list, the biomarker LOINC codes) the count of every allowed
value, zeros included; for an open code field (sites, ICD-10, histology, agent, unit) the count
of each code seen in at least ``threshold`` rows, and the rest merged into one bucket
:data:`OTHER` (a rare code is itself identifying, so it is never named). No numeric value, and
no minimum or maximum, is ever reported.

Counts are published with the sums they make up, so they are suppressed together
(:mod:`oncofed.privacy.suppression`): each field's present + missing = the rows of its table;
its distribution adds up to present; and, when rows read = patients + rejected (a source with one
row per patient), patients and the rejected reasons add up to rows read. A count from 1 to
threshold - 1 is published as ``"<11"`` (for threshold 11), a count hidden to protect one as
``"suppressed"``. The patient count is hidden only when nothing else can protect a cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from oncofed.cdm.fields import BY_TABLE, TABLES, Field, TableName
from oncofed.cdm.tables import CdmData
from oncofed.privacy.suppression import Line, cell, suppress
from oncofed.wire.profile import Cell, DataProfile, FieldProfile, SourceFormat

OTHER = "other codes"
"""The bucket of codes each seen in fewer than ``threshold`` rows."""


class _Counts:
    """Counts to publish together, and the lines (sums) that link them."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.protected: list[bool] = []
        self.lines: list[Line] = []

    def add(self, value: int, *, protected: bool = False) -> int:
        self.values.append(value)
        self.protected.append(protected)
        return len(self.values) - 1

    def line(self, cells: list[int], total: int) -> None:
        self.lines.append(Line(tuple(cells), total))


def _distribution(f: Field, column: pa.ChunkedArray, threshold: int) -> dict[str, int]:
    """How often each value occurs: every allowed value, or the frequent codes and OTHER."""
    counted = pc.value_counts(column.drop_null()).to_pylist() if len(column) else []
    seen: dict[str, int] = {item["values"]: item["counts"] for item in counted}
    if f.values is not None:
        unknown = set(seen) - set(f.values)
        if unknown:
            raise ValueError(f"{f.table}.{f.name} has values outside the model: validate first")
        return {value: seen.get(value, 0) for value in f.values}
    frequent = {code: n for code, n in sorted(seen.items()) if n >= threshold}
    return {**frequent, OTHER: sum(n for n in seen.values() if n < threshold)}


def profile(
    data: CdmData,
    *,
    dataset: str,
    source_format: SourceFormat,
    rows_read: int,
    rejected: Mapping[str, int],
    threshold: int,
) -> DataProfile:
    """The suppressed data quality report of validated ``data``.

    ValueError when ``data`` was not validated (an outcome row per patient, known values).
    """
    counts = _Counts()
    patients = counts.add(data["patient"].num_rows, protected=True)
    if data["outcome"].num_rows != data["patient"].num_rows:
        raise ValueError("the profile needs validated data: one outcome row per patient")
    rows: dict[TableName, int] = {
        table: patients if table in ("patient", "outcome") else counts.add(data[table].num_rows)
        for table in TABLES
    }
    read = counts.add(rows_read)
    reasons = {reason: counts.add(n) for reason, n in rejected.items()}
    if rows_read - data["patient"].num_rows == sum(rejected.values()):
        counts.line([patients, *reasons.values()], read)
    fields: list[tuple[Field, int, int, dict[str, int] | None]] = []
    for table in TABLES:
        for f in BY_TABLE[table]:
            if f.kind == "id":
                continue
            column = data[table][f.name]
            present = counts.add(len(column) - column.null_count)
            missing = counts.add(column.null_count)
            counts.line([present, missing], rows[table])
            values = None
            if f.values is not None or f.kind == "code":
                dist = _distribution(f, column, threshold)
                values = {value: counts.add(n) for value, n in dist.items()}
                counts.line(list(values.values()), present)
            fields.append((f, present, missing, values))
    marks = suppress(counts.values, counts.lines, threshold, protected=counts.protected)

    def shown(entry: int) -> Cell:
        return cell(counts.values[entry], int(marks[entry]), threshold)

    return DataProfile(
        dataset=dataset,
        source_format=source_format,
        imported_at=datetime.now(UTC),
        threshold=threshold,
        rows_read=shown(read),
        patients=shown(patients),
        rejected={reason: shown(entry) for reason, entry in reasons.items()},
        tables={table: shown(rows[table]) for table in TABLES},
        fields=[
            FieldProfile(
                table=f.table,
                field=f.name,
                present=shown(present),
                missing=shown(missing),
                values=None if values is None else {v: shown(e) for v, e in values.items()},
            )
            for f, present, missing, values in fields
        ],
        extensions=data.extension_names,
    )
