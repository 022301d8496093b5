"""OMOP CDM v5.4 import: the shipped example (CSV, SQLite, DuckDB, PostgreSQL give the same
rows), every reason a person is excluded, errors that name the table or column, and the demo
writer's round trip on GBSG2."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
from lifelines.datasets import load_gbsg2

from oncofed.cdm.errors import SourceError
from oncofed.cdm.fields import TABLES
from oncofed.cdm.importers.omop import (
    NO_DIAGNOSIS,
    NO_PERSON_ID,
    REASONS,
    OmopImport,
    import_omop,
)
from oncofed.cdm.importers.omop.concepts import interpret
from oncofed.cdm.tables import CdmData
from oncofed.demo.sources.omop import write_omop

EXAMPLE = Path(__file__).parents[2] / "src" / "oncofed" / "cdm" / "examples" / "omop"

EXPECTED: dict[str, list[dict[str, object]]] = {
    "patient": [
        {"patient_id": "1", "sex": "female", "age_at_diagnosis": 59},
        {"patient_id": "2", "sex": "male", "age_at_diagnosis": 75},
        {"patient_id": "4", "age_at_diagnosis": 52},
        {"patient_id": "5", "sex": "female", "age_at_diagnosis": 48},
    ],
    "tumour": [
        {"patient_id": "1", "tumour_seq": 1, "primary_site": "C50.4", "icd10": "C50.4",
         "histology": "8500/3", "stage_system": "AJCC8", "stage_basis": "pathological",
         "t_category": "T1c", "n_category": "N1a", "stage_group": "IIA", "grade": "G3",
         "tumour_size_mm": 24.0, "nodes_positive": 2, "nodes_examined": 14},
        {"patient_id": "2", "tumour_seq": 1, "icd10": "C61", "stage_system": "AJCC7",
         "stage_basis": "clinical", "t_category": "T2", "m_category": "M0"},
        {"patient_id": "2", "tumour_seq": 2, "primary_site": "C18.7", "icd10": "C18.7"},
        {"patient_id": "4", "tumour_seq": 1, "primary_site": "C34.1", "histology": "8140/3"},
        {"patient_id": "5", "tumour_seq": 1, "primary_site": "C50.9", "icd10": "C50.911",
         "tumour_size_mm": 21.0, "nodes_positive": 1},
    ],
    "biomarker": [
        {"patient_id": "1", "code": "48676-1", "result": "equivocal", "day": 5},
        {"patient_id": "1", "code": "85337-4", "result": "positive", "value": 80.0, "unit": "%",
         "day": 5},
        {"patient_id": "1", "code": "85339-0", "result": "negative", "day": 5},
        {"patient_id": "2", "code": "2857-1", "result": "unknown", "value": 12.5,
         "unit": "ng/mL", "day": -9},
        {"patient_id": "4", "code": "85337-4", "result": "unknown", "day": 8},
    ],
    "treatment": [
        {"patient_id": "1", "type": "surgery", "start_day": 19, "end_day": 19,
         "agent_code": "MAST"},
        {"patient_id": "1", "type": "radiotherapy", "start_day": 61, "end_day": 63,
         "agent_code": "RT"},
        {"patient_id": "1", "type": "endocrine", "start_day": 92, "end_day": 283,
         "agent_code": "10324", "intent": "adjuvant"},
        {"patient_id": "1", "type": "endocrine", "start_day": 457, "end_day": 547,
         "agent_code": "10324"},
        {"patient_id": "2", "type": "endocrine", "start_day": 53, "end_day": 235,
         "agent_code": "42375", "intent": "curative"},
        {"patient_id": "5", "type": "targeted", "start_day": 27, "end_day": 27,
         "agent_code": "224905"},
    ],
    "outcome": [
        {"patient_id": "1", "time_origin": "diagnosis", "vital_status": "dead",
         "last_followup_day": 1433, "os_days": 1433, "os_event": 1, "rfs_days": 823,
         "rfs_event": 1, "dmfs_days": 823, "dmfs_event": 1, "cause_of_death": "cancer"},
        {"patient_id": "2", "time_origin": "diagnosis", "vital_status": "alive",
         "last_followup_day": 1096, "os_days": 1096, "os_event": 0},
        {"patient_id": "4", "time_origin": "diagnosis", "vital_status": "dead",
         "last_followup_day": 303, "os_days": 303, "os_event": 1, "cause_of_death": "unknown"},
        {"patient_id": "5", "time_origin": "diagnosis", "vital_status": "alive"},
    ],
}  # fmt: skip
"""The example's persons once ``READABLE`` is applied: 1 breast cancer with clinical and
pathological staging, surgery, radiotherapy, two tamoxifen eras, a later M1 (its first RFS
event), progression and death from cancer; 2 prostate cancer (year of birth only, a regimen
episode but no disease status episode, so no RFS or DMFS) and a second primary; 3 no cancer; 4 a
cancer known only from its source value, sex concept 0, a biomarker without a result, death of
unknown cause (OS only); 5 an ICD-10-CM code (kept, with the site it implies), size in cm, no
observation period."""
Edit = tuple[str, str | None, str]
"""(file, text, replacement) in a copy of the example; text None appends the line."""
READABLE: list[Edit] = [
    ("concept.csv", "T5 Category,Measurement,Cancer Modifier,Staging/Grading,S,c-7th_AJCC/UICC-T5",
     "T2 Category,Measurement,Cancer Modifier,Staging/Grading,S,c-7th_AJCC/UICC-T2"),
    ("measurement.csv", "21,4,2000000060,2012-02-10,32879,,2000000071,",
     "21,4,2000000060,2012-02-10,32879,,0,"),
    ("measurement.csv", "23,5,2000000041,2019-04-04,32879,1.5,",
     "23,5,2000000041,2019-04-04,32879,1,"),
]  # fmt: skip
"""The three values of the shipped example that cannot be read (an AJCC T5, a biomarker value
"High", 1.5 positive nodes), made readable; the example as shipped shows their rejection."""
SHIPPED_REJECTED = {
    NO_DIAGNOSIS: 1,
    "tumour.t_category: concept not interpretable": 1,
    "biomarker.result: concept not interpretable": 1,
    "tumour.nodes_positive: not a whole number from 0 to 100": 1,
}
NOTES = [
    "ages at diagnosis from the year of birth only (OHDSI convention): 1",
    "patients without follow-up, no observation period: 1",
    "patients without rfs, no disease status recorded after diagnosis: 2",
    "patients without dmfs, no disease status recorded after diagnosis: 1",
]
UNMAPPED = {"None 'No matching concept' (No matching concept)": 1}


def _rows(table: pa.Table) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]


def _csv_tables(folder: Path) -> dict[str, pa.Table]:
    with duckdb.connect() as con:
        return {
            path.stem.lower(): con.sql(f"SELECT * FROM read_csv('{path}')").to_arrow_table()
            for path in sorted(folder.glob("*.csv"))
        }


_SQL_TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "int64": sa.BigInteger, "date32[day]": sa.Date, "double": sa.Float, "string": sa.String,
    "timestamp[us]": sa.DateTime,
}  # fmt: skip


def _to_sql(url: str, folder: Path) -> str:
    """The example's tables in a SQLAlchemy database, typed as OMOP's DDL."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    with engine.begin() as conn:
        for name, table in _csv_tables(folder).items():
            columns = [sa.Column(f.name, _SQL_TYPES[str(f.type)]()) for f in table.schema]
            target = sa.Table(name, meta, *columns)
            target.create(conn)
            conn.execute(target.insert(), table.to_pylist())
    engine.dispose()
    return url


