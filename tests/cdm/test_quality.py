"""The data quality report: hand-counted on a small dataset, suppressed, no value leaks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oncofed.cdm.fields import BY_TABLE, KEY
from oncofed.cdm.quality import OTHER, profile
from oncofed.cdm.validate import validate
from oncofed.wire.profile import DataProfile, FieldProfile
from tests.cdm.support import Rows, build, patient_rows

THRESHOLD = 5


def _rows() -> Rows:
    """12 patients: grades 3 x G1 and 9 x G2, laterality missing twice, one rare histology,
    a canary tumour size, two biomarker units."""
    rows = patient_rows(12)
    for i, tumour in enumerate(rows["tumour"]):
        tumour["grade"] = "G1" if i < 3 else "G2"
        tumour["laterality"] = None if i in (4, 5) else "left"
    rows["tumour"][7]["histology"] = "8520/3"
    rows["tumour"][8]["tumour_size_mm"] = 123.456
    for marker in rows["biomarker"][:6]:
        marker["unit"] = "%"
    return rows


def _profile(rows: Rows, **options: Any) -> DataProfile:
    settings: dict[str, Any] = {"rows_read": 14, "rejected": {"tumour.grade: odd": 2}}
    settings.update(options)
    return profile(
        validate(build(rows)).data,
        dataset="demo",
        source_format="csv",
        threshold=THRESHOLD,
        **settings,
    )


def _field(report: DataProfile, table: str, name: str) -> FieldProfile:
    return next(f for f in report.fields if (f.table, f.field) == (table, name))


def test_the_profile_of_a_small_dataset_matches_a_hand_count() -> None:
    report = _profile(_rows())
    assert (report.dataset, report.source_format, report.threshold) == ("demo", "csv", 5)
    assert report.patients == 12
    assert report.tables == {
        "patient": 12, "tumour": 12, "biomarker": 24, "treatment": 12, "outcome": 12
    }  # fmt: skip
    # 12 patients + 2 rejected = 14 rows read: the 2 is small, so the 14 is suppressed.
    assert report.rejected == {"tumour.grade: odd": "<5"}
    assert report.rows_read == "suppressed"
    assert _field(report, "patient", "sex") == FieldProfile(
        table="patient", field="sex", present=12, missing=0,
        values={"female": 12, "male": 0, "other": 0, "unknown": 0},
    )  # fmt: skip
    # G1 = 3 is small, the next smallest, G2 = 9, is suppressed; the zeros are shown.
    assert _field(report, "tumour", "grade").values == {
        "G1": "<5", "G2": "suppressed", "G3": 0, "G4": 0, "GX": 0
    }  # fmt: skip
    assert _field(report, "tumour", "grade").present == 12
    # missing = 2 suppresses present = 10, which suppresses left = 10 (else left = present).
    laterality = _field(report, "tumour", "laterality")
    assert (laterality.present, laterality.missing) == ("suppressed", "<5")
    assert laterality.values == {
        "left": "suppressed", "right": 0, "bilateral": 0, "not_applicable": 0, "unknown": 0
    }  # fmt: skip
    # the rare histology is merged into OTHER (1, small), which suppresses 8500/3 = 11.
    assert _field(report, "tumour", "histology").values == {
        "8500/3": "suppressed", OTHER: "<5"
    }  # fmt: skip
    assert _field(report, "biomarker", "unit").values == {"%": 6, "fmol/mg": 18, OTHER: 0}
    assert _field(report, "tumour", "tumour_size_mm") == FieldProfile(
        table="tumour", field="tumour_size_mm", present=12, missing=0, values=None
    )
    assert _field(report, "outcome", "cause_of_death") == FieldProfile(
        table="outcome", field="cause_of_death", present=0, missing=12,
        values={"cancer": 0, "other": 0, "unknown": 0},
    )  # fmt: skip


def test_every_field_but_the_id_is_profiled_in_catalogue_order() -> None:
    report = _profile(_rows())
    expected = [(f.table, f.name) for fields in BY_TABLE.values() for f in fields]
    assert [(f.table, f.field) for f in report.fields] == [e for e in expected if e[1] != KEY]
    numeric = {f.field for f in report.fields if f.values is None}
    assert {"age_at_diagnosis", "tumour_size_mm", "os_days", "os_event"} <= numeric
    assert {"primary_site", "code", "grade", "unit"}.isdisjoint(numeric)


def test_no_value_and_no_rare_code_is_ever_published() -> None:
    text = _profile(_rows()).model_dump_json(exclude={"imported_at"})
    for canary in ("123.456", "8520/3", "20.5", "50.0", "730", "S00"):
        assert canary not in text
    published = json.loads(text)
    del published["threshold"]
    counts = list(_numbers(published))
    assert len(counts) > 200
    assert not [n for n in counts if isinstance(n, float) or 0 < n < THRESHOLD]


def _numbers(node: object) -> list[int | float]:
    if isinstance(node, dict):
        return [n for value in node.values() for n in _numbers(value)]
    if isinstance(node, list):
        return [n for value in node for n in _numbers(value)]
    return [node] if isinstance(node, int | float) else []


def test_rejections_without_a_published_sum_are_only_primary_suppressed() -> None:
    # Rows read of a multi-table source are no patient count: no sum links them.
    report = _profile(_rows(), rows_read=100, rejected={"a": 2, "b": 30})
    assert (report.rows_read, report.rejected) == (100, {"a": "<5", "b": 30})


def test_the_patient_count_is_hidden_only_as_a_last_resort() -> None:
    report = _profile(_rows(), rows_read=14, rejected={"a": 1, "b": 1})
    assert report.patients == 12
    # a + b = 14 - 12 with a, b >= 1 pins both to 1: rows read is suppressed, not patients.
    assert report.rejected == {"a": "<5", "b": "<5"}
    assert report.rows_read == "suppressed"


def test_small_counts_that_only_make_up_each_other_are_not_all_published_as_small() -> None:
    rows = patient_rows(4)
    for row, code in zip(rows["tumour"], ("G1", "G2", "G3", "G4"), strict=True):
        row["grade"] = code
    report = _profile(rows, rows_read=4, rejected={})
    assert report.patients == "<5"
    # four "<5" grades (each at least 1) adding up to a "<5" present would be 1 each: present
    # is suppressed, and so is every tumour count a sum makes equal to it (rows, each field).
    grade = _field(report, "tumour", "grade")
    assert grade.values == {"G1": "<5", "G2": "<5", "G3": "<5", "G4": "<5", "GX": 0}
    assert (grade.present, grade.missing) == ("suppressed", 0)
    assert report.tables["tumour"] == "suppressed"
    fields = [f for f in report.fields if f.table == "tumour"]
    assert {f.present for f in fields if f.missing == 0} == {"suppressed"}
    assert {f.missing for f in fields if f.present == 0} == {"suppressed"}
    assert _field(report, "patient", "sex").present == "<5"


def test_extension_names_are_listed() -> None:
    rows = patient_rows(2)
    data = build(rows, [{KEY: "S000", "menopause": 1.0}, {KEY: "S001", "menopause": 0.0}])
    report = profile(
        validate(data).data, dataset="d", source_format="omop", rows_read=2, rejected={},
        threshold=11,
    )  # fmt: skip
    assert report.extensions == ["ext.menopause"]
    assert report.patients == "<11"


def test_unvalidated_data_is_refused() -> None:
    rows = patient_rows(2)
    rows["outcome"].append(dict(rows["outcome"][0]))
    with pytest.raises(ValueError, match="one outcome row per patient"):
        profile(
            build(rows), dataset="d", source_format="csv", rows_read=2, rejected={},
            threshold=11,
        )  # fmt: skip
    rows = patient_rows(2)
    rows["tumour"][0]["grade"] = "G9"
    with pytest.raises(ValueError, match=r"tumour\.grade has values outside the model"):
        profile(
            build(rows), dataset="d", source_format="csv", rows_read=2, rejected={},
            threshold=11,
        )  # fmt: skip
