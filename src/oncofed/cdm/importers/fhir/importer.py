"""The FHIR import: every bundle of the source, patient by patient, into model tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from oncofed.cdm import fields
from oncofed.cdm.errors import RejectedPatient, SourceError
from oncofed.cdm.importers.fhir.bundles import bundle_files, read_bundle, records
from oncofed.cdm.importers.fhir.context import Row
from oncofed.cdm.importers.fhir.mapper import PatientMapper
from oncofed.cdm.tables import SCHEMAS, CdmData


@dataclass
class FhirImport:
    """What :func:`import_fhir` read: the model rows, and what it left out and why."""

    data: CdmData
    rows_read: int = 0
    """Patient resources read."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Patients excluded, by reason (``table.field: rule``; the first one found, so that the
    counts sum to the patients excluded)."""
    rejections: list[RejectedPatient] = field(default_factory=list)
    """Each patient excluded, for the site admin: its Patient id (key), its bundle file and
    entry (where) and every reason, in the order found."""
    notes: Counter[str] = field(default_factory=Counter)
    """Resources and codes that are not model values, by reason (of patients kept, and of
    resources linked to no patient)."""
    where: dict[str, str] = field(default_factory=dict)
    """Each Patient id read, with its bundle file and entry (where validation finds one)."""


def import_fhir(source: Path) -> FhirImport:
    """Import one FHIR Bundle file, or every ``*.json`` bundle of a folder (by name)."""
    rows: dict[fields.TableName, list[Row]] = {table: [] for table in fields.TABLES}
    result = FhirImport(CdmData())
    seen = result.where
    for path in bundle_files(source):
        for record in records(path.name, read_bundle(path), result.notes):
            result.rows_read += 1
            if record.pid in seen:
                raise SourceError(f"{record.where}: the same Patient id is in {seen[record.pid]}")
            seen[record.pid] = record.where
            mapper = PatientMapper(record)
            mapped = mapper.map()
            if isinstance(mapped, list):
                result.rejected[mapped[0]] += 1
                result.rejections.append(RejectedPatient(record.pid, record.where, tuple(mapped)))
                continue
            result.notes.update(mapper.notes)
            for table, table_rows in mapped.items():
                rows[table].extend(table_rows)
    tables = {t: pa.Table.from_pylist(r, schema=SCHEMAS[t]) for t, r in rows.items()}
    result.data = CdmData(tables)
    return result
