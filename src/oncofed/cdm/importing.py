"""One import at a site, whatever the source: read it with its importer, validate, de-identify,
pseudonymise, profile, and store it in the edge's local store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from oncofed.cdm.errors import MappingError
from oncofed.cdm.fields import TableName
from oncofed.cdm.pipeline import Imported, finish_import
from oncofed.cdm.tables import CdmData
from oncofed.edge.store import LocalStore, check_name
from oncofed.wire.profile import SourceFormat

FORMATS: tuple[SourceFormat, ...] = ("csv", "parquet", "omop", "fhir")


class Extract(Protocol):
    """What every importer returns: model rows keyed by the source's own patient key."""

    @property
    def data(self) -> CdmData: ...

    @property
    def rows_read(self) -> int: ...


@dataclass(frozen=True)
class Source:
    """Where a site's data is: a CSV or Parquet file with its mapping file, an OMOP database
    URL or CSV folder, or a FHIR bundle file or folder."""

    format: SourceFormat
    location: str
    mapping: Path | None = None

    def __post_init__(self) -> None:
        tabular = self.format in ("csv", "parquet")
        if tabular and self.mapping is None:
            raise MappingError(f"--from {self.format} needs a mapping file (--mapping MAP.yaml)")
        if not tabular and self.mapping is not None:
            raise MappingError(f"--from {self.format} reads the model from the source itself; "
                               "it takes no mapping file")  # fmt: skip


def import_source(store: LocalStore, name: str, source: Source, *, threshold: int) -> Imported:
    """Import ``source`` as dataset ``name``; replaces an earlier import of that name."""
    check_name(name)
    extract: Extract
    errors: dict[TableName, dict[str, pa.BooleanArray]] | None = None
    excluded: dict[str, int] = {}
    if source.format == "omop":
        from oncofed.cdm.importers.omop import import_omop

        omop = import_omop(source.location)
        extract, excluded = omop, dict(omop.rejected)
    elif source.format == "fhir":
        from oncofed.cdm.importers.fhir import import_fhir

        fhir = import_fhir(Path(source.location))
        extract, excluded = fhir, dict(fhir.rejected)
    else:
        from oncofed.cdm.importers.tabular import import_tabular

        assert source.mapping is not None  # checked on construction
        tabular = import_tabular(Path(source.location), source.mapping)
        extract, errors = tabular, tabular.errors
    imported = finish_import(
        extract.data,
        dataset=name,
        source_format=source.format,
        rows_read=extract.rows_read,
        threshold=threshold,
        conversion_errors=errors,
        excluded=excluded,
    )
    store.save(name, imported.data, imported.profile)
    return imported