def _to_duckdb(path: Path, folder: Path) -> Path:
    with duckdb.connect(str(path)) as con:
        for name, table in _csv_tables(folder).items():
            con.register("rows", table)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM rows")
            con.unregister("rows")
    return path


def _edited(folder: Path, edits: list[Edit]) -> Path:
    """A copy of the example in ``folder`` with ``edits`` applied."""
    shutil.copytree(EXAMPLE, folder)
    for name, text, replacement in edits:
        path = folder / name
        content = path.read_text()
        if text is None:
            content += replacement + "\n"
        else:
            assert content.count(text) == 1, (name, text)
            content = content.replace(text, replacement)
        path.write_text(content)
    return folder


@pytest.fixture(scope="module")
def example() -> OmopImport:
    return import_omop(EXAMPLE)


def _tables(result: OmopImport) -> dict[str, list[dict[str, object]]]:
    return {name: _rows(result.data[name]) for name in TABLES}


def _expected(*persons: str) -> dict[str, list[dict[str, object]]]:
    """The expected rows of the readable example without ``persons``."""
    return {t: [r for r in rows if r["patient_id"] not in persons] for t, rows in EXPECTED.items()}


def test_example_gives_the_hand_known_rows(tmp_path: Path) -> None:
    got = import_omop(_edited(tmp_path / "cdm", READABLE))
    assert _tables(got) == EXPECTED
    assert (got.rows_read, got.rejected) == (5, {NO_DIAGNOSIS: 1})
    assert got.notes == NOTES
    assert dict(got.unmapped) == UNMAPPED


