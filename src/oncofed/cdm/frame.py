"""From a site's stored model tables to one row per patient, in a job's own terms.

A job names variables of the model (``grade``, ``biomarker.ER``, ``treatment.endocrine``,
``ext.menopausal_status``) and a cohort filter; this module compiles both into Arrow compute
over the local tables. The pseudonymous id is used to link tables and is never a column of
the result.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from oncofed.cdm.fields import (
    BIOMARKER_BY_NAME,
    ENDPOINTS,
    EXTENSION_PREFIX,
    KEY,
    PATIENT_FIELDS,
    variable,
)
from oncofed.cdm.tables import CdmData, true_mask
from oncofed.learning.data import DataError
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.spec import CohortFilter, JobSpec

Frame = dict[str, pa.Array]
_ENTRY = "randomisation_day"
_TIMES = (("last_followup_day", ""), *((f"{e}_days", f"{e}_event") for e in ENDPOINTS))
"""Each time of the outcome, with its event."""


def _first_per_patient(table: pa.Table, order: str) -> pa.Table:
    """One row per patient: the one with the smallest ``order`` (nulls last)."""
    if table.num_rows == 0:
        return table
    ranked = table.take(
        pc.sort_indices(table, [(KEY, "ascending", "at_end"), (order, "ascending", "at_end")])
    )
    ids = ranked[KEY].combine_chunks()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
    return ranked.filter(pa.array(first))


class _Aligned:
    """Columns of several tables for each patient in ``ids`` (null where the patient has no
    row): where each patient's row is, found once per table (None: a table whose rows are the
    patients', in their order, as the patient table's own and an import's extensions)."""

    def __init__(self, ids: pa.Array) -> None:
        self._ids, self._rows = ids, dict[str, pa.Array | None]()

    def __call__(self, source: str, table: pa.Table, column: str) -> pa.Array:
        """``table[column]`` for each patient; ``source`` names ``table`` (one table a name)."""
        if source not in self._rows:
            keys = table[KEY].combine_chunks()
            same = keys.equals(self._ids)
            self._rows[source] = None if same else pc.index_in(self._ids, value_set=keys)
        values = table[column].combine_chunks()
        rows = self._rows[source]
        return values if rows is None else values.take(rows)


def patient_frame(data: CdmData, names: Iterable[str]) -> Frame:
    """The variables ``names`` for every patient, as Arrow arrays in patient order."""
    ids = data["patient"][KEY].combine_chunks()
    tumour = _first_per_patient(data["tumour"], "tumour_seq")  # the index (first) primary
    outcome = _first_per_patient(data["outcome"], KEY)
    sources: dict[str, pa.Table] = {
        "patient": data["patient"].combine_chunks(),
        "tumour": tumour,
        "outcome": outcome,
    }
    aligned = _Aligned(ids)
    extensions = set() if data.extensions is None else set(data.extensions.column_names)
    frame: Frame = {}
    for name in sorted(set(names)):
        variable(name)  # the spec was validated; this guards direct callers
        if name in PATIENT_FIELDS:
            table = PATIENT_FIELDS[name].table
            frame[name] = aligned(table, sources[table], name)
        elif name.startswith("biomarker."):
            marker, _, part = name.removeprefix("biomarker.").partition(".")
            source = f"biomarker.{marker}"
            if source not in sources:  # the marker's first test per patient
                tests = data["biomarker"].filter(
                    pc.equal(data["biomarker"]["code"], BIOMARKER_BY_NAME[marker].loinc)
                )
                sources[source] = _first_per_patient(tests, "day")
            frame[name] = aligned(source, sources[source], part or "result")
        elif name.startswith("treatment."):
            kind = name.removeprefix("treatment.")
            given = data["treatment"].filter(pc.equal(data["treatment"]["type"], kind))
            received = pc.is_in(ids, value_set=given[KEY].combine_chunks())
            frame[name] = received.cast(pa.int8())
        else:
            column = name.removeprefix(EXTENSION_PREFIX)
            if column not in extensions or data.extensions is None:
                raise DataError(f"this site's dataset has no extension feature {name!r}")
            frame[name] = aligned("extensions", data.extensions, column)
    return frame


