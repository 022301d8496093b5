"""Import an OMOP CDM v5.4 database, or a folder of its tables as CSV, into the model.

What a row means comes from the site's own CONCEPT table, never from hard-coded concept ids.
The package reads the source into duckdb (``read``), interprets the concepts it uses in Python
(``concepts``), builds the model's tables with duckdb SQL joins (``sql``, ``outcome``),
excludes the persons whose values cannot be read, with a reason (``rules``), and counts what
the model has no field for (``build``); each module's docstring gives its rules.
"""

from oncofed.cdm.importers.omop.build import NO_PERSON_ID, OmopImport, import_omop
from oncofed.cdm.importers.omop.concepts import ATC_TYPES, DRUG_TYPES
from oncofed.cdm.importers.omop.read import COLUMNS
from oncofed.cdm.importers.omop.rules import NO_DIAGNOSIS, REASONS
from oncofed.cdm.importers.omop.sql import ERA_GAP_DAYS

__all__ = [
    "ATC_TYPES",
    "COLUMNS",
    "DRUG_TYPES",
    "ERA_GAP_DAYS",
    "NO_DIAGNOSIS",
    "NO_PERSON_ID",
    "REASONS",
    "OmopImport",
    "import_omop",
]