def test_shipped_example_excludes_the_persons_whose_values_cannot_be_read(
    example: OmopImport,
) -> None:
    assert _tables(example) == _expected("2", "4", "5")
    assert (example.rows_read, example.rejected) == (5, SHIPPED_REJECTED)
    assert (example.notes, dict(example.unmapped)) == ([], {})


def test_death_from_cancer(example: OmopImport) -> None:
    first = example.data["outcome"].to_pylist()[0]
    assert (first["os_event"], first["os_days"], first["cause_of_death"]) == (1, 1433, "cancer")


def _modifier(n: int, code: str) -> list[Edit]:
    """A Cancer Modifier ``code`` of person 1's breast cancer, measured with its pathological
    staging (2010-03-20)."""
    concept = 2000000900 + n
    return [
        ("concept.csv", None, f"{concept},{code},Measurement,Cancer Modifier,Staging/Grading,S,"
                              f"{code},1970-01-01,2099-12-31,"),
        *_measure(n, concept),
    ]  # fmt: skip


def _measure(n: int, concept: int, number: str = "", unit: str = "") -> list[Edit]:
    row = f"{90 + n},1,{concept},2010-03-20,32879,{number},,{unit},101,1147127"
    return [("measurement.csv", None, row)]


_NOT_READ = "concept not interpretable"
_CONFLICT = "conflicting values"
CASES: list[tuple[str, str, list[Edit]]] = [
    ("patient: more than one person row", "5", [("person.csv", None, "5,8532,1970,4,5,,0,0")]),
    ("tumour: cancer condition without a start date", "2",
     [("condition_occurrence.csv", "203,2,2000000013,2017-01-05,", "203,2,2000000013,,")]),
    (f"tumour.icd10: {_NOT_READ}", "5", [("concept.csv", ",C50.911,", ",C50911,")]),
    ("patient.sex: code system not supported", "1", [("person.csv", "1,8532,", "1,9191,")]),
    (f"patient.sex: {_NOT_READ}", "1", [("person.csv", "1,8532,", "1,12345,")]),
    ("patient.age_at_diagnosis: impossible birth date", "1",
     [("person.csv", "1,8532,1950,6,15,", "1,8532,1950,2,30,")]),
    (f"patient.age_at_diagnosis: {_CONFLICT}", "4", [("person.csv", "4,0,1960,", "4,0,1961,")]),
    ("patient.age_at_diagnosis: birth after diagnosis", "2",
     [("person.csv", "2,8507,1940,", "2,8507,2016,")]),
    (f"tumour.icd10: {_CONFLICT}", "1",
     [("condition_occurrence.csv", None, "102,1,2000000016,2010-04-01,32879,C50.9,0")]),
    (f"tumour.histology: {_CONFLICT}", "4",
     [("condition_occurrence.csv", "401,4,0,", "401,4,2000000010,")]),
    (f"tumour.primary_site: {_CONFLICT}", "1",
     [("condition_occurrence.csv", None, "102,1,0,2010-04-01,32879,8500/3-C50.9,0")]),
    (f"tumour.n_category: {_NOT_READ}", "1",
     [("concept.csv", "p-8th_AJCC/UICC-N1a", "p-8th_AJCC/UICC-N9")]),
    (f"tumour.m_category: {_NOT_READ}", "2",
     [("concept.csv", "c-7th_AJCC/UICC-M0", "c-7th_AJCC/UICC-M7")]),
    (f"tumour.stage_group: {_NOT_READ}", "1",
     [("concept.csv", "p-8th_AJCC/UICC-Stage-2A", "p-8th_AJCC/UICC-Stage-5")]),
    (f"tumour.grade: {_NOT_READ}", "1", [("concept.csv", ",Grade-3,", ",Grade-H,")]),
    ("tumour.nodes_examined: not a whole number from 0 to 150", "1",
     [("measurement.csv", "32879,14,", "32879,-3,")]),
    (f"tumour.t_category: {_CONFLICT}", "1", _modifier(1, "p-8th_AJCC/UICC-T2")),
    (f"tumour.n_category: {_CONFLICT}", "1", _modifier(1, "p-8th_AJCC/UICC-N2")),
    (f"tumour.m_category: {_CONFLICT}", "1",
     _modifier(1, "p-8th_AJCC/UICC-M0") + _modifier(2, "p-8th_AJCC/UICC-M1")),
    (f"tumour.stage_group: {_CONFLICT}", "1", _modifier(1, "p-8th_AJCC/UICC-Stage-3A")),
    (f"tumour.grade: {_CONFLICT}", "1", _modifier(1, "Grade-2")),
    (f"tumour.tumour_size_mm: {_CONFLICT}", "1", _measure(1, 2000000040, "30", "8588")),
    (f"tumour.nodes_positive: {_CONFLICT}", "1", _measure(1, 2000000041, "3")),
    (f"tumour.nodes_examined: {_CONFLICT}", "1", _measure(1, 2000000042, "15")),
    (f"tumour.stage_system: {_CONFLICT}", "1", _modifier(1, "p-7th_AJCC/UICC-T1c")),
    (f"biomarker.result: {_NOT_READ}", "1",
     [("measurement.csv", "32879,,9189,", "32879,,12345,")]),
    ("biomarker.unit: code system not supported", "1",
     [("measurement.csv", "80,9191,2000000051,", "80,9191,2000000071,")]),
    (f"biomarker.unit: {_NOT_READ}", "1",
     [("measurement.csv", "80,9191,2000000051,", "80,9191,12345,")]),
    (f"treatment.type: {_NOT_READ}", "2",
     [("episode.csv", ",2000000080,32879", ",0,32879"),
      ("episode_event.csv", "2,5,2000000001\n", "")]),
    (f"treatment.type: {_CONFLICT}", "1",
     [("concept.csv", None, "2000000102,Cancer Surgery,Episode,Episode,Treatment Episode,S,"
                            "local-surgery,1970-01-01,2099-12-31,"),
      ("episode.csv", None, "3,1,2000000102,2010-05-01,,2000000091,32879")]),
    (f"treatment.agent_code: {_NOT_READ}", "2",
     [("episode.csv", ",2000000080,32879", ",12345,32879")]),
    (f"treatment.intent: {_NOT_READ}", "1",
     [("measurement.csv", ",2000000111,,1,", ",12345,,1,")]),
    (f"treatment.intent: {_CONFLICT}", "1",
     [("measurement.csv", None, "90,1,2000000110,2010-09-10,32879,,2000000112,,2,2000000001")]),
    ("treatment.end_day: before start_day", "5",
     [("drug_exposure.csv", "2019-05-01,2019-05-01", "2019-05-01,2019-04-01")]),
    (f"outcome.os_days: {_CONFLICT}", "1", [("death.csv", None, "1,2014-03-01,32879,2000000016")]),
    ("outcome.os_days: death before diagnosis", "4",
     [("death.csv", "4,2012-12-01,", "4,2011-12-01,")]),
    (f"outcome.cause_of_death: {_NOT_READ}", "4",
     [("death.csv", "4,2012-12-01,32879,0", "4,2012-12-01,32879,12345")]),
    (f"outcome.cause_of_death: {_CONFLICT}", "1",
     [("death.csv", None, "1,2014-02-01,32879,2000000014")]),
    ("outcome.last_followup_day: before diagnosis", "4",
     [("observation_period.csv", "5,4,2011-01-01,2012-12-01,", "5,4,2011-01-01,2012-01-01,")]),
    ("outcome.rfs_days: recurrence not after diagnosis", "1",
     [("episode.csv", "1,1,2000000100,2013-01-01,", "1,1,2000000100,2010-03-01,")]),
]  # fmt: skip
"""(reason, the person it excludes, the edits of the readable example that break the rule)."""