def _within(values: pa.Array, low: float | None, high: float | None) -> np.ndarray:
    numbers = values.cast(pa.float64())
    keep = pc.is_valid(numbers)
    if low is not None:
        keep = pc.and_(keep, pc.greater_equal(numbers, low))
    if high is not None:
        keep = pc.and_(keep, pc.less_equal(numbers, high))
    return true_mask(keep)


def _any_prefix(values: pa.Array, prefixes: list[str]) -> np.ndarray:
    hits = [true_mask(pc.starts_with(values, prefix)) for prefix in prefixes]
    return np.logical_or.reduce(hits)


def _is_in(values: pa.Array, accepted: list[str]) -> np.ndarray:
    if pa.types.is_string(values.type):
        return true_mask(pc.is_in(values, value_set=pa.array(accepted, pa.string())))
    try:
        numbers = pa.array([float(v) for v in accepted])
    except ValueError as exc:
        raise DataError(f"'in' values {accepted} are not numbers") from exc
    return true_mask(pc.is_in(values.cast(pa.float64()), value_set=numbers))


def cohort_mask(frame: Frame, cohort: CohortFilter, n: int) -> np.ndarray:
    """Which of the ``n`` patients in ``frame`` the filter selects."""
    keep = np.ones(n, dtype=bool)
    if cohort.primary_site is not None:
        keep &= _any_prefix(frame["primary_site"], cohort.primary_site)
    if cohort.histology is not None:
        exact = [c for c in cohort.histology if "/" in c]
        any_behaviour = [c + "/" for c in cohort.histology if "/" not in c]
        keep &= _is_in(frame["histology"], exact) | _any_prefix(frame["histology"], any_behaviour)
    chosen = {"stage_group": cohort.stage_group, "grade": cohort.grade, "sex": cohort.sex}
    for name, accepted in chosen.items():
        if accepted is not None:
            keep &= _is_in(frame[name], accepted)
    if cohort.age is not None:
        keep &= _within(frame["age_at_diagnosis"], cohort.age.min, cohort.age.max)
    for marker, results in (cohort.biomarkers or {}).items():
        keep &= _is_in(frame[f"biomarker.{marker}"], results)
    for kind in cohort.treatments or []:
        keep &= true_mask(pc.equal(frame[f"treatment.{kind}"], 1))
    for kind in cohort.without_treatments or []:
        keep &= true_mask(pc.equal(frame[f"treatment.{kind}"], 0))
    if cohort.time_origin is not None:
        keep &= _is_in(frame["time_origin"], [cohort.time_origin])
    for condition in cohort.where:
        values = frame[condition.field]
        if condition.in_ is not None:
            keep &= _is_in(values, condition.in_)
        else:
            keep &= _within(values, condition.min, condition.max)
    return keep


def _numpy(values: pa.Array, numeric: bool) -> np.ndarray:
    if numeric:
        return np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    return np.asarray(values.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)


def _from_entry(frame: Frame) -> None:
    """Times from study entry, for every patient whose times are from another origin and whose
    entry day is known: each time less the entry day. An endpoint reached before entry (a
    recurrence before randomisation) is missing from entry, never negative."""
    entry, stored = frame[_ENTRY], frame["time_origin"]
    moved = pc.and_(pc.not_equal(stored, "randomisation"), pc.is_valid(entry))
    for name, event in _TIMES:
        if name not in frame:
            continue
        shifted = pc.subtract(frame[name], entry)
        gone = pc.and_(moved, pc.fill_null(pc.less(shifted, 0), False))
        frame[name] = pc.if_else(moved, shifted, frame[name])
        for column in (name, event):
            if column in frame:
                frame[column] = pc.if_else(gone, pa.scalar(None, frame[column].type), frame[column])
    frame["time_origin"] = pc.if_else(moved, "randomisation", stored)


