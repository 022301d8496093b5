"""A demo hospital's OMOP CDM v5.4 database, written from the model's rows.

The tables and the concepts coded with are in ``omop_ddl``; the CONCEPT table holds every
concept used. ``person_id`` is the patient's position in the patient table, from 1.

Each diagnosis gets a Disease First Occurrence episode, as the OHDSI NAACCR ETL derives one;
RFS and DMFS are carried, as an oncology ETL records follow-up, by disease-status episodes: a
recurrence or metastasis on its day, a Complete Remission on the last assessment.

What the model holds and OMOP does not (or not in this writer) raises ValueError rather than
being dropped: drugs other than the agents in ``AGENTS``, surgery/radiotherapy procedure codes,
treatments of type ``other``, rows without the days the dates are made from, an RFS or DMFS
that would read back otherwise (``_Writer._disease_status``).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

from oncofed.cdm.fields import BIOMARKER_BY_LOINC, KEY
from oncofed.cdm.tables import CdmData
from oncofed.demo.sources.omop_ddl import (
    AGENTS,
    DDL,
    GENDER_CONCEPTS,
    INTENT_NAMES,
    REGISTRY,
    RESULT_CONCEPTS,
    STAGE_NUMERALS,
    Concepts,
    arrow_schema,
    create_table,
)

_FIRST_DIAGNOSIS, _LAST_DIAGNOSIS = date(1984, 1, 1), date(1989, 12, 31)
_EVENT_EPISODES = {
    "rfs": ("Disease Recurrence", "Disease Dynamic"),
    "dmfs": ("Metastatic Disease", "Disease Extent"),
}
"""Endpoint -> the episode (name, concept class) recording its event."""
_IDS = {"Complete Remission": 32946}
"""OMOP's concept ids of the status episodes written (others get local ids)."""
_GAP_BETWEEN_TUMOURS = 30