@pytest.mark.parametrize(("reason", "person", "edits"), CASES, ids=[c[0] for c in CASES])
def test_a_value_that_cannot_be_read_excludes_its_person(
    reason: str, person: str, edits: list[Edit], tmp_path: Path
) -> None:
    got = import_omop(_edited(tmp_path / "cdm", READABLE + edits))
    assert (got.rows_read, got.rejected) == (5, {NO_DIAGNOSIS: 1, reason: 1})
    assert _tables(got) == _expected(person)


def test_every_reason_is_tested() -> None:
    assert sorted(REASONS) == sorted({c[0] for c in CASES} | set(SHIPPED_REJECTED))


def test_a_person_is_counted_under_the_first_reason_only(tmp_path: Path) -> None:
    edits: list[Edit] = [
        ("person.csv", "1,8532,", "1,12345,"),
        ("death.csv", "1,2014-02-01,", "1,2009-02-01,"),
    ]
    got = import_omop(_edited(tmp_path / "cdm", READABLE + edits))
    assert got.rejected == {NO_DIAGNOSIS: 1, f"patient.sex: {_NOT_READ}": 1}


def test_a_person_row_without_id_is_excluded(tmp_path: Path) -> None:
    got = import_omop(
        _edited(tmp_path / "cdm", [*READABLE, ("person.csv", None, ",8532,1970,,,,0,0")])
    )
    assert (got.rows_read, got.rejected) == (6, {NO_DIAGNOSIS: 1, NO_PERSON_ID: 1})
    assert _tables(got) == EXPECTED


