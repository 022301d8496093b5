"""Import a wide CSV or Parquet file (one row per patient, one primary tumour each) through a
mapping file: every column the mapping reads passes the de-identification guard, then is
converted with vectorised Arrow compute into the model's tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from oncofed.cdm.deid import check_column, check_name
from oncofed.cdm.errors import MappingError, SourceError
from oncofed.cdm.fields import BIOMARKER_BY_NAME, KEY, PATIENT_FIELDS, Field, TableName
from oncofed.cdm.mapping import (
    UNITS,
    BiomarkerSource,
    ExtensionSource,
    FieldSource,
    Scalar,
    TabularMapping,
    TreatmentSource,
    load_mapping,
    source_text,
)
from oncofed.cdm.tables import CdmData, arrow_type, conform

NULLS = ["", "NA", "NULL"]
"""CSV cells read as missing."""
_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_DECIMALS = 6
"""Numbers converted to another unit are rounded to this many decimals (binary noise only)."""
_INT_LIMITS = {pa.int8(): 2**7 - 1, pa.int32(): 2**31 - 1}


@dataclass(frozen=True)
class TabularImport:
    """The result of an import.

    ``data`` holds the model tables; ``patient_id`` is the 1-based data row number as text.
    ``errors`` has the cells that could not be converted, in the shape validation takes
    (``oncofed.cdm.validate.ConversionErrors``): under ``"patient"`` (whose rows are the source
    rows, in order), a reason maps to the mask of the rows that failed it. A reason names where
    and the rule, never a value, as validation's reasons do: a model field as ``table.field``
    (``"tumour.tumour_size_mm: not a number"``), and what the mapping's other sections fill by
    the name a job gives it (``"biomarker.ER.value: not a number"``, ``"treatment.endocrine:
    neither received nor not_received"``, ``"ext.NAME: not a number"``). Those cells are null
    in ``data``, and validation rejects the patients. It is empty when every cell converted. A
    value that a value map does not cover is kept as it is, so that validation rejects it;
    extensions have no catalogue to validate against, so such a value is also flagged
    (``"ext.NAME: not in the value map"``).
    """

    data: CdmData
    rows_read: int
    ignored_columns: list[str]
    errors: dict[TableName, dict[str, pa.BooleanArray]]


def import_tabular(source: Path, mapping: TabularMapping | Path) -> TabularImport:
    """Import ``source`` (.csv or .parquet) with ``mapping`` (a mapping or its YAML file).

    Raises SourceError (unreadable, empty or duplicated columns), MappingError (an invalid
    mapping, or a column the file does not have) and IdentifierRefused (the guard).
    """
    m = mapping if isinstance(mapping, TabularMapping) else load_mapping(mapping)
    table = read_source(source, _text_columns(m))
    uses = list(m.columns())
    missing = [u for u in uses if u.column not in table.column_names]
    if missing:
        listed = ", ".join(table.column_names)
        raise MappingError(
            "\n".join(
                f"{m.where(u.loc)}: column {u.column!r} is not in {source.name} "
                f"(its columns: {listed})"
                for u in missing
            )
        )
    for column, role in dict.fromkeys((u.column, u.role) for u in uses):
        kind = table.schema.field(column).type
        if not _supported(kind):
            raise SourceError(
                f"{source}: column {column!r} is of type {kind}; a mapped column holds numbers, "
                "text, booleans or dates"
            )
        check_column(column, table[column], role=role)
    for name in m.extensions:
        check_name(name, role="feature")
    rows = _Rows(table, m.date_format)
    tables = _wide_tables(rows, m.fields)
    if m.biomarkers:
        tables["biomarker"] = pa.concat_tables([_biomarker(rows, b) for b in m.biomarkers])
    if m.treatments:
        tables["treatment"] = pa.concat_tables([_treatment(rows, t) for t in m.treatments])
    extensions = _extensions(rows, m.extensions) if m.extensions else None
    used = {u.column for u in uses}
    return TabularImport(
        data=CdmData(tables=tables, extensions=extensions),
        rows_read=table.num_rows,
        ignored_columns=[c for c in table.column_names if c not in used],
        errors={"patient": rows.errors} if rows.errors else {},
    )


def read_source(source: Path, text_columns: Collection[str] = ()) -> pa.Table:
    """A .csv (cells in ``NULLS`` are missing; ``text_columns`` are read as text, so that
    ``01`` stays ``01``) or .parquet file, with unique column names and at least one row."""
    suffix = source.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise SourceError(f"{source}: not a .csv or .parquet file")
    try:
        if suffix == ".csv":
            options = pacsv.ConvertOptions(
                null_values=NULLS,
                strings_can_be_null=True,
                column_types=dict.fromkeys(text_columns, pa.string()),
            )
            table = pacsv.read_csv(source, convert_options=options)
        else:
            table = pq.read_table(source)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{source}: cannot be read: {exc}") from exc
    names = table.column_names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SourceError(f"{source}: duplicated columns: {', '.join(duplicated)}")
    if table.num_rows == 0:
        raise SourceError(f"{source}: has no rows")
    return table


def _supported(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _supported(kind.value_type)
    checks = (
        pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal, pa.types.is_boolean,
        pa.types.is_string, pa.types.is_large_string, pa.types.is_date, pa.types.is_timestamp,
        pa.types.is_null,
    )  # fmt: skip
    return any(check(kind) for check in checks)


def _text_columns(m: TabularMapping) -> set[str]:
    """Columns compared as text (value maps, treatment flags) or holding codes."""
    columns = {
        src.column
        for name, src in m.fields.items()
        if src.column is not None
        and (src.values is not None or PATIENT_FIELDS[name].kind == "code")
    }
    columns |= {b.result for b in m.biomarkers if b.result is not None and b.values is not None}
    columns |= {t.column for t in m.treatments}
    columns |= {e.column for e in m.extensions.values() if e.values is not None}
    return columns


class _Rows:
    """Conversions of the source's columns, one value per source row, with the masks of the
    cells that failed (``errors``)."""

    def __init__(self, table: pa.Table, date_format: str) -> None:
        self.table, self.date_format, self.n = table, date_format, table.num_rows
        self.ids = pc.cast(pa.array(np.arange(1, self.n + 1)), pa.string())
        self.errors: dict[str, pa.BooleanArray] = {}

    def flag(self, reason: str, mask: pa.Array) -> None:
        """Record the rows of ``mask`` (nulls are not flagged) as failing for ``reason``."""
        mask = pc.fill_null(mask, False)
        if pc.any(mask).as_py():
            before = self.errors.get(reason)
            self.errors[reason] = mask if before is None else pc.or_(before, mask)

    def column(self, name: str) -> pa.Array:
        array = self.table[name].combine_chunks()
        return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array

    @staticmethod
    def text(array: pa.Array) -> pa.Array:
        """Values as text, the way value maps compare them (``1``, ``2.5``, ``true``)."""
        return array if pa.types.is_string(array.type) else pc.cast(array, pa.string())

    def mapped(self, array: pa.Array, values: Mapping[str, Scalar]) -> tuple[pa.Array, pa.Array]:
        """``array`` through a value map (values it does not cover kept as they are), and the
        mask of those uncovered values."""
        text = self.text(array)
        index = pc.index_in(text, value_set=pa.array(list(values), pa.string()))
        targets = pa.array([source_text(v) for v in values.values()], pa.string())
        uncovered = pc.and_(pc.is_valid(text), pc.is_null(index))
        return pc.coalesce(pc.take(targets, index), text), uncovered

    def numbers(self, array: pa.Array, path: str) -> pa.Array:
        """Float64 values; text that is not a number, NaN and infinities become null, flagged
        ``PATH: not a number``."""
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            text = pc.utf8_trim_whitespace(array)
            number = pc.match_substring_regex(text, _NUMBER)
            self.flag(f"{path}: not a number", pc.invert(number))
            array = pc.if_else(number, text, None)
        values = pc.cast(array, pa.float64())
        finite = pc.is_finite(values)
        self.flag(f"{path}: not a number", pc.invert(finite))
        return pc.if_else(finite, values, None)

    def integers(self, values: pa.Array, path: str, kind: pa.DataType) -> pa.Array:
        """Int64 values of float64 ``values``: fractions and values beyond the storage type
        become null, flagged ``PATH: not a whole number`` or ``PATH: out of range``."""
        whole = pc.equal(values, pc.floor(values))
        fits = pc.less_equal(pc.abs(values), _INT_LIMITS[kind])
        self.flag(f"{path}: not a whole number", pc.invert(whole))
        self.flag(f"{path}: out of range", pc.and_(whole, pc.invert(fits)))
        return pc.cast(pc.if_else(pc.and_(whole, fits), values, None), pa.int64())

    def dates(self, name: str, path: str) -> pa.Array:
        """Date32 values of a date, timestamp or text column (text in the mapping's
        ``date_format``; text that is not a date becomes null, flagged ``PATH: not a date``)."""
        array = self.column(name)
        kind = array.type
        if pa.types.is_date(kind) or pa.types.is_timestamp(kind) or pa.types.is_null(kind):
            return pc.cast(array, pa.date32())
        text = pc.utf8_trim_whitespace(self.text(array))
        parsed = _strict_dates(text, self.date_format)
        self.flag(f"{path}: not a date", pc.and_(pc.is_valid(text), pc.is_null(parsed)))
        return parsed

    def span(self, f: Field, date_column: str, origin_column: str) -> pa.Array:
        """Days from ``origin`` to ``date``; for a field in years, the whole years reached at
        ``origin`` since ``date`` (the age at diagnosis of a person born on ``date``)."""
        date, origin = self.dates(date_column, _where(f)), self.dates(origin_column, _where(f))
        if f.unit != "a":
            return pc.days_between(origin, date)
        years = pc.subtract(pc.year(origin), pc.year(date))
        before = pc.less(_month_day(origin), _month_day(date))
        return pc.subtract(years, pc.cast(before, pa.int64()))

    def converted(self, f: Field, raw: pa.Array, src: FieldSource) -> pa.Array:
        """Column values through the value map, as numbers in the model's unit or as text."""
        if src.values is not None:
            raw = self.mapped(raw, src.values)[0]
        if not f.numeric:
            return self.text(raw)
        values = self.numbers(raw, _where(f))
        factor = UNITS[f.unit][src.unit] if src.unit is not None and f.unit is not None else 1.0
        if factor != 1.0:
            digits = _DECIMALS if f.kind == "number" else 0
            values = pc.round(pc.multiply(values, factor), digits)
        return values if f.kind == "number" else self.integers(values, _where(f), arrow_type(f))

    def field(self, f: Field, src: FieldSource) -> pa.Array:
        """The values of model field ``f``: from a column, a date span or a constant."""
        if src.column is not None:
            return self.converted(f, self.column(src.column), src)
        if src.date is not None and src.origin is not None:
            return self.span(f, src.date, src.origin)
        return pa.repeat(pa.scalar(src.constant, arrow_type(f)), self.n)


def _where(f: Field) -> str:
    """How a conversion error names a model field: ``tumour.tumour_size_mm``."""
    return f"{f.table}.{f.name}"


def _strict_dates(text: pa.Array, date_format: str) -> pa.Array:
    """Date32 values of ``text``, parsed once per distinct value. Arrow's strptime rolls
    impossible days over (2020-02-30 -> 2020-03-01), so a value that does not format back to
    itself (also unpadded ``2020-1-5``) is kept only if Python's strict strptime accepts it."""
    distinct = pc.unique(text.drop_null())
    parsed = pc.strptime(distinct, format=date_format, unit="s", error_is_null=True)
    odd = pc.not_equal(pc.strftime(parsed, format=date_format), distinct)
    if pc.any(odd).as_py():
        valid = [v for v in distinct.filter(odd).to_pylist() if _is_date(v, date_format)]
        wrong = pc.and_(odd, pc.invert(pc.is_in(distinct, value_set=pa.array(valid, pa.string()))))
        parsed = pc.if_else(wrong, None, parsed)
    return pc.take(pc.cast(parsed, pa.date32()), pc.index_in(text, value_set=distinct))


def _is_date(text: str, date_format: str) -> bool:
    try:
        dt.datetime.strptime(text, date_format)
    except ValueError:
        return False
    return True


def _month_day(dates: pa.Array) -> pa.Array:
    return pc.add(pc.multiply(pc.month(dates), 100), pc.day(dates))


def _constants(n: int, values: Mapping[str, Scalar | None]) -> dict[str, pa.Array]:
    return {k: pa.repeat(pa.scalar(v), n) for k, v in values.items() if v is not None}


def _wide_tables(rows: _Rows, fields: Mapping[str, FieldSource]) -> dict[TableName, pa.Table]:
    """Patient, tumour (``tumour_seq`` 1) and outcome rows, one per source row; the tumour and
    outcome tables only when the mapping gives any of their fields."""
    values = {name: rows.field(PATIENT_FIELDS[name], src) for name, src in fields.items()}
    tables: dict[TableName, pa.Table] = {}
    for table in ("patient", "tumour", "outcome"):
        mine = {n: v for n, v in values.items() if PATIENT_FIELDS[n].table == table}
        if table == "tumour" and mine:
            mine = {**_constants(rows.n, {"tumour_seq": 1}), **mine}
        if table == "patient" or mine:
            tables[table] = pa.table({KEY: rows.ids, **mine})
    return tables


def _biomarker(rows: _Rows, marker: BiomarkerSource) -> pa.Table:
    """One row per patient with a value or a result."""
    path = f"biomarker.{marker.name}"
    columns: dict[str, pa.Array] = {}
    present = pa.repeat(pa.scalar(False), rows.n)
    if marker.value is not None:
        raw = rows.column(marker.value)
        present = pc.is_valid(raw)
        columns["value"] = value = rows.numbers(raw, f"{path}.value")
        unit = marker.unit or BIOMARKER_BY_NAME[marker.name].unit
        if unit is not None:
            columns["unit"] = pc.if_else(pc.is_valid(value), unit, None)
        if marker.positive_at_least is not None:
            at_least = pc.greater_equal(value, marker.positive_at_least)
            columns["result"] = pc.if_else(at_least, "positive", "negative")
    if marker.result is not None:
        raw = rows.column(marker.result)
        present = pc.or_(present, pc.is_valid(raw))
        text = rows.text(raw)
        columns["result"] = text if marker.values is None else rows.mapped(text, marker.values)[0]
    code = {"code": BIOMARKER_BY_NAME[marker.name].loinc, "day": marker.day}
    table = pa.table({KEY: rows.ids, **_constants(rows.n, code), **columns})
    return conform("biomarker", table.filter(present))


def _treatment(rows: _Rows, t: TreatmentSource) -> pa.Table:
    """One row per patient whose column holds a ``received`` value."""
    text = rows.text(rows.column(t.column))
    received = pc.is_in(text, value_set=pa.array(t.received, pa.string()))
    if t.not_received is not None:
        known = pc.or_(received, pc.is_in(text, value_set=pa.array(t.not_received, pa.string())))
        reason = f"treatment.{t.type}: neither received nor not_received"
        rows.flag(reason, pc.and_(pc.is_valid(text), pc.invert(known)))
    ids = rows.ids.filter(received)
    constants = t.model_dump(include={"type", "agent_code", "intent", "start_day", "end_day"})
    return conform("treatment", {KEY: ids, **_constants(len(ids), constants)})


def _extensions(rows: _Rows, extensions: Mapping[str, ExtensionSource]) -> pa.Table:
    """``patient_id`` and one column per extension: numbers, or codes through the value map."""
    columns: dict[str, pa.Array] = {}
    for name, ext in extensions.items():
        raw = rows.column(ext.column)
        if ext.values is None:
            columns[name] = rows.numbers(raw, f"ext.{name}")
        else:
            columns[name], uncovered = rows.mapped(raw, ext.values)
            rows.flag(f"ext.{name}: not in the value map", uncovered)
    return pa.table({KEY: rows.ids, **columns})
