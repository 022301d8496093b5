"""OMOP CDM v5.4 import: the shipped example (CSV, SQLite, DuckDB, PostgreSQL give the same
rows), errors that name the table or column, and the demo writer's round trip on GBSG2."""

from __future__ import annotations

import os
import shutil
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
from oncofed.cdm.importers.omop import OmopImport, import_omop
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
         "stage_basis": "clinical", "m_category": "M0"},
        {"patient_id": "2", "tumour_seq": 2, "primary_site": "C18.7", "icd10": "C18.7"},
        {"patient_id": "4", "tumour_seq": 1, "primary_site": "C34.1", "histology": "8140/3"},
        {"patient_id": "5", "tumour_seq": 1, "primary_site": "C50.9", "icd10": "C50.911",
         "tumour_size_mm": 21.0},
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
         "last_followup_day": 1433, "os_days": 1433, "os_event": 1, "rfs_days": 1037,
         "rfs_event": 1, "dmfs_days": 823, "dmfs_event": 1, "cause_of_death": "cancer"},
        {"patient_id": "2", "time_origin": "diagnosis", "vital_status": "alive",
         "last_followup_day": 1096, "os_days": 1096, "os_event": 0, "rfs_days": 1096,
         "rfs_event": 0, "dmfs_days": 1096, "dmfs_event": 0},
        {"patient_id": "4", "time_origin": "diagnosis", "vital_status": "dead",
         "last_followup_day": 303, "os_days": 303, "os_event": 1, "rfs_days": 303,
         "rfs_event": 1, "cause_of_death": "unknown"},
        {"patient_id": "5", "time_origin": "diagnosis", "vital_status": "alive"},
    ],
}  # fmt: skip
"""The example's persons: 1 breast cancer with clinical and pathological staging, surgery,
radiotherapy, two tamoxifen eras, progression, a later M1 and death from cancer; 2 prostate
cancer (year of birth only, an unknown T category, a regimen episode) and a second primary;
3 no cancer; 4 a cancer known only from its source value, unknown sex, death of unknown cause;
5 an ICD-10-CM code (kept, with the site it implies), size in cm, a non-integer node count, no
observation period."""
NOTES = [
    "persons excluded, no primary cancer diagnosis: 1",
    "ages at diagnosis from the year of birth only (OHDSI convention): 1",
    "patients without follow-up, no observation period: 1",
]
UNMAPPED = {
    "None 'No matching concept' (No matching concept)": 1,
    "measurement Cancer Modifier 'c-7th_AJCC/UICC-T5' (AJCC/UICC 7th clinical T5 Category)": 1,
    "measurement Cancer Modifier 'local-nodes-positive' "
    "(Number of regional lymph nodes positive)": 1,
    "value Local 'local-high' (High)": 1,
}


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


@pytest.fixture(scope="module")
def example() -> OmopImport:
    return import_omop(EXAMPLE)


def test_example_gives_the_hand_known_rows(example: OmopImport) -> None:
    assert {name: _rows(example.data[name]) for name in TABLES} == EXPECTED
    assert example.rows_read == 5
    assert example.notes == NOTES
    assert dict(example.unmapped) == UNMAPPED


def test_death_from_cancer(example: OmopImport) -> None:
    first = example.data["outcome"].to_pylist()[0]
    assert (first["os_event"], first["os_days"], first["cause_of_death"]) == (1, 1433, "cancer")


def test_person_without_diagnosis_is_excluded_with_a_note(example: OmopImport) -> None:
    assert "3" not in example.data["patient"]["patient_id"].to_pylist()
    assert "persons excluded, no primary cancer diagnosis: 1" in example.notes
    assert example.rejected == {"condition_occurrence: no primary cancer condition": 1}


def test_unknown_concept_is_left_null_and_counted(example: OmopImport) -> None:
    prostate = example.data["tumour"].to_pylist()[1]
    assert (prostate["patient_id"], prostate["t_category"]) == ("2", None)
    assert (
        example.unmapped[
            "measurement Cancer Modifier 'c-7th_AJCC/UICC-T5' (AJCC/UICC 7th clinical T5 Category)"
        ]
        == 1
    )


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
    assert (got.notes, got.unmapped, got.rows_read) == (NOTES, example.unmapped, 5)


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


def test_missing_table_in_a_database_is_named(tmp_path: Path) -> None:
    url = _to_sql(f"sqlite:///{tmp_path / 'cdm.db'}", _without(tmp_path, "death"))
    with pytest.raises(SourceError, match=r"^sqlite:///.*: the OMOP table 'death' is missing$"):
        import_omop(url)


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


def test_a_missing_sqlite_database_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(SourceError, match="no such SQLite database file"):
        import_omop(f"sqlite:///{missing}")
    assert not missing.exists()
