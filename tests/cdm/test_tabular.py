"""The CSV/Parquet importer: the example fixture row by row, the GBSG2 demo mappings on the real
cohort, invalid cells flagged with a reason, and clear errors for bad sources."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from lifelines.datasets import load_gbsg2

from oncofed.cdm.errors import IdentifierRefused, MappingError, SourceError
from oncofed.cdm.importers.tabular import TabularImport, import_tabular, read_source
from oncofed.cdm.mapping import load_mapping
from oncofed.demo.sources.west import west_table

EXAMPLES = resources.files("oncofed.cdm") / "examples" / "csv"
FIXTURE = Path(str(EXAMPLES / "patients.csv"))
FIXTURE_MAPPING = Path(str(EXAMPLES / "mapping.yaml"))
DEMO = resources.files("oncofed.demo") / "mappings"
NORTH, WEST = Path(str(DEMO / "gbsg2.yaml")), Path(str(DEMO / "gbsg2_west.yaml"))
ER, PR, HER2 = "85337-4", "85339-0", "48676-1"


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows without their null cells."""
    return [{k: v for k, v in row.items() if v is not None} for row in table.to_pylist()]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def gbsg2() -> pd.DataFrame:
    return load_gbsg2()


@pytest.fixture(scope="module")
def north(gbsg2: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> TabularImport:
    path = tmp_path_factory.mktemp("north") / "north.csv"
    gbsg2.to_csv(path, index=False)
    return import_tabular(path, NORTH)


def test_fixture_round_trip_gives_the_expected_rows() -> None:
    result = import_tabular(FIXTURE, FIXTURE_MAPPING)
    assert (result.rows_read, result.ignored_columns, result.errors) == (4, ["study_arm"], {})
    data = result.data
    assert rows(data["patient"]) == [
        {"patient_id": "1", "sex": "female", "age_at_diagnosis": 64},
        {"patient_id": "2", "sex": "female", "age_at_diagnosis": 58},  # born 29 Feb, dx 28 Feb
        {"patient_id": "3", "sex": "female", "age_at_diagnosis": 72},
        {"patient_id": "4", "sex": "female", "age_at_diagnosis": 50},  # on the birthday
    ]
    breast = {"tumour_seq": 1, "primary_site": "C50.9", "icd10": "C50.9"}
    assert rows(data["tumour"]) == [
        {"patient_id": "1", **breast, "laterality": "left", "grade": "G2", "tumour_size_mm": 21.0},
        {"patient_id": "2", **breast, "laterality": "right", "grade": "G3", "tumour_size_mm": 35.0},
        {"patient_id": "3", **breast, "laterality": "left", "grade": "G1", "tumour_size_mm": 8.0},
        {"patient_id": "4", **breast, "laterality": "right", "grade": "G2"},
    ]
    er = {"code": ER, "unit": "fmol/mg", "day": 0}
    assert rows(data["biomarker"]) == [
        {"patient_id": "1", **er, "result": "positive", "value": 66.0},
        {"patient_id": "2", **er, "result": "negative", "value": 5.0},
        {"patient_id": "3", **er, "result": "positive", "value": 120.0},
        {"patient_id": "1", "code": HER2, "result": "negative", "day": 0},
        {"patient_id": "2", "code": HER2, "result": "equivocal", "day": 0},
        {"patient_id": "3", "code": HER2, "result": "positive", "day": 0},
    ]
    assert rows(data["treatment"]) == [
        {"patient_id": "1", "type": "chemotherapy", "intent": "adjuvant"},
        {"patient_id": "2", "type": "chemotherapy", "intent": "adjuvant"},
        {"patient_id": "2", "type": "radiotherapy", "intent": "adjuvant"},
        {"patient_id": "3", "type": "radiotherapy", "intent": "adjuvant"},
    ]

    def outcome(pid: str, status: str, last: int, death: int, rfs: int, event: int) -> dict:
        return {
            "patient_id": pid, "time_origin": "diagnosis", "vital_status": status,
            "last_followup_day": last, "os_days": last, "os_event": death,
            "rfs_days": rfs, "rfs_event": event,
        }  # fmt: skip

    assert rows(data["outcome"]) == [
        outcome("1", "alive", 1983, 0, 1983, 0),
        outcome("2", "dead", 732, 1, 590, 1),
        outcome("3", "alive", 1826, 0, 1826, 0),
        outcome("4", "alive", 183, 0, 183, 0),
    ]
    assert data.extensions is not None
    assert data.extensions.to_pylist() == [
        {"patient_id": "1", "smoking": "never", "ki67_percent": 15.0},
        {"patient_id": "2", "smoking": "current", "ki67_percent": 40.0},
        {"patient_id": "3", "smoking": "former", "ki67_percent": None},
        {"patient_id": "4", "smoking": "never", "ki67_percent": 22.5},
    ]


def test_a_loaded_mapping_and_parquet_with_date_types_give_the_same_rows(tmp_path: Path) -> None:
    table = read_source(FIXTURE)
    for name in ("birth_date", "diagnosis_date", "last_contact", "rfs_date"):
        parsed = pc.strptime(table[name], format="%d.%m.%Y", unit="s")
        table = table.set_column(table.schema.get_field_index(name), name, parsed)
    table = table.set_column(1, "diagnosis_date", table["diagnosis_date"].cast(pa.date32()))
    pq.write_table(table, tmp_path / "patients.parquet")
    typed = import_tabular(tmp_path / "patients.parquet", load_mapping(FIXTURE_MAPPING))
    expected = import_tabular(FIXTURE, FIXTURE_MAPPING)
    assert typed.data.tables == expected.data.tables
    assert typed.data.extensions == expected.data.extensions


def test_gbsg2_mapping_imports_the_real_cohort(north: TabularImport, gbsg2: pd.DataFrame) -> None:
    assert (north.rows_read, north.ignored_columns, north.errors) == (686, [], {})
    data = north.data
    assert data.num_rows() == {
        "patient": 686, "tumour": 686, "biomarker": 2 * 686, "treatment": 246, "outcome": 686,
    }  # fmt: skip
    assert int((gbsg2["horTh"] == "yes").sum()) == 246
    grades = data["tumour"]["grade"].value_counts().to_pylist()
    assert {g["values"]: g["counts"] for g in grades} == {"G1": 81, "G2": 444, "G3": 161}
    markers = data["biomarker"].group_by(["code", "result"]).aggregate([("value", "count")])
    assert sorted(markers.to_pylist(), key=lambda r: (r["code"], r["result"])) == [
        {"code": ER, "result": "negative", "value_count": int((gbsg2["estrec"] < 10).sum())},
        {"code": ER, "result": "positive", "value_count": int((gbsg2["estrec"] >= 10).sum())},
        {"code": PR, "result": "negative", "value_count": int((gbsg2["progrec"] < 10).sum())},
        {"code": PR, "result": "positive", "value_count": int((gbsg2["progrec"] >= 10).sum())},
    ]
    assert data["treatment"]["patient_id"].to_pylist() == [
        str(i + 1) for i in gbsg2.index[gbsg2["horTh"] == "yes"]
    ]


def test_first_gbsg2_patient_rows(north: TabularImport) -> None:
    # horTh=no, age=70, menostat=Post, tsize=21, tgrade=II, pnodes=3, progrec=48, estrec=66,
    # time=1814, cens=1
    data = north.data

    def first(table: pa.Table) -> list[dict[str, Any]]:
        return rows(table.filter(pc.equal(table["patient_id"], "1")))

    assert first(data["patient"]) == [{"patient_id": "1", "sex": "female", "age_at_diagnosis": 70}]
    assert first(data["tumour"]) == [
        {
            "patient_id": "1", "tumour_seq": 1, "primary_site": "C50.9", "icd10": "C50.9",
            "grade": "G2", "tumour_size_mm": 21.0, "nodes_positive": 3,
        }
    ]  # fmt: skip
    er = {"patient_id": "1", "result": "positive", "unit": "fmol/mg", "day": 0}
    assert first(data["biomarker"]) == [
        {**er, "code": ER, "value": 66.0},
        {**er, "code": PR, "value": 48.0},
    ]
    assert first(data["treatment"]) == []
    assert first(data["outcome"]) == [
        {
            "patient_id": "1", "time_origin": "diagnosis", "vital_status": "alive",
            "last_followup_day": 1814, "os_days": 1814, "os_event": 0, "rfs_days": 1814,
            "rfs_event": 1,
        }
    ]  # fmt: skip
    assert data.extensions is not None
    assert data.extensions.slice(0, 1).to_pylist() == [
        {"patient_id": "1", "menopausal_status": "post"}
    ]
    second = data["treatment"].slice(0, 1).to_pylist()
    assert second == [
        {
            "patient_id": "2", "type": "endocrine", "start_day": 0, "end_day": 730,
            "agent_code": "10324", "intent": "adjuvant",
        }
    ]  # fmt: skip


def test_west_parquet_gives_the_same_rows_as_the_north_csv(
    north: TabularImport, gbsg2: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "west.parquet"
    pq.write_table(west_table(gbsg2), path)
    west = import_tabular(path, WEST)
    assert (west.rows_read, west.ignored_columns, west.errors) == (686, [], {})
    for name, table in north.data.tables.items():
        assert west.data[name].equals(table), name
    assert west.data.extensions is not None and north.data.extensions is not None
    assert west.data.extensions.equals(north.data.extensions)


BAD = """\
age,size_cm,grade,months,er,horTh,menostat
61,2.5,II,12,66,yes,Pre
abc,1.5.2,IV,1e999,,maybe,peri
62.5,NA,III,NULL,N/A,no,
1e12, 3 ,I,-3,12,,Post
"""
BAD_MAPPING = """\
version: 1
fields:
  age_at_diagnosis: age
  tumour_size_mm: {column: size_cm, unit: cm}
  grade: {column: grade, values: {I: G1, II: G2, III: G3}}
  time_origin: {constant: diagnosis}
  os_days: {column: months, unit: months}
biomarkers:
  - {name: ER, value: er, unit: fmol/mg, positive_at_least: 10}
treatments:
  - {type: endocrine, column: horTh, received: [yes], not_received: [no]}
extensions:
  menopausal_status: {column: menostat, values: {Pre: pre, Post: post}}
  followup_months: {column: months}
"""


def test_invalid_cells_are_flagged_with_a_reason_and_never_altered(tmp_path: Path) -> None:
    result = import_tabular(write(tmp_path, "bad.csv", BAD), write(tmp_path, "m.yaml", BAD_MAPPING))
    assert list(result.errors) == ["patient"]
    masks = result.errors["patient"]
    assert {reason: mask.to_pylist() for reason, mask in masks.items()} == {
        "patient.age_at_diagnosis: not a number": [False, True, False, False],
        "patient.age_at_diagnosis: not a whole number": [False, False, True, False],
        "patient.age_at_diagnosis: out of range": [False, False, False, True],
        "tumour.tumour_size_mm: not a number": [False, True, False, False],
        "outcome.os_days: not a number": [False, True, False, False],
        "biomarker.ER.value: not a number": [False, False, True, False],
        "treatment.endocrine: neither received nor not_received": [False, True, False, False],
        "ext.menopausal_status: not in the value map": [False, True, False, False],
        "ext.followup_months: not a number": [False, True, False, False],
    }
    data = result.data
    assert data["patient"]["age_at_diagnosis"].to_pylist() == [61, None, None, None]
    tumour = data["tumour"].select(["tumour_size_mm", "grade"]).to_pylist()
    assert tumour == [
        {"tumour_size_mm": 25.0, "grade": "G2"},
        {"tumour_size_mm": None, "grade": "IV"},  # not in the map: kept for validation
        {"tumour_size_mm": None, "grade": "G3"},
        {"tumour_size_mm": 30.0, "grade": "G1"},
    ]
    assert data["outcome"]["os_days"].to_pylist() == [365, None, None, -91]  # 12 and -3 months
    assert rows(data["biomarker"].select(["patient_id", "value", "result"])) == [
        {"patient_id": "1", "value": 66.0, "result": "positive"},
        {"patient_id": "3"},
        {"patient_id": "4", "value": 12.0, "result": "positive"},
    ]
    assert data["treatment"]["patient_id"].to_pylist() == ["1"]
    assert data.extensions is not None
    assert data.extensions["menopausal_status"].to_pylist() == ["pre", "peri", None, "post"]
    assert data.extensions["followup_months"].to_pylist() == [12.0, None, None, -3.0]


def test_dates_that_do_not_parse_are_flagged(tmp_path: Path) -> None:
    text = (
        "dx,last\n2020-01-15,2021-01-15\n2020-02-30,2020-03-01\n2020-1-5,2020-1-6\n2020-01-01,x\n"
    )
    source = write(tmp_path, "d.csv", text)
    mapping = write(
        tmp_path,
        "m.yaml",
        "version: 1\nfields:\n  time_origin: {constant: diagnosis}\n"
        "  os_days: {date: last, origin: dx}\n",
    )
    result = import_tabular(source, mapping)
    assert result.data["outcome"]["os_days"].to_pylist() == [366, None, 1, None]
    assert {k: v.to_pylist() for k, v in result.errors["patient"].items()} == {
        "outcome.os_days: not a date": [False, True, False, True]  # 30 February, "x"
    }


def test_a_column_the_source_lacks_names_the_mapping_line_and_the_columns(tmp_path: Path) -> None:
    source = write(tmp_path, "s.csv", "age,tsize\n50,20\n")
    mapping = write(
        tmp_path,
        "m.yaml",
        "version: 1\nfields:\n  age_at_diagnosis: age\n  grade:\n    column: tgrade\n"
        "    values: {I: G1}\n",
    )
    with pytest.raises(MappingError) as caught:
        import_tabular(source, mapping)
    assert str(caught.value) == (
        f"{mapping}, line 5, fields.grade.column: column 'tgrade' is not in s.csv "
        "(its columns: age, tsize)"
    )


def test_the_guard_runs_on_every_mapped_column(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        "s.csv",
        "age,contact,dob,notes\n50,a@b.org,1970-01-02,ok\n60,c@d.org,1960-03-04,fine\n",
    )
    head = "version: 1\nfields:\n  age_at_diagnosis: age\n"
    cases = {
        "extensions:\n  contact: {column: contact, values: {x: y}}\n": "e-mail address",
        "extensions:\n  born: {column: dob, values: {x: y}}\n": "calendar date",
        "extensions:\n  notes: {column: notes}\n": "free text",
        "extensions:\n  birth_date: {column: age}\n": "calendar date",
    }
    for body, rule in cases.items():
        mapping = write(tmp_path, "m.yaml", head + body)
        with pytest.raises(IdentifierRefused) as caught:
            import_tabular(source, mapping)
        assert caught.value.rule == rule
    mapping = write(
        tmp_path,
        "m.yaml",
        head + "  karnofsky: {constant: 90}\n"
        "  time_origin: {constant: diagnosis}\n"
        "  os_days: {date: dob, origin: dob}\n",
    )
    result = import_tabular(source, mapping)  # a date source may hold dates
    assert result.ignored_columns == ["contact", "notes"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("s.txt", "a\n1\n", "not a .csv or .parquet file"),
        ("s.csv", "", "cannot be read: Empty CSV file"),
        ("s.csv", "age,tsize\n", "has no rows"),
        ("s.csv", "age,tsize,age\n1,2,3\n", "duplicated columns: age"),
        ("s.csv", "age,tsize\n1,2,3\n", "cannot be read: CSV parse error: Expected 2 columns"),
        ("s.parquet", "not parquet", "cannot be read: "),
    ],
)
def test_unreadable_sources_name_the_file(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    source = write(tmp_path, name, content)
    mapping = write(tmp_path, "m.yaml", "version: 1\nfields:\n  age_at_diagnosis: age\n")
    with pytest.raises(SourceError) as caught:
        import_tabular(source, mapping)
    assert str(caught.value).startswith(f"{source}: {message}")


def test_a_mapped_column_of_another_type_is_a_source_error(tmp_path: Path) -> None:
    pq.write_table(pa.table({"sizes": pa.array([[1, 2], [3]])}), tmp_path / "s.parquet")
    mapping = write(tmp_path, "m.yaml", "version: 1\nfields:\n  tumour_size_mm: sizes\n")
    with pytest.raises(SourceError) as caught:
        import_tabular(tmp_path / "s.parquet", mapping)
    assert str(caught.value) == (
        f"{tmp_path / 's.parquet'}: column 'sizes' is of type list<element: int64>; "
        "a mapped column holds numbers, text, booleans or dates"
    )


def test_value_maps_compare_text_as_written(tmp_path: Path) -> None:
    """Codes with leading zeros stay text in a CSV; booleans compare as true/false."""
    source = write(tmp_path, "s.csv", "stage,flag\n01,true\n1,false\n")
    mapping = write(
        tmp_path,
        "m.yaml",
        "version: 1\nfields:\n  stage_group: {column: stage, values: {'01': I, '1': II}}\n"
        "treatments:\n  - {type: surgery, column: flag, received: [true], not_received: [false]}\n",
    )
    result = import_tabular(source, mapping)
    assert result.data["tumour"]["stage_group"].to_pylist() == ["I", "II"]
    assert result.data["treatment"]["patient_id"].to_pylist() == ["1"]
    assert result.errors == {}


def test_birth_date_gives_whole_years_at_diagnosis(tmp_path: Path) -> None:
    table = pa.table(
        {
            "born": pa.array([dt.date(1960, 2, 29), dt.date(1960, 2, 29), dt.date(1990, 6, 1)]),
            "dx": pa.array([dt.date(2019, 2, 28), dt.date(2019, 3, 1), dt.date(1990, 5, 31)]),
        }
    )
    pq.write_table(table, tmp_path / "s.parquet")
    mapping = write(
        tmp_path,
        "m.yaml",
        "version: 1\nfields:\n  age_at_diagnosis: {date: born, origin: dx, unit: years}\n",
    )
    result = import_tabular(tmp_path / "s.parquet", mapping)
    assert result.data["patient"]["age_at_diagnosis"].to_pylist() == [58, 59, -1]
