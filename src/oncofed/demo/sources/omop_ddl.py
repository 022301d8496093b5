"""The OMOP CDM v5.4 tables the demo writer fills (``DDL``) and the concepts it codes with.

Real OMOP concept ids are used where they are well known (gender, the condition field concept,
tamoxifen, positive/negative, millimetre, the registry type); every other concept gets a local
id from ``LOCAL_IDS`` on, the range OMOP reserves for site concepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa

_B, _I, _D, _N = "BIGINT", "INTEGER", "DATE", "DOUBLE"
DDL: dict[str, dict[str, str]] = {
    "person": {
        "person_id": _B, "gender_concept_id": _I, "year_of_birth": _I, "month_of_birth": _I,
        "day_of_birth": _I, "birth_datetime": "TIMESTAMP", "race_concept_id": _I,
        "ethnicity_concept_id": _I, "person_source_value": "VARCHAR(50)",
    },
    "observation_period": {
        "observation_period_id": _B, "person_id": _B, "observation_period_start_date": _D,
        "observation_period_end_date": _D, "period_type_concept_id": _I,
    },
    "condition_occurrence": {
        "condition_occurrence_id": _B, "person_id": _B, "condition_concept_id": _I,
        "condition_start_date": _D, "condition_type_concept_id": _I,
        "condition_source_value": "VARCHAR(50)", "condition_source_concept_id": _I,
    },
    "measurement": {
        "measurement_id": _B, "person_id": _B, "measurement_concept_id": _I,
        "measurement_date": _D, "measurement_type_concept_id": _I, "value_as_number": _N,
        "value_as_concept_id": _I, "unit_concept_id": _I, "measurement_source_value":
        "VARCHAR(50)", "measurement_event_id": _B, "meas_event_field_concept_id": _I,
    },
    "drug_exposure": {
        "drug_exposure_id": _B, "person_id": _B, "drug_concept_id": _I,
        "drug_exposure_start_date": _D, "drug_exposure_end_date": _D, "drug_type_concept_id": _I,
        "drug_source_value": "VARCHAR(50)",
    },
    "procedure_occurrence": {
        "procedure_occurrence_id": _B, "person_id": _B, "procedure_concept_id": _I,
        "procedure_date": _D, "procedure_end_date": _D, "procedure_type_concept_id": _I,
    },
    "episode": {
        "episode_id": _B, "person_id": _B, "episode_concept_id": _I, "episode_start_date": _D,
        "episode_end_date": _D, "episode_parent_id": _B, "episode_number": _I,
        "episode_object_concept_id": _I, "episode_type_concept_id": _I,
    },
    "episode_event": {"episode_id": _B, "event_id": _B, "episode_event_field_concept_id": _I},
    "death": {
        "person_id": _B, "death_date": _D, "death_type_concept_id": _I, "cause_concept_id": _I,
    },
    "concept": {
        "concept_id": _I, "concept_name": "VARCHAR(255)", "domain_id": "VARCHAR(20)",
        "vocabulary_id": "VARCHAR(20)", "concept_class_id": "VARCHAR(20)",
        "standard_concept": "VARCHAR(1)", "concept_code": "VARCHAR(50)",
        "valid_start_date": _D, "valid_end_date": _D, "invalid_reason": "VARCHAR(1)",
    },
}  # fmt: skip
"""The OMOP v5.4 tables written: a subset of each table's columns, with OMOP's types."""
_ARROW = {_B: pa.int64(), _I: pa.int64(), _D: pa.date32(), _N: pa.float64(),
          "TIMESTAMP": pa.timestamp("s")}  # fmt: skip

LOCAL_IDS = 2_000_000_001
"""The first local concept id."""
REGISTRY = 32879
"""Type concept "Registry" for every record."""
AGENTS: dict[str, tuple[int, str]] = {"10324": (1436678, "tamoxifen")}
"""RxNorm ingredient code -> (OMOP concept id, name): the drugs the writer can record."""
GENDER_CONCEPTS = {"female": (8532, "FEMALE", "F"), "male": (8507, "MALE", "M"),
                   "other": (8521, "OTHER", "O"), "unknown": (8551, "UNKNOWN", "U")}  # fmt: skip
"""Sex -> (OMOP Gender concept id, name, code)."""
RESULT_CONCEPTS = {"positive": (9191, "Positive", "10828004"),
                   "negative": (9189, "Negative", "260385009")}  # fmt: skip
"""Biomarker result -> (OMOP concept id, name, SNOMED code)."""
INTENT_NAMES = {"adjuvant": "Adjuvant - intent", "neoadjuvant": "Neo-adjuvant - intent",
                "curative": "Curative - procedure intent",
                "palliative": "Palliative - procedure intent"}  # fmt: skip
"""Treatment intent -> the name of its value concept."""
STAGE_NUMERALS = (("IV", "4"), ("III", "3"), ("II", "2"), ("I", "1"), ("0", "0"))
"""Roman stage group numeral -> the arabic one of Cancer Modifier stage codes, longest first."""


def create_table(table: str) -> str:
    """The ``CREATE TABLE`` statement of an OMOP table of ``DDL``."""
    columns = ", ".join(f"{c} {t}" for c, t in DDL[table].items())
    return f"CREATE TABLE {table} ({columns})"


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of an OMOP table of ``DDL`` (text for the VARCHAR columns)."""
    return pa.schema([(c, _ARROW.get(t, pa.string())) for c, t in DDL[table].items()])


@dataclass
class Concepts:
    """The CONCEPT table being built: one row per (vocabulary, code)."""

    rows: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)
    next_local: int = LOCAL_IDS

    def get(
        self,
        vocabulary: str,
        code: str,
        name: str,
        domain: str,
        kind: str,
        concept_id: int | None = None,
    ) -> int:
        """The id of the concept, added on first use (a local id unless ``concept_id``)."""
        key = (vocabulary, code)
        if key not in self.rows:
            if concept_id is None:
                concept_id, self.next_local = self.next_local, self.next_local + 1
            self.rows[key] = {
                "concept_id": concept_id,
                "concept_name": name,
                "domain_id": domain,
                "vocabulary_id": vocabulary,
                "concept_class_id": kind,
                "standard_concept": "S",
                "concept_code": code,
                "valid_start_date": date(1970, 1, 1),
                "valid_end_date": date(2099, 12, 31),
                "invalid_reason": None,
            }
        return int(str(self.rows[key]["concept_id"]))

    def field_id(self, table: str) -> int:
        """The CDM field concept for ``<table>.<table>_id`` (real id for conditions)."""
        name = f"{table}.{table}_id"
        known = 1147127 if table == "condition_occurrence" else None
        return self.get("CDM", name, name, "Metadata", "Field", known)

    def modifier(self, code: str, name: str, kind: str = "Staging/Grading") -> int:
        return self.get("Cancer Modifier", code, name, "Measurement", kind)
