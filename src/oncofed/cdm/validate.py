"""Validation of an import against the model's rules, driven by the field catalogue.

Every rule is checked on whole columns. A row that breaks a rule is never altered: its whole
patient is excluded from every table, and counted once, under the first rule it breaks, in this
order: the importer's conversion errors; links (a row without ``patient_id``, a row whose
patient has no patient row, not exactly one patient and one outcome row per patient, more than
one extension row); each table's fields in catalogue order (required, then value or code, then
range); then the consistency rules between fields (an event needs its time; death agrees with
vital status and cause of death; no endpoint after the last follow-up unless the patient died,
and none after death; no study entry after the last follow-up or death; nodes positive <=
examined; a treatment ends after it starts; one ``tumour_seq`` per tumour of a patient). A
row without a ``patient_id`` belongs to no patient and counts once per row. Types are the
Arrow schema's (``CdmData`` casts on construction); cells an importer could not convert come
as ``conversion_errors``.

Reasons name the table, the field and the rule, never a value:
``tumour.grade: not an allowed value``, ``patient.age_at_diagnosis: outside 0-120``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oncofed.cdm.fields import BY_TABLE, ENDPOINTS, KEY, TABLES, Field, TableName
from oncofed.cdm.tables import CdmData, true_mask

ConversionErrors = Mapping[TableName, Mapping[str, pa.Array]]
"""Per table and reason, a boolean mask of the rows whose cells an importer could not convert."""
EXTENSIONS = "extensions"
Column: TypeAlias = pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class Validation:
    """The rows kept, and the patients excluded: counted by their first reason, and each
    with every reason, for the site admin's local list."""

    data: CdmData
    rejected: dict[str, int]
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each excluded patient's source key, with every rule its rows break, in rule order."""
    unlinked: list[tuple[str, str]] = field(default_factory=list)
    """Each row without a ``patient_id``: where (``table row N``, 1-based) and the reason."""