def test_a_drug_not_in_the_concept_table_is_counted_for_the_admin(tmp_path: Path) -> None:
    edits: list[Edit] = [("drug_exposure.csv", "4,1,2000000081,", "4,1,12345,")]
    got = import_omop(_edited(tmp_path / "cdm", READABLE + edits))
    assert (_tables(got), got.rejected) == (EXPECTED, {NO_DIAGNOSIS: 1})
    assert got.unmapped == {**UNMAPPED, "drug_exposure concept_id 12345 (not in CONCEPT)": 1}


@pytest.mark.parametrize("drug", ["2000000080", "0"])
def test_a_regimen_is_one_treatment_per_kind_of_its_drugs(drug: str, tmp_path: Path) -> None:
    """Person 2's leuprolide regimen, as its object or only linked, with a linked trastuzumab."""
    edits: list[Edit] = [
        ("episode.csv", ",2000000080,32879", f",{drug},32879"),
        ("drug_exposure.csv", None, "7,2,2000000082,2015-10-01,2015-10-01,32879"),
        ("episode_event.csv", None, "2,7,2000000001"),
    ]
    got = import_omop(_edited(tmp_path / "cdm", READABLE + edits))
    regimen = {"patient_id": "2", "start_day": 53, "end_day": 235, "intent": "curative"}
    assert [r for r in _rows(got.data["treatment"]) if r["patient_id"] == "2"] == [
        {**regimen, "type": "endocrine", "agent_code": "42375"},
        {**regimen, "type": "targeted", "agent_code": "224905"},
    ]


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "sqlite-file"])
def test_databases_give_the_same_rows_as_the_csv_folder(
    kind: str, tmp_path: Path, example: OmopImport
) -> None:
    if kind == "duckdb":
        source: str | Path = f"duckdb:///{_to_duckdb(tmp_path / 'cdm.duckdb', EXAMPLE)}"
    else:
        source = _to_sql(f"sqlite:///{tmp_path / 'cdm.db'}", EXAMPLE)
        if kind == "sqlite-file":
            source = tmp_path / "cdm.db"
    got = import_omop(source)
    for name in TABLES:
        assert got.data[name].equals(example.data[name]), name
    assert (got.rejected, got.notes, got.unmapped, got.rows_read) == (
        example.rejected,
        [],
        Counter(),
        5,
    )


EPOCH = datetime(1970, 1, 1)
BIRTH = datetime(1950, 6, 15)
"""Person 1's birth_datetime in the SQLite fixtures: the day its year, month and day give, so
every fixture must give the example's rows."""


def _sqlite_dates(path: Path, written: str) -> Path:
    """The example as an OMOP SQLite database whose DATE and DATETIME columns hold what the
    writer stores: ISO text, or REAL numbers as OHDSI's tools write them, seconds since
    1970-01-01 (DatabaseConnector, as in Eunomia's databases) or days since 1970-01-01 (RSQLite,
    R's Date class)."""

    def stored(value: object) -> object:
        if isinstance(value, date):
            moment = datetime.combine(value, datetime.min.time()) if type(value) is date else value
            seconds: float = (moment - EPOCH).total_seconds()
            if written == "iso":
                return value.isoformat(sep=" ") if isinstance(value, datetime) else str(value)
            return seconds if written == "seconds" else seconds / 86400
        return value

    with closing(sqlite3.connect(path)) as db, db:
        for name, table in _csv_tables(EXAMPLE).items():
            rows = table.to_pylist()
            if name == "person":
                rows = [row | {"birth_datetime": BIRTH} if row["person_id"] == 1 else row
                        for row in rows]  # fmt: skip
            kinds = {f.name: "REAL" if written != "iso" and str(f.type).startswith(("date",
                     "timestamp")) else "" for f in table.schema}  # fmt: skip
            columns = ", ".join(f'"{c}" {kind}' for c, kind in kinds.items())
            db.execute(f"CREATE TABLE {name} ({columns})")
            marks = ", ".join("?" for _ in kinds)
            values = [tuple(stored(row[c]) for c in kinds) for row in rows]
            db.executemany(f"INSERT INTO {name} VALUES ({marks})", values)
    return path