class _Writer:
    """Collects the OMOP rows for one dataset."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.concepts = Concepts()
        self.rows: dict[str, list[dict[str, object]]] = {t: [] for t in DDL}
        self.concepts.get(
            "None", "No matching concept", "No matching concept", "Metadata", "Undefined", 0
        )
        self.concepts.get(
            "Type Concept", "Registry", "Registry", "Type Concept", "Type Concept", REGISTRY
        )

    def add(self, table: str, **values: object) -> int:
        """Append a row; its id is its position from 1 (for tables with an id column)."""
        rows = self.rows[table]
        key = f"{table}_id"
        if key in DDL[table]:
            values = {key: len(rows) + 1} | values
        rows.append(values)
        return len(rows)

    def measure(
        self,
        person: int,
        day: date,
        concept: int,
        *,
        number: float | None = None,
        value: int = 0,
        unit: int = 0,
        event: tuple[str, int] | None = None,
    ) -> None:
        self.add(
            "measurement",
            person_id=person,
            measurement_concept_id=concept,
            measurement_date=day,
            measurement_type_concept_id=REGISTRY,
            value_as_number=number,
            value_as_concept_id=value,
            unit_concept_id=unit,
            measurement_event_id=event[1] if event else None,
            meas_event_field_concept_id=self.concepts.field_id(event[0]) if event else None,
        )

    def person(self, person: int, patient: dict[str, object], origin: date) -> None:
        age = patient["age_at_diagnosis"]
        if not isinstance(age, int):
            raise ValueError(f"patient {patient[KEY]}: the writer needs age_at_diagnosis")
        anniversary = _years_before(origin, age)
        birth = anniversary - timedelta(days=self.rng.randint(1, 364))
        sex = patient["sex"]
        gender = 0
        if isinstance(sex, str):
            concept_id, name, code = GENDER_CONCEPTS[sex]
            gender = self.concepts.get("Gender", code, name, "Gender", "Gender", concept_id)
        self.add(
            "person",
            person_id=person,
            gender_concept_id=gender,
            year_of_birth=birth.year,
            month_of_birth=birth.month,
            day_of_birth=birth.day,
            birth_datetime=_midnight(birth),
            race_concept_id=0,
            ethnicity_concept_id=0,
            person_source_value=str(patient[KEY]),
        )

    def tumour(self, person: int, tumour: dict[str, object], day: date) -> None:
        c = self.concepts
        icd10, site, histology = tumour["icd10"], tumour["primary_site"], tumour["histology"]
        source = 0
        if isinstance(icd10, str):
            source = c.get("ICD10", icd10, f"Malignant neoplasm {icd10}", "Condition", "ICD10 code")
        concept, value = source, icd10
        if site is not None or histology is not None:
            value = f"{histology or 'NULL'}-{site or 'NULL'}"
            concept = c.get("ICDO3", value, f"Neoplasm {value}", "Condition", "ICDO Condition")
        if not concept:
            raise ValueError(f"tumour of {tumour[KEY]}: the writer needs a site or a code")
        condition = self.add(
            "condition_occurrence",
            person_id=person,
            condition_concept_id=concept,
            condition_start_date=day,
            condition_type_concept_id=REGISTRY,
            condition_source_value=icd10 or value,
            condition_source_concept_id=source,
        )
        event = ("condition_occurrence", condition)
        name = "Disease First Occurrence"  # as the OHDSI NAACCR ETL derives from each diagnosis
        first = c.get("Episode", name, name, "Episode", "Disease Episode", 32528)
        episode = self._episode(person, first, day, None, subject=concept)
        self.add(
            "episode_event",
            episode_id=episode,
            event_id=condition,
            episode_event_field_concept_id=c.field_id("condition_occurrence"),
        )
        for concept_id in self._staging(tumour):
            self.measure(person, day, concept_id, event=event)
        quantities = (
            ("tumour_size_mm", "local-tumor-size", "Tumor size", "Dimension"),
            (
                "nodes_positive",
                "local-nodes-positive",
                "Number of regional lymph nodes positive",
                "Nodes",
            ),
            (
                "nodes_examined",
                "local-nodes-examined",
                "Number of regional lymph nodes examined",
                "Nodes",
            ),
        )
        mm = c.get("UCUM", "mm", "millimeter", "Unit", "Unit", 8588)
        for name, code, label, kind in quantities:
            number = tumour[name]
            if isinstance(number, int | float):
                unit = mm if name == "tumour_size_mm" else 0
                self.measure(
                    person,
                    day,
                    c.modifier(code, label, kind),
                    number=number,
                    unit=unit,
                    event=event,
                )

    def _staging(self, tumour: dict[str, object]) -> Iterable[int]:
        """Cancer Modifier concepts for grade, T, N, M and stage group."""
        grade = tumour["grade"]
        if isinstance(grade, str):
            number = grade[1:]
            yield self.concepts.modifier(f"Grade-{number}", f"Grade {number}")
        basis, system = tumour["stage_basis"], tumour["stage_system"]
        prefix = {"clinical": "c-", "pathological": "p-"}.get(str(basis), "")
        edition = {"AJCC7": "7th_", "AJCC8": "8th_"}.get(str(system), "")
        words = " ".join(w for w in ("AJCC/UICC", edition[:3], str(basis or "")) if w)
        for name in ("t_category", "n_category", "m_category", "stage_group"):
            value = tumour[name]
            if not isinstance(value, str):
                continue
            if name == "stage_group":
                roman, arabic = next((r, a) for r, a in STAGE_NUMERALS if value.startswith(r))
                code = f"{prefix}{edition}AJCC/UICC-Stage-{arabic}{value[len(roman) :]}"
                yield self.concepts.modifier(code, f"{words} Stage {value}")
            else:
                code = f"{prefix}{edition}AJCC/UICC-{value}"
                yield self.concepts.modifier(code, f"{words} {value} Category")

    def biomarker(self, person: int, row: dict[str, object], origin: date) -> None:
        c = self.concepts
        code, day = str(row["code"]), row["day"]
        if not isinstance(day, int):
            raise ValueError(f"biomarker of {row[KEY]}: the writer needs its day")
        concept = c.get(
            "LOINC", code, BIOMARKER_BY_LOINC[code].description, "Measurement", "Lab Test"
        )
        result, value = str(row["result"]), 0
        if result in RESULT_CONCEPTS:
            concept_id, name, snomed = RESULT_CONCEPTS[result]
            value = c.get("SNOMED", snomed, name, "Meas Value", "Qualifier Value", concept_id)
        elif result == "equivocal":
            value = c.get("SNOMED", "local-equivocal", "Equivocal", "Meas Value", "Qualifier Value")
        unit = row["unit"]
        unit_id = c.get("UCUM", unit, unit, "Unit", "Unit") if isinstance(unit, str) else 0
        number = row["value"]
        self.measure(
            person,
            origin + timedelta(days=day),
            concept,
            value=value,
            unit=unit_id,
            number=number if isinstance(number, float) else None,
        )

    def treatment(self, person: int, row: dict[str, object], origin: date) -> None:
        c = self.concepts
        kind, agent, start, end = row["type"], row["agent_code"], row["start_day"], row["end_day"]
        if not isinstance(start, int):
            raise ValueError(f"treatment of {row[KEY]}: the writer needs its start_day")
        first = origin + timedelta(days=start)
        last = origin + timedelta(days=end) if isinstance(end, int) else None
        if kind in ("surgery", "radiotherapy") and agent is None:
            name = "Cancer Surgery" if kind == "surgery" else "Cancer Radiotherapy"
            episode = c.get("Episode", name, name, "Episode", "Treatment Episode")
            target = ("episode", self._episode(person, episode, first, last))
        elif kind in ("endocrine", "chemotherapy", "targeted", "immunotherapy") and agent in AGENTS:
            concept_id, name = AGENTS[str(agent)]
            drug = c.get("RxNorm", str(agent), name, "Drug", "Ingredient", concept_id)
            exposure = self.add(
                "drug_exposure",
                person_id=person,
                drug_concept_id=drug,
                drug_exposure_start_date=first,
                drug_exposure_end_date=last or first,
                drug_type_concept_id=REGISTRY,
                drug_source_value=name,
            )
            target = ("drug_exposure", exposure)
        else:
            raise ValueError(
                f"treatment of {row[KEY]}: {kind} with agent {agent!r} cannot be "
                f"written (known agents: {sorted(AGENTS)})"
            )
        intent = row["intent"]
        if isinstance(intent, str) and intent in INTENT_NAMES:
            item = c.get(
                "SNOMED",
                "local-treatment-intent",
                "Treatment intent",
                "Measurement",
                "Observable Entity",
            )
            value = c.get(
                "SNOMED", f"local-{intent}", INTENT_NAMES[intent], "Meas Value", "Qualifier Value"
            )
            self.measure(person, first, item, value=value, event=target)

    def _episode(
        self, person: int, concept: int, start: date, end: date | None, subject: int = 0
    ) -> int:
        """An episode of ``concept``; ``subject`` its object concept (the condition's)."""
        return self.add(
            "episode",
            person_id=person,
            episode_concept_id=concept,
            episode_start_date=start,
            episode_end_date=end,
            episode_parent_id=None,
            episode_number=None,
            episode_object_concept_id=subject,
            episode_type_concept_id=REGISTRY,
        )

    def outcome(self, person: int, row: dict[str, object], origin: date, cancer: int) -> None:
        c = self.concepts
        followup, died = row["last_followup_day"], row["os_event"] == 1
        if isinstance(followup, int):
            self.add(
                "observation_period",
                person_id=person,
                observation_period_start_date=origin - timedelta(days=365),
                observation_period_end_date=origin + timedelta(days=followup),
                period_type_concept_id=REGISTRY,
            )
        os_days = row["os_days"]
        if died and isinstance(os_days, int):
            cause = {
                "cancer": cancer,
                "other": c.get(
                    "oncofed",
                    "non-cancer-death",
                    "Death from a cause other than cancer",
                    "Observation",
                    "Cause of death",
                ),
            }.get(str(row["cause_of_death"]), 0)
            self.add(
                "death",
                person_id=person,
                death_date=origin + timedelta(days=os_days),
                death_type_concept_id=REGISTRY,
                cause_concept_id=cause,
            )
        self._disease_status(person, row, origin, died)

    def _disease_status(
        self, person: int, row: dict[str, object], origin: date, died: bool
    ) -> None:
        """The disease-status episodes an oncology ETL records and an OMOP import reads RFS and
        DMFS from: a Disease Recurrence or a Metastatic Disease on the day of each event that
        is not the death, and a Complete Remission on the day an endpoint is censored or ends
        in death (the last assessment; for a death, the cancer status at the last contact).
        An endpoint that would not read back raises ValueError: on or before the diagnosis day,
        censored though dead, censored before the last assessment (the import censors every
        endpoint there), or an RFS that ends after a distant metastasis (an RFS event too)."""
        c = self.concepts
        days = {e: d for e in _EVENT_EPISODES if isinstance(d := row[f"{e}_days"], int)}
        last = max(days.values(), default=0)
        episodes: dict[tuple[str, int], int] = {}  # one per status and day
        for endpoint, day in days.items():
            event, name, kind = row[f"{endpoint}_event"], *_EVENT_EPISODES[endpoint]
            refused = "on or before the diagnosis day" if day <= 0 else None
            if event != 1 and (died or day < last):
                refused = "censored though dead" if died else f"censored before day {last}"
            metastasis = days.get("dmfs") if row["dmfs_event"] == 1 else None
            if endpoint == "rfs" and metastasis is not None and day > metastasis:
                refused = f"after the distant metastasis of day {metastasis} (an RFS event)"
            if refused:
                raise ValueError(f"outcome of {row[KEY]}: {endpoint} {refused} cannot be written")
            if event != 1 or (died and day == row["os_days"]):
                name, kind = "Complete Remission", "Disease Dynamic"
            episodes[name, day] = c.get("Episode", name, name, "Episode", kind, _IDS.get(name))
        for (_, day), concept in episodes.items():
            self._episode(person, concept, origin + timedelta(days=day), None)


def _years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (28 February for 29 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _by_patient(table: pa.Table) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for row in table.to_pylist():
        out.setdefault(str(row[KEY]), []).append(row)
    return out


def write_omop(
    data: CdmData,
    target: Path,
    *,
    seed: int = 0,
    fmt: Literal["sqlite", "csv", "duckdb"] = "sqlite",
) -> Path:
    """Write ``data`` as an OMOP CDM v5.4 database at ``target`` (a file for sqlite/duckdb, a
    folder of ``<table>.csv`` for csv); diagnosis dates are drawn (seeded) in 1984-1989 and
    every day of the model becomes a date from it. Returns ``target``."""
    writer = _Writer(seed)
    tables = {name: _by_patient(data[name]) for name in ("tumour", "biomarker", "treatment")}
    outcomes = {str(r[KEY]): r for r in data["outcome"].to_pylist()}
    span = (_LAST_DIAGNOSIS - _FIRST_DIAGNOSIS).days
    for person, patient in enumerate(data["patient"].to_pylist(), start=1):
        pid = str(patient[KEY])
        origin = _FIRST_DIAGNOSIS + timedelta(days=writer.rng.randint(0, span))
        writer.person(person, patient, origin)
        tumours = sorted(tables["tumour"].get(pid, []), key=lambda r: int(str(r["tumour_seq"])))
        for index, tumour in enumerate(tumours):
            writer.tumour(person, tumour, origin + timedelta(days=_GAP_BETWEEN_TUMOURS * index))
        for row in tables["biomarker"].get(pid, []):
            writer.biomarker(person, row, origin)
        for row in tables["treatment"].get(pid, []):
            writer.treatment(person, row, origin)
        if pid in outcomes:
            index_code = tumours[0]["icd10"] if tumours else None
            cancer = writer.concepts.get(
                "ICD10", str(index_code or "C80.9"), "Malignant neoplasm", "Condition", "ICD10 code"
            )
            writer.outcome(person, outcomes[pid], origin, cancer)
    writer.rows["concept"] = list(writer.concepts.rows.values())
    arrow = {name: pa.Table.from_pylist(writer.rows[name], arrow_schema(name)) for name in DDL}
    _SAVE[fmt](arrow, target)
    return target


def _save_sqlite(tables: dict[str, pa.Table], target: Path) -> None:
    """Dates as ISO text, the usual OMOP-on-SQLite convention."""
    target.unlink(missing_ok=True)
    with sqlite3.connect(target) as con:
        for name, table in tables.items():
            con.execute(create_table(name))
            rows = [tuple(_sqlite_value(v) for v in r.values()) for r in table.to_pylist()]
            marks = ", ".join("?" * table.num_columns)
            con.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
    con.close()


def _sqlite_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return value.isoformat() if isinstance(value, date) else value


def _save_duckdb(tables: dict[str, pa.Table], target: Path) -> None:
    target.unlink(missing_ok=True)
    with duckdb.connect(str(target)) as con:
        for name, table in tables.items():
            con.execute(create_table(name))
            con.register("rows", table)
            con.execute(f"INSERT INTO {name} SELECT * FROM rows")
            con.unregister("rows")


def _save_csv(tables: dict[str, pa.Table], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pacsv.write_csv(table, target / f"{name}.csv")


_SAVE = {"sqlite": _save_sqlite, "duckdb": _save_duckdb, "csv": _save_csv}