def _flat(column: Column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


class _Patients:
    """Every table's patient ids as integer codes (-1: no id), and the first reason each
    patient fails."""

    def __init__(self, parts: Mapping[str, pa.Table]) -> None:
        ids = [_flat(t[KEY].cast(pa.string())) for t in parts.values()]
        encoded = pc.dictionary_encode(pa.concat_arrays(ids))
        blank = true_mask(pc.equal(pc.utf8_trim_whitespace(encoded.dictionary), ""))
        codes = np.asarray(
            pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64
        )
        codes[np.append(blank, True)[codes]] = -1  # a blank id is no id
        bounds = np.cumsum([0, *(len(a) for a in ids)])
        self.codes = {name: codes[bounds[i] : bounds[i + 1]] for i, name in enumerate(parts)}
        self.keys = encoded.dictionary
        self.first = np.full(len(encoded.dictionary), -1, dtype=np.int32)
        self.reasons: list[str] = []
        self.broken: list[tuple[int, np.ndarray]] = []
        """Every (reason, patients) found, also of patients excluded before."""
        self.unlinked: dict[str, int] = {}
        self.unlinked_rows: list[tuple[str, str]] = []

    def count(self, part: str) -> np.ndarray:
        """Rows per patient in ``part``."""
        codes = self.codes[part]
        return np.bincount(codes[codes >= 0], minlength=len(self.first))

    def reject_rows(self, part: str, mask: np.ndarray, reason: str) -> None:
        codes = self.codes[part][mask]
        self.reject(codes[codes >= 0], reason)

    def reject(self, codes: np.ndarray, reason: str) -> None:
        """Exclude the patients ``codes``, counted under ``reason`` unless already excluded."""
        if not codes.size:
            return
        if reason not in self.reasons:
            self.reasons.append(reason)
        number = self.reasons.index(reason)
        self.broken.append((number, codes))
        fresh = codes[self.first[codes] < 0]
        self.first[fresh] = number

    def every_reason(self) -> dict[str, tuple[str, ...]]:
        """Each excluded patient's key, with every reason found, in the order found."""
        found: dict[int, dict[str, None]] = {}
        for number, codes in self.broken:
            for code in np.unique(codes).tolist():
                found.setdefault(code, {})[self.reasons[number]] = None
        keys = self.keys.to_pylist()
        return {keys[code]: tuple(reasons) for code, reasons in sorted(found.items())}

    def rejected(self) -> dict[str, int]:
        counts = np.bincount(self.first[self.first >= 0], minlength=len(self.reasons))
        linked = {reason: int(n) for reason, n in zip(self.reasons, counts, strict=True) if n}
        return {**linked, **self.unlinked}

    def kept(self, part: str, patients: np.ndarray) -> pa.Array:
        """Which rows of ``part`` belong to a kept patient."""
        codes = self.codes[part]
        keep = (self.first < 0) & patients
        return pa.array(np.append(keep, False)[codes])


def _field_rules(f: Field, column: Column) -> Iterator[tuple[str, np.ndarray]]:
    """The rules of one field from the catalogue: (rule, mask of rows that break it)."""
    valid = true_mask(pc.is_valid(column))
    if f.required:
        yield "missing", ~valid
    if f.kind == "number":
        yield "not a finite number", valid & ~true_mask(pc.is_finite(column))
    if f.values is not None:
        rule = (
            "not an allowed value" if f.kind == "category" else f"not a supported {f.system} code"
        )
        allowed = pa.array(f.values, pa.string())
        yield rule, _distinct_fail(column, lambda d: pc.is_in(d, value_set=allowed))
    if f.pattern is not None:
        pattern = f.pattern
        yield (
            f"not a valid {f.system} code",
            _distinct_fail(column, lambda d: pc.match_substring_regex(d, pattern)),
        )
    if f.minimum is not None or f.maximum is not None:
        low = -math.inf if f.minimum is None else f.minimum
        high = math.inf if f.maximum is None else f.maximum
        outside = pc.or_(pc.less(column, low), pc.greater(column, high))
        yield _range_rule(f.minimum, f.maximum), true_mask(outside)


def _range_rule(low: float | None, high: float | None) -> str:
    if low is None:
        return f"above {high:g}"
    return f"below {low:g}" if high is None else f"outside {low:g}-{high:g}"


def _distinct_fail(column: Column, test: Callable[[pa.Array], pa.Array]) -> np.ndarray:
    """Rows whose (non-null) value fails ``test``, testing each distinct value once."""
    encoded = pc.dictionary_encode(_flat(column))
    passes = np.append(true_mask(test(encoded.dictionary)), True)
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    return ~passes[np.asarray(indices, dtype=np.int64)]


def _consistency(data: CdmData) -> Iterator[tuple[str, Column]]:
    """The rules between fields: (reason, mask of the rows of the reason's table that break
    it)."""
    outcome, tumour, treatment = data["outcome"], data["tumour"], data["treatment"]
    dead = pc.fill_null(pc.equal(outcome["vital_status"], "dead"), False)
    not_dead = pc.invert(dead)
    for e in ENDPOINTS:
        yield (
            f"outcome.{e}_event: set without {e}_days",
            pc.and_(pc.is_valid(outcome[f"{e}_event"]), pc.is_null(outcome[f"{e}_days"])),
        )
    os_event, cause = outcome["os_event"], outcome["cause_of_death"]
    yield "outcome.os_event: 1 but vital_status not dead", pc.and_(pc.equal(os_event, 1), not_dead)
    yield "outcome.vital_status: dead but os_event 0", pc.and_(dead, pc.equal(os_event, 0))
    yield (
        "outcome.cause_of_death: set but vital_status not dead",
        pc.and_(pc.is_valid(cause), not_dead),
    )
    for e in ENDPOINTS:  # events are seen at follow-up; a death may come later
        after = pc.greater(outcome[f"{e}_days"], outcome["last_followup_day"])
        yield f"outcome.{e}_days: after last_followup_day", pc.and_(after, not_dead)
    for e in ENDPOINTS[1:]:  # no recurrence or metastasis after death
        after = pc.greater(outcome[f"{e}_days"], outcome["os_days"])
        yield f"outcome.{e}_days: after os_days", pc.and_(after, dead)
    entry = outcome["randomisation_day"]
    for end in ("last_followup_day", "os_days"):  # no study entry after follow-up or death
        yield f"outcome.randomisation_day: after {end}", pc.greater(entry, outcome[end])
    yield (
        "tumour.nodes_positive: more than nodes_examined",
        pc.greater(tumour["nodes_positive"], tumour["nodes_examined"]),
    )
    yield (
        "treatment.end_day: before start_day",
        pc.less(treatment["end_day"], treatment["start_day"]),
    )


def _repeated(codes: np.ndarray, seq: Column) -> np.ndarray:
    """Rows whose (patient, seq) pair occurs more than once (rows without either never)."""
    values = np.asarray(pc.fill_null(seq, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    usable = (codes >= 0) & (values >= 0)
    keys = np.where(usable, codes * (1 << 32) + values, -1 - np.arange(len(codes)))
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def _conversion(patients: _Patients, data: CdmData, errors: ConversionErrors) -> None:
    for table, reasons in errors.items():
        if table not in TABLES:
            raise ValueError(f"conversion errors for {table!r}, which is not a table")
        for reason, mask in reasons.items():
            if len(mask) != data[table].num_rows or not pa.types.is_boolean(mask.type):
                raise ValueError(
                    f"conversion errors {table}/{reason!r}: need one boolean per row of {table}"
                )
            patients.reject_rows(table, true_mask(mask), reason)


def _links(patients: _Patients, parts: Mapping[str, pa.Table]) -> np.ndarray:
    """Check how rows link to patients; return which patients have a patient row."""
    for part in parts:
        rows = np.flatnonzero(patients.codes[part] < 0)
        if rows.size:
            reason = f"{part}.patient_id: missing"
            patients.unlinked[reason] = patients.unlinked.get(reason, 0) + rows.size
            patients.unlinked_rows += [(f"{part} row {row + 1}", reason) for row in rows.tolist()]
    per_patient = {part: patients.count(part) for part in parts}
    has_row = per_patient["patient"] > 0
    for part in parts:
        if part != "patient":
            codes = patients.codes[part]
            orphan = (codes >= 0) & ~np.append(has_row, True)[codes]
            patients.reject_rows(part, orphan, f"{part}.patient_id: no patient row")
    ids = np.arange(len(has_row))
    for part in ("patient", "outcome", EXTENSIONS):
        if part in per_patient:
            several = per_patient[part] > 1
            patients.reject(ids[several], f"{part}.patient_id: more than one row")
    patients.reject(ids[has_row & (per_patient["outcome"] == 0)], "outcome.patient_id: no row")
    return has_row


def validate(data: CdmData, conversion_errors: ConversionErrors | None = None) -> Validation:
    """Check ``data`` against every rule of the model; keep the patients that pass them all.

    ValueError when ``conversion_errors`` name an unknown table or do not align with its rows.
    """
    parts: dict[str, pa.Table] = {name: data[name] for name in TABLES}
    if data.extensions is not None:
        parts[EXTENSIONS] = data.extensions
    patients = _Patients(parts)
    _conversion(patients, data, conversion_errors or {})
    has_row = _links(patients, parts)
    for table in TABLES:
        for f in BY_TABLE[table]:
            if f.kind != "id":
                for rule, mask in _field_rules(f, data[table][f.name]):
                    patients.reject_rows(table, mask, f"{table}.{f.name}: {rule}")
    for reason, mask in _consistency(data):
        patients.reject_rows(reason.partition(".")[0], true_mask(mask), reason)
    repeated = _repeated(patients.codes["tumour"], data["tumour"]["tumour_seq"])
    patients.reject_rows("tumour", repeated, "tumour.tumour_seq: repeated for the patient")
    kept = {name: t.filter(patients.kept(name, has_row)) for name, t in parts.items()}
    extensions = kept.pop(EXTENSIONS, None)
    tables: dict[TableName, pa.Table] = {name: kept[name] for name in TABLES}
    return Validation(
        CdmData(tables, extensions),
        patients.rejected(),
        patients.every_reason(),
        patients.unlinked_rows,
    )
