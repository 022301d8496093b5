"""An OMOP import from source to model tables: load the source, interpret its concepts, run the
SQL in one duckdb connection, and count what was excluded or could not be read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from oncofed.cdm.fields import TableName
from oncofed.cdm.importers.omop.concepts import meanings, source_values
from oncofed.cdm.importers.omop.outcome import OUTCOME_TABLES, SELECT_OUTCOME
from oncofed.cdm.importers.omop.read import load_source
from oncofed.cdm.importers.omop.sql import (
    SELECT_BIOMARKER,
    SELECT_PATIENT,
    SELECT_TREATMENT,
    SELECT_TUMOUR,
    TREATMENT_TABLES,
    TUMOUR_TABLES,
)
from oncofed.cdm.tables import CdmData, conform

NO_DIAGNOSIS = "condition_occurrence: no primary cancer condition"
"""Why a person is excluded (``OmopImport.rejected``)."""


@dataclass
class OmopImport:
    """An OMOP import: the model's tables (``patient_id`` = ``str(person_id)``), the number of
    persons read, persons excluded by reason, notes for the site admin, and rows per concept
    that could not be read (values left null)."""

    data: CdmData
    rows_read: int
    rejected: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    unmapped: Counter[str] = field(default_factory=Counter)


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
        self.notes: list[str] = []
        self.unmapped: Counter[str] = Counter()
        self.excluded = 0

    def _rows(self, sql: str) -> list[tuple[object, ...]]:
        return self.con.execute(sql).fetchall()

    def _note(self, count: object, what: str) -> None:
        if isinstance(count, int) and count:
            self.notes.append(f"{what}: {count}")

    def _count(self, label_sql: str) -> None:
        """Add ``SELECT label, rows`` results to the unmapped counter."""
        for label, count in self._rows(label_sql):
            self.unmapped[str(label)] += int(str(count))

    def run(self) -> OmopImport:
        con = self.con
        concepts = con.sql("SELECT * FROM concept").to_arrow_table().to_pylist()
        con.register("meaning", meanings(concepts))
        sources = self._rows(
            "SELECT DISTINCT condition_source_value FROM condition_occurrence "
            "WHERE condition_source_value IS NOT NULL"
        )
        con.register("srcval", source_values([str(r[0]) for r in sources]))
        for tables in (TUMOUR_TABLES, TREATMENT_TABLES, OUTCOME_TABLES):
            con.execute(tables)
        persons = int(str(self._rows("SELECT count(*) FROM person")[0][0]))
        self._notes()
        data = CdmData(
            {
                "patient": self._table("patient", SELECT_PATIENT),
                "tumour": self._table("tumour", SELECT_TUMOUR),
                "biomarker": self._table("biomarker", SELECT_BIOMARKER),
                "treatment": self._table("treatment", SELECT_TREATMENT),
                "outcome": self._table("outcome", SELECT_OUTCOME),
            }
        )
        rejected = Counter({NO_DIAGNOSIS: self.excluded} if self.excluded else {})
        return OmopImport(data, persons, rejected, self.notes, self.unmapped)

    def _table(self, name: TableName, sql: str) -> pa.Table:
        return conform(name, self.con.sql(sql).to_arrow_table())

    def _notes(self) -> None:
        one = self._rows(
            "SELECT (SELECT count(*) FROM person p ANTI JOIN origin o USING (person_id)),"
            " (SELECT count(*) FROM cond WHERE malignant AND d IS NULL),"
            " (SELECT sum(conflicts) FROM tumour_grp),"
            " (SELECT count(*) FROM item WHERE conflict),"
            " (SELECT count(*) FROM treatment WHERE type IS NULL),"
            " (SELECT count(*) FROM person p JOIN origin USING (person_id)"
            "   WHERE birth_datetime IS NULL AND (month_of_birth IS NULL OR day_of_birth IS NULL)"
            "   AND year_of_birth IS NOT NULL),"
            " (SELECT count(*) FROM origin ANTI JOIN followup USING (person_id))"
        )[0]
        self.excluded = int(str(one[0]))
        for count, what in zip(
            one,
            (
                "persons excluded, no primary cancer diagnosis",
                "cancer conditions ignored, no start date",
                "tumour codes left null, conditions of one tumour disagree",
                "cancer modifier items left null, measurements of one day disagree",
                "treatment episodes ignored, kind unknown",
                "ages at diagnosis from the year of birth only (OHDSI convention)",
                "patients without follow-up, no observation period",
            ),
            strict=True,
        ):
            self._note(count, what)
        self._count(
            "SELECT coalesce(g.label, 'concept_id ' || p.gender_concept_id) AS l, count(*)"
            " FROM person p JOIN origin USING (person_id)"
            " LEFT JOIN meaning g ON g.concept_id = p.gender_concept_id"
            " WHERE g.sex IS NULL GROUP BY l"
        )
        self._count(
            "SELECT 'measurement ' || coalesce(label, 'concept_id ' || concept_id), count(*)"
            " FROM modifier WHERE (value IS NULL AND num IS NULL) GROUP BY ALL"
        )
        self._count(
            "SELECT 'value ' || coalesce(v.label, 'concept_id ' || x.value_as_concept_id),"
            " count(*) FROM measurement x"
            " JOIN meaning b ON b.concept_id = x.measurement_concept_id AND b.biomarker IS NOT NULL"
            " LEFT JOIN meaning v ON v.concept_id = x.value_as_concept_id"
            " WHERE x.value_as_concept_id <> 0 AND v.result IS NULL GROUP BY ALL"
        )
        self._count(
            "SELECT 'episode ' || label, count(*) FROM tx_episode"
            " WHERE kind = 'regimen' AND drug_type IS NULL GROUP BY ALL"
        )