@pytest.mark.parametrize("written", ["iso", "seconds", "days"])
def test_sqlite_dates_are_read_as_the_writer_stored_them(
    written: str, tmp_path: Path, example: OmopImport
) -> None:
    """ISO text, epoch seconds (DatabaseConnector, Eunomia) and epoch days (RSQLite), decided
    per column: every fixture gives the CSV example's rows."""
    raw = sqlite3.connect(_sqlite_dates(tmp_path / "cdm.sqlite", written))
    stored = raw.execute("SELECT condition_start_date FROM condition_occurrence").fetchone()[0]
    raw.close()
    assert isinstance(stored, str if written == "iso" else float)
    got = import_omop(tmp_path / "cdm.sqlite")
    for name in TABLES:
        assert got.data[name].equals(example.data[name]), name
    assert (got.rejected, got.rows_read) == (example.rejected, 5)


def test_a_date_column_mixing_text_and_numbers_is_refused_by_name(tmp_path: Path) -> None:
    path = _sqlite_dates(tmp_path / "cdm.sqlite", "seconds")
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE death SET death_date = '2015-03-01' WHERE rowid = 1")
    with pytest.raises(SourceError, match=r"death\.death_date mixes dates written as text and as"):
        import_omop(path)


@pytest.mark.postgres
@pytest.mark.skipif("ONCOFED_TEST_POSTGRES_URL" not in os.environ, reason="no PostgreSQL")
def test_postgresql_gives_the_same_rows(postgres_url: str, example: OmopImport) -> None:
    got = import_omop(_to_sql(postgres_url, EXAMPLE))
    for name in TABLES:
        assert got.data[name].equals(example.data[name]), name


def _without(tmp_path: Path, table: str, column: str | None = None) -> Path:
    folder = tmp_path / "cdm"
    shutil.copytree(EXAMPLE, folder)
    path = folder / f"{table}.csv"
    if column is None:
        path.unlink()
    else:
        rows = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        pacsv.write_csv(rows.drop_columns([column]), path)
    return folder


def test_missing_table_is_named(tmp_path: Path) -> None:
    folder = _without(tmp_path, "episode")
    with pytest.raises(SourceError, match=f"^{folder}: the OMOP table 'episode' is missing$"):
        import_omop(folder)


def test_missing_column_is_named(tmp_path: Path) -> None:
    folder = _without(tmp_path, "measurement", "meas_event_field_concept_id")
    expected = "OMOP table 'measurement' lacks column\\(s\\) \\['meas_event_field_concept_id'\\]"
    with pytest.raises(SourceError, match=expected):
        import_omop(folder)


def test_missing_table_in_a_database_names_the_url_typed(tmp_path: Path) -> None:
    url = _to_sql(f"sqlite:///{tmp_path / 'cdm.db'}", _without(tmp_path, "death"))
    with pytest.raises(SourceError, match=f"^{re.escape(url)}: the OMOP table 'death' is missing$"):
        import_omop(url)
    path = tmp_path / "cdm.db"
    with pytest.raises(SourceError, match=f"^{re.escape(str(path))}: the OMOP table 'death' is"):
        import_omop(path)


def test_unreadable_value_names_table_and_column(tmp_path: Path) -> None:
    folder = _without(tmp_path, "death")
    (folder / "death.csv").write_text("person_id,death_date,cause_concept_id\n1,yesterday,0\n")
    with pytest.raises(SourceError, match=r"death\.death_date is not DATE: Conversion Error"):
        import_omop(folder)


def test_missing_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such OMOP database file or CSV folder"):
        import_omop(tmp_path / "nowhere.duckdb")


