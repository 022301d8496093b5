"""The crosswalk the importer ships from SNOMED CT body structures, mCODE's own binding of
``Condition.bodySite``, to ICD-O-3 topography: ``snomed_topography.csv`` in this package, one row
per concept (columns snomed, topography, laterality, label).

Every ICD-O-3 topography group a body structure can name (C00-C77; C80, unknown primary site,
is no body structure) has at least its "structure of" concept; lateralised concepts (left
breast, right kidney) carry their side. Each concept id was found with its label in at least
one public source, most in two or more: the mCODE IG (examples, value sets, TG263 concept map),
DICOM's SNOMED CT concepts (as pydicom ships them), value set expansions by tx.fhir.org (SNOMED
CT International 2023-2025) and published ICD-O-3 to SNOMED CT mappings. Those sources are not
infallible (mCODE's TG263 map gives 3572006, body of vertebra, for the cervical vertebrae):
an id they disagree on was checked in a third, and ids none of them holds were left out. The
topography is the ICD-O-3 term the label names. The file is data: a site may add rows the
same way."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CROSSWALK = Path(__file__).parent / "snomed_topography.csv"


@dataclass(frozen=True)
class BodySite:
    """What a SNOMED CT body structure says of a primary site."""

    topography: str
    """ICD-O-3 topography, ``C50.9``."""
    laterality: str | None
    """``left`` or ``right`` for a lateralised concept, else None."""
    label: str


@cache
def crosswalk() -> dict[str, BodySite]:
    """The shipped crosswalk, by SNOMED CT concept id."""
    with CROSSWALK.open(encoding="utf-8", newline="") as lines:
        return {
            row["snomed"]: BodySite(row["topography"], row["laterality"] or None, row["label"])
            for row in csv.DictReader(lines)
        }
