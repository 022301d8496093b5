"""One import at a site, whatever the source: read it with its importer, validate, de-identify,
pseudonymise, profile, and store it in the edge's local store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from oncofed.cdm.errors import MappingError, RejectedPatient, SourceError
from oncofed.cdm.pipeline import Imported, finish_import
from oncofed.cdm.tables import CdmData
from oncofed.cdm.validate import ConversionErrors
from oncofed.edge.store import LocalStore, check_dataset_name
from oncofed.wire.profile import DataProfile, SourceFormat

_SUFFIXES = {"csv": (".csv",), "parquet": (".parquet", ".pq")}


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
        tabular = self.format in _SUFFIXES
        if tabular and self.mapping is None:
            raise MappingError(f"--from {self.format} needs a mapping file (--mapping MAP.yaml)")
        if not tabular and self.mapping is not None:
            raise MappingError(f"--from {self.format} reads the model from the source itself; "
                               "it takes no mapping file")  # fmt: skip
        if tabular and not self.location.lower().endswith(_SUFFIXES[self.format]):
            raise SourceError(f"{self.location}: --from {self.format} expects a "
                              f"{' or '.join(_SUFFIXES[self.format])} file")  # fmt: skip


@dataclass(frozen=True)
class ImportReport:
    """A stored import: its published report, and notes for the site admin only."""

    profile: DataProfile
    notes: list[str] = field(default_factory=list)
    rejected_list: Path | None = None
    """The local list of the patients left out, with every reason (never sent)."""


@dataclass(frozen=True)
class _Extracted:
    """What an importer read, and what it left out and why."""

    extract: Extract
    notes: list[str]
    excluded: Mapping[str, int] = field(default_factory=dict)
    """Patients the importer itself could not take, by first reason."""
    rejections: Sequence[RejectedPatient] = ()
    errors: ConversionErrors | None = None
    locate: Callable[[str], str] = lambda key: "patient table"


def _extract(source: Source) -> _Extracted:
    if source.format == "omop":
        from oncofed.cdm.importers.omop import import_omop

        omop = import_omop(source.location)
        unmapped = [f"concept not used ({n} rows): {c}" for c, n in omop.unmapped.items()]
        notes = [*omop.notes, *unmapped]
        return _Extracted(
            omop, notes, omop.rejected, omop.rejections, locate=lambda key: "person table"
        )
    if source.format == "fhir":
        from oncofed.cdm.importers.fhir import import_fhir

        fhir = import_fhir(Path(source.location))
        notes = [f"{what}: {n}" for what, n in fhir.notes.items()]
        where = fhir.where
        return _Extracted(
            fhir, notes, fhir.rejected, fhir.rejections, locate=lambda key: where.get(key, "")
        )
    from oncofed.cdm.importers.tabular import import_tabular

    assert source.mapping is not None  # checked on construction
    tabular = import_tabular(Path(source.location), source.mapping)
    ignored = ", ".join(tabular.ignored_columns)
    notes = [f"columns not in the mapping, never stored: {ignored}"] if ignored else []
    file = Path(source.location).name
    return _Extracted(
        tabular, notes, errors=tabular.errors, locate=lambda row: f"{file}, data row {row}"
    )


def import_source(store: LocalStore, name: str, source: Source, *, threshold: int) -> ImportReport:
    """Import ``source`` as dataset ``name``, replacing an earlier import of that name. An
    import in which no patient passes validation is refused and the earlier one kept."""
    check_dataset_name(name)
    read = _extract(source)
    imported: Imported = finish_import(
        read.extract.data,
        dataset=name,
        source_format=source.format,
        rows_read=read.extract.rows_read,
        threshold=threshold,
        conversion_errors=read.errors,
        excluded=read.excluded,
        rejections=read.rejections,
        locate=read.locate,
    )
    if imported.data["patient"].num_rows == 0:
        first = Counter(rejected.reasons[0] for rejected in imported.rejections)
        reasons = "; ".join(f"{reason}: {n}" for reason, n in first.items())  # local: exact
        kept = f" and the earlier import of {name!r} is kept" if name in store.names() else ""
        listed = store.save_refused(name, imported.rejections)
        raise SourceError(
            f"{source.location}: no patient passed validation ({reasons or 'no rows'}); "
            f"nothing was stored{kept}; every patient, with every reason: {listed}"
        )
    store.save(name, imported.data, imported.profile, imported.rejections)
    return ImportReport(imported.profile, read.notes, store.rejections_path(name))
