"""The data quality report of an import: counts only, every one of them suppressed.

What it holds: rows read, patients, rows per table, patients rejected by reason, and for every
field (but the pseudonymous id) how many rows have it and how many miss it; for a category
field (or a code field with a fixed list, the biomarker LOINC codes) the count of every allowed
value, zeros included, and for a 0/1 flag the count of 0 and of 1; for an open code field
(sites, ICD-10, histology, agent, unit) the count of each code seen in at least ``threshold``
rows, and the rest merged into one bucket :data:`OTHER` (a rare code is itself identifying, so
it is never named). A biomarker's results are counted per marker, as field ``ER.result`` of
table ``biomarker`` (for each marker tested), not pooled in ``result``. Each extension feature
``ext.NAME`` is field ``NAME`` of table :data:`EXTENSION_TABLE`: how many patients have it and
miss it, and for text (mapped through a value map) its frequent values and :data:`OTHER`. No
numeric value, and no minimum or maximum, is ever reported.

Counts are published with every relation between them a reader knows, so they are suppressed
together (:mod:`oncofed.privacy.suppression`):

* each field's present + missing = the rows of its table (patients for an extension, the
  marker's tests for ``ER.result``), and its distribution adds up to present;
* patient rows = outcome rows = patients (validation keeps exactly one of each per patient);
  tumour rows = patients for a wide import (CSV, Parquet: one tumour per row, when the mapping
  gives tumour fields), tumour rows >= patients otherwise (every OMOP or FHIR patient has a
  primary cancer); in a wide import each marker is tested at most once per patient, and a
  biomarker unit is set only with a value;
* the validation rules between fields: an event needs its time (``os_event`` present <=
  ``os_days`` present, the same for rfs and dmfs), ``os_event`` 1 only when dead, dead never
  with ``os_event`` 0 (dead + ``os_event`` 0 <= patients), a cause of death only when dead;
* when rows read = patients + rejected (a source with one row per patient), patients and the
  rejected reasons add up to rows read.

A count from 1 to threshold - 1 is published as ``"<11"`` (for threshold 11), a count hidden to
protect one as ``"suppressed"``. The patient count is hidden only when nothing else can protect
a cell (in a small wide import, where tumour rows = patients, one tumour without a grade can
need it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from oncofed.cdm.fields import (
    BIOMARKERS,
    BY_TABLE,
    ENDPOINTS,
    KEY,
    RESULTS,
    TABLES,
    Field,
    TableName,
)
from oncofed.cdm.tables import CdmData
from oncofed.privacy.suppression import Line, cell, suppress
from oncofed.wire.profile import Cell, DataProfile, FieldProfile, SourceFormat

OTHER = "other codes"
"""The bucket of codes each seen in fewer than ``threshold`` rows."""
EXTENSION_TABLE = "ext"
"""The table name of the extension features in the report: ``ext`` + ``NAME``."""
WIDE_FORMATS: frozenset[SourceFormat] = frozenset({"csv", "parquet"})
"""Sources with one row per patient: one tumour each, each biomarker at most once each."""
FLAG_VALUES = ("0", "1")
_RESULT = "biomarker.result"


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

    def at_most(self, cells: list[int], total: int, rule: str | None = None) -> None:
        """The cells add up to at most the total, as validation ``rule`` guarantees (ValueError
        when they do not); without a rule, as every import guarantees, so only when they do
        (else the data came from no importer, and a reader's belief is wrong anyway)."""
        if sum(self.values[i] for i in cells) <= self.values[total]:
            self.lines.append(Line(tuple(cells), total, exact=False))
        elif rule is not None:
            raise ValueError(f"the profile needs validated data: {rule}")


@dataclass(frozen=True)
class _Field:
    """Where one field's counts are: present, missing and each value's."""

    table: str
    name: str
    present: int
    missing: int
    values: dict[str, int] | None


def _distribution(
    name: str, column: pa.ChunkedArray, allowed: tuple[str, ...] | None, threshold: int
) -> dict[str, int]:
    """How often each value occurs: every ``allowed`` value, or the frequent ones and OTHER."""
    counted = pc.value_counts(column.drop_null()).to_pylist() if len(column) else []
    seen: dict[str, int] = {item["values"]: item["counts"] for item in counted}
    if allowed is not None:
        if set(seen) - set(allowed):
            raise ValueError(f"{name} has values outside the model: validate first")
        return {value: seen.get(value, 0) for value in allowed}
    frequent = {code: n for code, n in sorted(seen.items()) if n >= threshold}
    return {**frequent, OTHER: sum(n for n in seen.values() if n < threshold)}


def _field(
    counts: _Counts,
    where: tuple[str, str],
    column: pa.ChunkedArray,
    rows: int,
    distribution: dict[str, int] | None,
) -> _Field:
    """Present and missing of ``column`` (missing: the entry ``rows`` minus present), and the
    ``distribution`` of its values, with their lines."""
    present = counts.add(len(column) - column.null_count)
    missing = counts.add(counts.values[rows] - counts.values[present])
    counts.line([present, missing], rows)
    values = None
    if distribution is not None:
        values = {value: counts.add(n) for value, n in distribution.items()}
        counts.line(list(values.values()), present)
    return _Field(*where, present, missing, values)


def _values(f: Field, column: pa.ChunkedArray, threshold: int) -> dict[str, int] | None:
    """The distribution of a field: of each allowed value, of 0 and 1 of a flag, of the
    frequent codes of an open code field; None for numbers and for ``biomarker.result``."""
    name = f"{f.table}.{f.name}"
    if f.kind == "flag":
        return _distribution(name, column.cast(pa.string()), FLAG_VALUES, threshold)
    if name == _RESULT or (f.values is None and f.kind != "code"):
        return None
    return _distribution(name, column, f.values, threshold)


def _table_fields(
    counts: _Counts, data: CdmData, rows: Mapping[TableName, int], threshold: int
) -> list[_Field]:
    """Every field of the model's tables but the id, in catalogue order, and each marker's
    results after ``biomarker.result``."""
    fields: list[_Field] = []
    for table in TABLES:
        for f in BY_TABLE[table]:
            if f.kind == "id":
                continue
            column = data[table][f.name]
            fields.append(
                _field(counts, (table, f.name), column, rows[table], _values(f, column, threshold))
            )
            if f"{table}.{f.name}" == _RESULT:
                codes = next(x for x in fields if (x.table, x.name) == ("biomarker", "code"))
                fields += _marker_results(counts, data, codes, threshold)
    return fields


def _marker_results(counts: _Counts, data: CdmData, codes: _Field, threshold: int) -> list[_Field]:
    """``ER.result`` and so on: each tested marker's results, adding up to its tests."""
    assert codes.values is not None  # the code field has a fixed list
    biomarker = data["biomarker"]
    fields = []
    for marker in BIOMARKERS:
        tests = codes.values[marker.loinc]
        if counts.values[tests]:
            results = biomarker.filter(pc.equal(biomarker["code"], marker.loinc))["result"]
            name = f"{marker.name}.result"
            dist = _distribution(f"biomarker.{name}", results, RESULTS, threshold)
            fields.append(_field(counts, ("biomarker", name), results, tests, dist))
    return fields


def _extension_fields(
    counts: _Counts, data: CdmData, patients: int, threshold: int
) -> list[_Field]:
    """Each extension feature: present and missing per patient, and the frequent values of
    text (a value map's codes)."""
    extensions = data.extensions
    if extensions is None:
        return []
    if extensions.num_rows > counts.values[patients]:
        raise ValueError("the profile needs validated data: one extension row per patient")
    fields = []
    for name in extensions.column_names:
        if name == KEY:
            continue
        column = extensions[name]
        text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        dist = _distribution(f"ext.{name}", column, None, threshold) if text else None
        fields.append(_field(counts, (EXTENSION_TABLE, name), column, patients, dist))
    return fields


def _table_rows(counts: _Counts, data: CdmData, patients: int, wide: bool) -> dict[TableName, int]:
    """The entry of each table's rows: patients for the patient and outcome tables, and for
    the tumour table of a wide import; tumour rows >= patients otherwise."""
    n = counts.values[patients]
    if data["outcome"].num_rows != n:
        raise ValueError("the profile needs validated data: one outcome row per patient")
    tumours = data["tumour"].num_rows
    rows: dict[TableName, int] = {"patient": patients, "outcome": patients}
    rows["tumour"] = patients if wide and tumours == n else counts.add(tumours)
    if not wide:  # every patient of an OMOP or FHIR import has a primary cancer
        counts.at_most([patients], rows["tumour"])
    for table in ("biomarker", "treatment"):
        rows[table] = counts.add(data[table].num_rows)
    return rows


def _relations(counts: _Counts, fields: list[_Field], patients: int, wide: bool) -> None:
    """The lines between fields: the rules between fields that validation checks, and what
    a wide import guarantees (each marker's tests, a unit only with a value)."""
    by_name = {(f.table, f.name): f for f in fields}

    def values(table: str, name: str) -> dict[str, int]:
        distribution = by_name[table, name].values
        assert distribution is not None  # a category or flag field
        return distribution

    outcome = {name: f for (table, name), f in by_name.items() if table == "outcome"}
    for e in ENDPOINTS:
        event, days = outcome[f"{e}_event"].present, outcome[f"{e}_days"].present
        counts.at_most([event], days, f"outcome.{e}_event: set without {e}_days")
    dead, os_event = values("outcome", "vital_status")["dead"], values("outcome", "os_event")
    counts.at_most([os_event["1"]], dead, "outcome.os_event: 1 but vital_status not dead")
    counts.at_most([dead, os_event["0"]], patients, "outcome.vital_status: dead but os_event 0")
    counts.at_most(
        [outcome["cause_of_death"].present],
        dead,
        "outcome.cause_of_death: set but vital_status not dead",
    )
    if wide:  # a mapping reads each marker from one column: one test per patient at most
        for tests in values("biomarker", "code").values():
            counts.at_most([tests], patients)
        unit, value = by_name["biomarker", "unit"].present, by_name["biomarker", "value"].present
        counts.at_most([unit], value)  # the unit of a value read, never alone


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

    ValueError when ``data`` was not validated (an outcome row per patient, known values, the
    rules between fields).
    """
    counts = _Counts()
    patients = counts.add(data["patient"].num_rows, protected=True)
    wide = source_format in WIDE_FORMATS
    rows = _table_rows(counts, data, patients, wide)
    read = counts.add(rows_read)
    reasons = {reason: counts.add(n) for reason, n in rejected.items()}
    if rows_read - data["patient"].num_rows == sum(rejected.values()):
        counts.line([patients, *reasons.values()], read)
    fields = _table_fields(counts, data, rows, threshold)
    fields += _extension_fields(counts, data, patients, threshold)
    _relations(counts, fields, patients, wide)
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
                present=shown(f.present),
                missing=shown(f.missing),
                values=None if f.values is None else {v: shown(e) for v, e in f.values.items()},
            )
            for f in fields
        ],
        extensions=data.extension_names,
    )
