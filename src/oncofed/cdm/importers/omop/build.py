"""An OMOP import from source to model tables: load the source, interpret its concepts, run the
SQL in one duckdb connection, exclude the persons that break a rule (``rules``), and count what
the model has no field for."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from oncofed.cdm.errors import RejectedPatient
from oncofed.cdm.fields import TableName
from oncofed.cdm.importers import YEAR_OF_BIRTH_AGES
from oncofed.cdm.importers.omop.concepts import meanings, source_values
from oncofed.cdm.importers.omop.outcome import OUTCOME_TABLES, SELECT_OUTCOME, UNSUPPORTED
from oncofed.cdm.importers.omop.read import load_source
from oncofed.cdm.importers.omop.rules import REASONS, REJECTION, where
from oncofed.cdm.importers.omop.sql import (
    PATIENT_TABLE,
    SELECT_BIOMARKER,
    SELECT_PATIENT,
    SELECT_TREATMENT,
    SELECT_TUMOUR,
    TREATMENT_TABLES,
    TUMOUR_TABLES,
    UNLINKED_SIZE_DAYS,
)
from oncofed.cdm.tables import CdmData, conform

_EVENT_CONCEPTS = (
    ("drug_exposure", "drug_concept_id"),
    ("procedure_occurrence", "procedure_concept_id"),
)
NO_PERSON_ID = "patient: no person_id"
"""Why a PERSON row without an id is excluded (counted per row)."""
_NOTES = (
    (YEAR_OF_BIRTH_AGES,
     "SELECT count(*) FROM patient SEMI JOIN kept USING (person_id)"
     " WHERE birth IS NULL AND year_of_birth IS NOT NULL"),
    ("patients without follow-up, no observation period",
     "SELECT count(*) FROM kept ANTI JOIN followup USING (person_id)"),
    *((f"patients without {endpoint}, no disease status recorded after diagnosis",
       f"SELECT count(*) FROM endpoint SEMI JOIN kept USING (person_id) WHERE {condition}")
      for endpoint, condition in UNSUPPORTED.items()),
    ("tumour sizes left empty, unit not mm or cm, or a range",
     "SELECT count(*) FROM size_item SEMI JOIN kept USING (person_id) WHERE unread"),
    ("tumour sizes linked to an event other than a cancer condition, not read",
     "SELECT count(*) FROM size_row SEMI JOIN kept USING (person_id)"
     " WHERE grp IS NULL AND primaries IS NULL"),
    ("unlinked tumour sizes of persons with several primaries, not read",
     "SELECT count(*) FROM size_row SEMI JOIN kept USING (person_id)"
     " WHERE grp IS NULL AND primaries > 1"),
    (f"unlinked tumour sizes outside days {UNLINKED_SIZE_DAYS[0]} to"
     f" +{UNLINKED_SIZE_DAYS[1]} of diagnosis, not read",
     "SELECT count(*) FROM size_row SEMI JOIN kept USING (person_id)"
     " WHERE grp IS NULL AND primaries = 1"),
    ("tumour sizes or node counts without a number, not read",
     "SELECT count(*) FROM modifier SEMI JOIN kept USING (person_id)"
     " WHERE item IN ('size', 'nodes_positive', 'nodes_examined') AND number IS NULL"),
    ("treatment intents of a condition, not read",
     "SELECT count(*) FROM modifier SEMI JOIN kept USING (person_id) WHERE item = 'intent'"),
)  # fmt: skip
"""(note for the site admin, query of its count); a count of 0 is not noted."""


@dataclass
class OmopImport:
    """An OMOP import: the model's tables (``patient_id`` = ``str(person_id)``), the number of
    persons read (distinct ids, and rows without one), persons excluded counted under their
    first reason (``rules``), notes for the site admin, rows per concept the model has no field
    for, and each person excluded with every reason (for the site admin only)."""

    data: CdmData
    rows_read: int
    rejected: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    unmapped: Counter[str] = field(default_factory=Counter)
    rejections: list[RejectedPatient] = field(default_factory=list)


def import_omop(source: str | Path, *, schema: str | None = None) -> OmopImport:
    """Read an OMOP CDM v5.4 source: ``sqlite:///x.db``, ``postgresql+pg8000://...``,
    ``duckdb:///x.duckdb``, a ``.duckdb``/``.db`` file or a folder of ``<table>.csv`` files;
    ``schema`` is the database schema holding the CDM tables (the default one if None).

    Raises SourceError naming the missing table or column or the value that cannot be read."""
    con = duckdb.connect()
    try:
        load_source(con, source, schema)
        return _Build(con).run()
    finally:
        con.close()


class _Build:
    """Turns the loaded OMOP tables into the model's tables, inside one duckdb connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def _rows(self, sql: str) -> list[tuple[object, ...]]:
        return self.con.execute(sql).fetchall()

    def _int(self, sql: str) -> int:
        return int(str(self._rows(sql)[0][0]))

    def run(self) -> OmopImport:
        con = self.con
        concepts = con.sql("SELECT * FROM concept").to_arrow_table().to_pylist()
        con.register("meaning", meanings(concepts))
        sources = self._rows(
            "SELECT DISTINCT condition_source_value FROM condition_occurrence "
            "WHERE condition_source_value IS NOT NULL"
        )
        con.register("srcval", source_values([str(r[0]) for r in sources]))
        for tables in (TUMOUR_TABLES, PATIENT_TABLE, TREATMENT_TABLES, OUTCOME_TABLES, REJECTION):
            con.execute(tables)
        data = CdmData(
            {
                "patient": self._table("patient", SELECT_PATIENT),
                "tumour": self._table("tumour", SELECT_TUMOUR),
                "biomarker": self._table("biomarker", SELECT_BIOMARKER),
                "treatment": self._table("treatment", SELECT_TREATMENT),
                "outcome": self._table("outcome", SELECT_OUTCOME),
            }
        )
        unnamed = self._int("SELECT count(*) FROM person WHERE person_id IS NULL")
        persons = self._int("SELECT count(DISTINCT person_id) FROM person") + unnamed
        rejected = Counter({NO_PERSON_ID: unnamed} if unnamed else {})
        for rule, count in self._rows("SELECT rule, count(*) FROM rejection GROUP BY rule"):
            rejected[REASONS[int(str(rule))]] = int(str(count))
        rejections = [RejectedPatient("", "person table", (NO_PERSON_ID,))] * unnamed
        broken = self.con.execute(
            "SELECT person_id, list(rule ORDER BY rule) FROM broken GROUP BY ALL ORDER BY 1"
        ).fetchall()
        for person, rules in broken:
            reasons = tuple(REASONS[rule] for rule in rules)
            rejections.append(RejectedPatient(str(person), where(rules), reasons))
        return OmopImport(data, persons, rejected, self._notes(), self._unmapped(), rejections)

    def _table(self, name: TableName, sql: str) -> pa.Table:
        return conform(name, self.con.sql(sql).to_arrow_table())

    def _notes(self) -> list[str]:
        """Counts about the persons imported, for the site admin (``_NOTES``)."""
        counts = self._rows("SELECT " + ", ".join(f"({sql})" for _, sql in _NOTES))[0]
        return [f"{what}: {n}" for (what, _), n in zip(_NOTES, counts, strict=True) if n]

    def _unmapped(self) -> Counter[str]:
        """Rows of the persons imported per concept the model has no field for: a sex of concept
        0, a measurement linked to a cancer condition that is neither a Cancer Modifier item,
        a size, a treatment intent nor a biomarker (those are read, never listed here), a drug
        or procedure whose concept is not in CONCEPT (so whether it treats cancer is not
        known)."""
        absent = " UNION ALL ".join(
            f"SELECT '{table} concept_id ' || x.{column} || ' (not in CONCEPT)', count(*)"
            f" FROM {table} x SEMI JOIN kept USING (person_id)"
            f" ANTI JOIN meaning m ON m.concept_id = x.{column} WHERE x.{column} <> 0 GROUP BY ALL"
            for table, column in _EVENT_CONCEPTS
        )
        rows = self._rows(
            "SELECT g.label, count(*) FROM patient p SEMI JOIN kept USING (person_id)"
            " JOIN meaning g ON g.concept_id = p.gender_concept_id WHERE g.sex IS NULL GROUP BY ALL"
            " UNION ALL"
            " SELECT 'measurement ' || coalesce(label, 'concept_id ' || concept_id), count(*)"
            " FROM modifier SEMI JOIN kept USING (person_id)"
            f" WHERE item IS NULL AND biomarker IS NULL GROUP BY ALL UNION ALL {absent}"
        )
        return Counter({str(label): int(str(count)) for label, count in rows})