@pytest.mark.parametrize(
    ("code", "item", "value", "basis", "system"),
    [
        ("c-8th_AJCC/UICC-T2", "t", "T2", "clinical", "AJCC8"),
        ("p-7th_AJCC/UICC-N0(i+)", "n", "N0(i+)", "pathological", "AJCC7"),
        ("8th_AJCC/UICC-Stage-3C1", "stage", "IIIC1", None, "AJCC8"),
        ("c-6th_AJCC/UICC-Stage-0is", "stage", "0is", "clinical", None),
        ("AJCC/UICC-M1a", "m", "M1a", None, None),
        ("G3", "grade", "G3", None, None),
        ("Grade-X", "grade", "GX", None, None),
        ("Grade-H", "grade", None, None, None),
        ("8th_AJCC/UICC-Stage-5", "stage", None, None, "AJCC8"),
    ],
)
def test_cancer_modifier_codes(
    code: str, item: str, value: str | None, basis: str | None, system: str | None
) -> None:
    meaning = interpret(_concept("Cancer Modifier", code, "Measurement"))
    found = (meaning["item"], meaning["item_value"], meaning.get("basis"), meaning.get("system"))
    assert found == (item, value, basis, system)


def _concept(vocabulary: str, code: str, domain: str) -> dict[str, str | int | None]:
    """A CONCEPT row named by its code."""
    return {
        "concept_id": 1,
        "concept_name": code,
        "domain_id": domain,
        "vocabulary_id": vocabulary,
        "concept_class_id": "Code",
        "concept_code": code,
    }


@pytest.mark.parametrize(
    ("vocabulary", "code", "icd10", "site", "malignant"),
    [
        ("ICD10", "C61", "C61", None, True),
        ("ICD10", "C50.9", "C50.9", "C50.9", True),
        ("ICD10CM", "C50.911", "C50.911", "C50.9", True),
        ("ICD10CM", "C44.1121", "C44.1121", "C44.1", True),
        ("ICD10CM", "C49.A0", "C49.A0", None, True),
        ("ICD10CM", "D05.11", "D05.11", None, True),
        ("ICD10CM", "C79.51", "C79.51", None, False),
        ("ICD10CM", "C50.91111", None, None, None),
        ("ICD10CM", "c50.911", None, None, None),
    ],
)
def test_icd10_codes_of_the_model_form_are_kept(
    vocabulary: str, code: str, icd10: str | None, site: str | None, malignant: bool | None
) -> None:
    meaning = interpret(_concept(vocabulary, code, "Condition"))
    assert (meaning.get("icd10"), meaning.get("icd10_site"), meaning.get("malignant")) == (
        icd10,
        site,
        malignant,
    )


@pytest.mark.parametrize(
    ("vocabulary", "code", "bad"),
    [("ICD10", "C509", True), ("ICD10CM", "D051", True), ("ICD10", "C7951", None),
     ("ICD10", "I10", None), ("ICD10CM", "C50.911", None)],
)  # fmt: skip
def test_a_primary_cancer_code_not_of_the_model_form_is_marked(
    vocabulary: str, code: str, bad: bool | None
) -> None:
    assert interpret(_concept(vocabulary, code, "Condition")).get("icd10_bad") is bad


