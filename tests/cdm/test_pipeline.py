"""The end of an import: validated, ages capped, random pseudonyms, a suppressed profile."""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pytest

from oncofed.cdm.fields import KEY, TABLES
from oncofed.cdm.pipeline import Imported, cap_ages, finish_import, pseudonymise, pseudonyms
from oncofed.cdm.tables import CdmData
from tests.cdm.support import Rows, build, patient_rows

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _rows() -> Rows:
    """15 patients, each with its own age and tumour size to check links; S003 is 95, S004 is
    rejected, S005 has a canary tumour size and S006 a rare histology."""
    rows = patient_rows(15)
    for i in range(15):
        rows["patient"][i]["age_at_diagnosis"] = 40 + i
        rows["tumour"][i]["tumour_size_mm"] = 10.0 + i
    rows["patient"][3]["age_at_diagnosis"] = 95
    rows["outcome"][4]["rfs_days"] = 2000
    rows["tumour"][5]["tumour_size_mm"] = 123.456
    rows["tumour"][6]["histology"] = "8983/3"
    return rows


def _import(rows: Rows, extensions: list[dict[str, object]] | None = None) -> Imported:
    return finish_import(
        build(rows, extensions), dataset="gbsg2-demo", source_format="csv", rows_read=15
    )


def test_an_import_keeps_the_valid_patients_and_profiles_them() -> None:
    imported = _import(_rows())
    assert imported.data.num_rows() == {
        "patient": 14, "tumour": 14, "biomarker": 28, "treatment": 14, "outcome": 14
    }  # fmt: skip
    report = imported.profile
    assert (report.dataset, report.source_format, report.threshold) == ("gbsg2-demo", "csv", 11)
    assert report.patients == 14
    # 14 + 1 rejected = 15 rows read: the 1 is small, so rows read is suppressed.
    assert report.rejected == {"outcome.rfs_days: after last_followup_day": "<11"}
    assert report.rows_read == "suppressed"


def test_pseudonyms_are_random_hex_and_never_the_source_keys() -> None:
    first, second = _import(_rows()), _import(_rows())
    ids = first.data["patient"][KEY].to_pylist()
    assert all(HEX32.match(i) for i in ids)
    assert len(set(ids)) == 14
    assert not set(ids) & {f"S{i:03d}" for i in range(15)}
    assert not set(ids) & set(second.data["patient"][KEY].to_pylist())


def _by_id(table: pa.Table, column: str) -> dict[str, Any]:
    return dict(zip(table[KEY].to_pylist(), table[column].to_pylist(), strict=True))


def test_pseudonyms_link_the_same_patient_in_every_table() -> None:
    extensions: list[dict[str, object]] = [
        {KEY: f"S{i:03d}", "menopause": float(i)} for i in range(15)
    ]
    data = _import(_rows(), extensions).data
    age = _by_id(data["patient"], "age_at_diagnosis")
    for table in TABLES:
        assert set(data[table][KEY].to_pylist()) == set(age)
    # patient i was 40 + i years old, with a tumour of 10 + i mm and menopause i
    size = _by_id(data["tumour"], "tumour_size_mm")
    assert data.extensions is not None
    menopause = _by_id(data.extensions, "menopause")
    assert set(menopause) == set(age)
    unchanged = [pid for pid, years in age.items() if years != 90 and size[pid] != 123.456]
    assert len(unchanged) == 12
    for pid in unchanged:
        assert (size[pid], menopause[pid]) == (age[pid] - 30, age[pid] - 40)
    assert data.extension_names == ["ext.menopause"]


def test_ages_above_89_are_stored_as_90() -> None:
    rows = patient_rows(5)
    for row, years in zip(rows["patient"], (89, 90, 95, 120, None), strict=True):
        row["age_at_diagnosis"] = years
    capped = cap_ages(build(rows))
    assert capped["patient"]["age_at_diagnosis"].to_pylist() == [89, 90, 90, 90, None]
    assert capped["patient"].schema == build(rows)["patient"].schema


def test_an_age_of_95_is_imported_as_90() -> None:
    ages = _import(_rows()).data["patient"]["age_at_diagnosis"].to_pylist()
    assert 95 not in ages
    assert ages.count(90) == 1


def test_no_value_code_or_source_key_reaches_the_profile() -> None:
    text = _import(_rows()).profile.model_dump_json(exclude={"imported_at"})
    for canary in ("123.456", "8983/3", "S00", "95", "10.0", "40"):
        assert canary not in text


def test_pseudonyms_are_fresh_and_distinct() -> None:
    ids = pseudonyms(1000)
    assert ids.type == pa.string()
    assert len(set(ids.to_pylist())) == 1000
    assert all(HEX32.match(i) for i in ids.to_pylist())
    assert len(pseudonyms(0)) == 0


def test_pseudonymise_refuses_unvalidated_data() -> None:
    rows = patient_rows(2)
    rows["tumour"][0][KEY] = "nobody"
    with pytest.raises(ValueError, match="exactly one patient row: validate first"):
        pseudonymise(build(rows))
    rows = patient_rows(2)
    rows["patient"].append(dict(rows["patient"][0]))
    with pytest.raises(ValueError, match="exactly one patient row: validate first"):
        pseudonymise(build(rows))


def test_an_empty_extract_imports_to_an_empty_dataset() -> None:
    imported = finish_import(CdmData(), dataset="empty", source_format="fhir", rows_read=0)
    assert imported.data.num_rows() == dict.fromkeys(TABLES, 0)
    assert (imported.profile.patients, imported.profile.rows_read) == (0, 0)


def test_stored_rows_are_in_pseudonym_order_not_the_sources() -> None:
    """Row positions could link a pseudonym back to the source file's row: the stored order is
    the (random) order of the pseudonyms in every table."""
    data = _import(_rows()).data
    for table in TABLES:
        ids = data[table][KEY].to_pylist()
        assert ids == sorted(ids)
    ages = data["patient"]["age_at_diagnosis"].to_pylist()
    assert ages != sorted(ages)  # the source's order (ages 40, 41, ...) is gone