class Columns:
    """A dataset's variables, each aligned to its patients (``patient_frame``) and made a
    numpy array once, not once a job: an edge keeps them beside the dataset it keeps in
    memory, so a job's first task reads its rows by lookup and its cohort's mask. The arrays
    handed out are read-only and shared; the dataset must not change meanwhile (a store
    reloads it, and makes new ``Columns``, when it is imported again)."""

    def __init__(self, data: CdmData) -> None:
        self.data = data
        self._arrow: Frame = {}
        self._numpy: dict[tuple[str, bool], np.ndarray] = {}

    @functools.cached_property
    def pseudonyms(self) -> pa.Array:
        """Every patient's pseudonym, in the patients' order: one array for as long as these
        columns are kept (a site's record of cohorts digests it once)."""
        return self.data["patient"][KEY].combine_chunks()

    def frame(self, names: Iterable[str]) -> Frame:
        """``patient_frame(data, names)``, from the columns computed before where it can."""
        wanted = sorted(set(names))
        if missing := [n for n in wanted if n not in self._arrow]:
            self._arrow.update(patient_frame(self.data, missing))
        return {name: self._arrow[name] for name in wanted}

    def numpy(self, name: str, values: pa.Array, numeric: bool) -> np.ndarray:
        """``values`` as numpy (``_numpy``), kept when they are the column ``name`` itself."""
        if values is not self._arrow.get(name):  # changed since (``_from_entry``)
            return _numpy(values, numeric)
        if (array := self._numpy.get((name, numeric))) is None:
            array = self._numpy[name, numeric] = _numpy(values, numeric)
            array.flags.writeable = False
        return array

    def warm(self) -> None:
        """Compute every patient field and extension feature the dataset holds, as a job
        would ask for it: an extension of strings as categories (its levels given), of
        numbers as numbers; a biomarker's or a treatment's when first asked."""
        names = [*PATIENT_FIELDS, *self.data.extension_names]
        for name, values in self.frame(names).items():
            text = pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
            with contextlib.suppress(pa.ArrowException):  # a job asking fails as it would have
                self.numpy(name, values, variable(name).numeric and not text)


@dataclass(frozen=True)
class JobRows:
    """A job's rows at a site: its variables (``job_table``) and which of the dataset's
    patients they are of, in their order (to tell cohorts apart at the site: never sent)."""

    table: dict[str, np.ndarray]
    patients: pa.Array
    """Every patient's pseudonym (``Columns.pseudonyms``: shared, not only the cohort's)."""
    keep: np.ndarray | None
    """Which of ``patients`` the cohort selects (None: every one)."""

    @property
    def pseudonyms(self) -> pa.Array:
        """The cohort's patients' pseudonyms, in the rows' order."""
        return self.patients if self.keep is None else self.patients.filter(pa.array(self.keep))


def job_rows(spec: JobSpec | AnalysisSpec, data: CdmData | Columns) -> JobRows:
    """The job's variables for the patients its cohort selects, as numpy columns (numbers
    as float64 with NaN for missing, categories as objects with None), with their
    pseudonyms. Given ``Columns``, the columns they hold are not computed again (those of all
    patients are shared and read-only)."""
    columns = data if isinstance(data, Columns) else Columns(data)
    origin = spec.cohort.time_origin
    frame = columns.frame(spec.variables | ({_ENTRY} if origin == "randomisation" else set()))
    if origin == "randomisation":
        _from_entry(frame)
        if _ENTRY not in spec.variables:
            del frame[_ENTRY]
    keep = cohort_mask(frame, spec.cohort, len(columns.pseudonyms))
    every = bool(keep.all())
    ext_levels = {f.name for f in spec.features if f.levels is not None}
    table = {}
    for name, values in frame.items():
        array = columns.numpy(name, values, variable(name).numeric and name not in ext_levels)
        table[name] = array if every else array[keep]
    return JobRows(table, columns.pseudonyms, None if every else keep)


def job_table(spec: JobSpec | AnalysisSpec, data: CdmData) -> dict[str, np.ndarray]:
    """``job_rows``' variables."""
    return job_rows(spec, data).table


def check_time_origin(spec: JobSpec | AnalysisSpec, table: Mapping[str, np.ndarray]) -> None:
    """Times are only comparable from one origin: refuse a cohort that mixes them unless the
    spec chose one."""
    origins = {o for o in table["time_origin"] if o is not None}
    if spec.cohort.time_origin is None and len(origins) > 1:
        raise DataError(
            f"the cohort mixes time origins {sorted(origins)}; set cohort.time_origin in the job"
        )