def gbsg2_model() -> CdmData:
    """GBSG2 in the model's canonical encoding, built directly with pyarrow."""
    df = load_gbsg2()
    n = len(df)
    ids = [f"gbsg2-{i}" for i in range(n)]
    estrec, progrec = df["estrec"].astype(float).tolist(), df["progrec"].astype(float).tolist()
    treated = [pid for pid, h in zip(ids, df["horTh"], strict=True) if h == "yes"]
    days = df["time"].astype(int).tolist()

    def result(value: float) -> str:
        return "positive" if value >= 10 else "negative"

    return CdmData(
        {
            "patient": pa.table(
                {
                    "patient_id": ids,
                    "sex": ["female"] * n,
                    "age_at_diagnosis": df["age"].astype(int).tolist(),
                }
            ),
            "tumour": pa.table(
                {
                    "patient_id": ids,
                    "tumour_seq": [1] * n,
                    "primary_site": ["C50.9"] * n,
                    "icd10": ["C50.9"] * n,
                    "grade": df["tgrade"].map({"I": "G1", "II": "G2", "III": "G3"}).tolist(),
                    "tumour_size_mm": df["tsize"].astype(float).tolist(),
                    "nodes_positive": df["pnodes"].astype(int).tolist(),
                }
            ),
            "biomarker": pa.table(
                {
                    "patient_id": [pid for pid in ids for _ in (0, 1)],
                    "code": ["85337-4", "85339-0"] * n,
                    "result": [
                        result(v) for pair in zip(estrec, progrec, strict=True) for v in pair
                    ],
                    "value": [v for pair in zip(estrec, progrec, strict=True) for v in pair],
                    "unit": ["fmol/mg"] * (2 * n),
                    "day": [0] * (2 * n),
                }
            ),
            "treatment": pa.table(
                {
                    "patient_id": treated,
                    "type": ["endocrine"] * len(treated),
                    "agent_code": ["10324"] * len(treated),
                    "intent": ["adjuvant"] * len(treated),
                    "start_day": [0] * len(treated),
                    "end_day": [730] * len(treated),
                }
            ),
            "outcome": pa.table(
                {
                    "patient_id": ids,
                    "time_origin": ["diagnosis"] * n,
                    "vital_status": ["alive"] * n,
                    "last_followup_day": days,
                    "os_days": days,
                    "os_event": [0] * n,
                    "rfs_days": days,
                    "rfs_event": df["cens"].astype(int).tolist(),
                }
            ),
        }
    )


def _per_patient(data: CdmData, ids: dict[str, str]) -> dict[str, list[tuple[object, ...]]]:
    """Every table as sorted rows, patient ids replaced through ``ids``."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for name in TABLES:
        rows = data[name].to_pylist()
        out[name] = sorted(
            (ids[str(r["patient_id"])], *(repr(v) for k, v in r.items() if k != "patient_id"))
            for r in rows
        )
    return out


@pytest.mark.parametrize("fmt", ["sqlite", "csv", "duckdb"])
def test_gbsg2_round_trip(fmt: str, tmp_path: Path) -> None:
    data = gbsg2_model()
    target = write_omop(data, tmp_path / f"gbsg2.{fmt}", seed=3, fmt=fmt)  # type: ignore[arg-type]
    back = import_omop(target)
    ids = {pid: str(i) for i, pid in enumerate(data["patient"]["patient_id"].to_pylist(), 1)}
    assert back.rows_read == 686
    assert (back.notes, dict(back.unmapped), dict(back.rejected)) == ([], {}, {})
    assert _per_patient(back.data, {v: v for v in ids.values()}) == _per_patient(data, ids)


def test_writer_refuses_a_drug_it_cannot_code(tmp_path: Path) -> None:
    data = gbsg2_model()
    first = data["treatment"].slice(0, 1)
    treatment = first.set_column(
        first.schema.get_field_index("agent_code"), "agent_code", pa.array(["99999"])
    )
    broken = CdmData({**data.tables, "treatment": treatment})
    with pytest.raises(ValueError, match="endocrine with agent '99999' cannot be written"):
        write_omop(broken, tmp_path / "x.db")


@pytest.mark.parametrize(
    ("change", "refused"),
    [({"rfs_days": 0}, "rfs on or before the diagnosis day"),
     ({"vital_status": "dead", "os_event": 1, "rfs_event": 0}, "rfs censored though dead"),
     ({"rfs_days": 100, "rfs_event": 0, "dmfs_days": 200, "dmfs_event": 1},
      "rfs censored before day 200"),
     ({"rfs_days": 300, "rfs_event": 1, "dmfs_days": 200, "dmfs_event": 1},
      r"rfs after the distant metastasis of day 200 \(an RFS event\)")],
)  # fmt: skip
def test_writer_refuses_an_rfs_that_would_not_read_back(
    change: dict[str, object], refused: str, tmp_path: Path
) -> None:
    """An RFS censored on day 0 has no status episode after diagnosis to carry it; a dead
    patient's RFS would read back ending in death, one censored before a later metastasis
    censored on the day of that last assessment."""
    data = gbsg2_model()
    outcome = data["outcome"].to_pylist()
    outcome[0] |= change
    broken = CdmData({**data.tables, "outcome": pa.Table.from_pylist(outcome)})
    with pytest.raises(ValueError, match=f"^outcome of gbsg2-0: {refused} cannot be written$"):
        write_omop(broken, tmp_path / "x.db")


def test_a_missing_sqlite_database_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(SourceError, match="no such SQLite database file"):
        import_omop(f"sqlite:///{missing}")
    assert not missing.exists()
