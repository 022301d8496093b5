"""Validation: every rule rejects the whole patient, once, under a reason naming the rule."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest

from oncofed.cdm.fields import KEY, TABLES, Field, TableName
from oncofed.cdm.tables import CdmData
from oncofed.cdm.validate import ConversionErrors, _field_rules, validate
from tests.cdm.support import build, patient_rows


def _ids(data: CdmData, table: TableName) -> list[str]:
    return data[table][KEY].to_pylist()


def test_valid_patients_are_kept_unchanged() -> None:
    data = build(patient_rows(3))
    checked = validate(data)
    assert checked.rejected == {}
    for table in TABLES:
        assert checked.data[table].equals(data[table])


@pytest.mark.parametrize(
    ("table", "changes", "reason"),
    [
        ("patient", {"sex": "F"}, "patient.sex: not an allowed value"),
        ("patient", {"age_at_diagnosis": 121}, "patient.age_at_diagnosis: outside 0-120"),
        ("patient", {"age_at_diagnosis": -1}, "patient.age_at_diagnosis: outside 0-120"),
        ("tumour", {"tumour_seq": None}, "tumour.tumour_seq: missing"),
        ("tumour", {"tumour_seq": 0}, "tumour.tumour_seq: outside 1-20"),
        ("tumour", {"primary_site": "C509"},
         "tumour.primary_site: not a valid ICD-O-3 topography code"),
        ("tumour", {"icd10": "E11.9"}, "tumour.icd10: not a valid ICD-10 code"),
        ("tumour", {"icd10": "C50.9\n"}, "tumour.icd10: not a valid ICD-10 code"),
        ("tumour", {"histology": "8500-3"},
         "tumour.histology: not a valid ICD-O-3 morphology code"),
        ("tumour", {"grade": "G5"}, "tumour.grade: not an allowed value"),
        ("tumour", {"grade": "g2"}, "tumour.grade: not an allowed value"),
        ("tumour", {"t_category": "T5"}, "tumour.t_category: not an allowed value"),
        ("tumour", {"tumour_size_mm": math.nan}, "tumour.tumour_size_mm: not a finite number"),
        ("tumour", {"tumour_size_mm": math.inf}, "tumour.tumour_size_mm: not a finite number"),
        ("tumour", {"tumour_size_mm": 2000.5}, "tumour.tumour_size_mm: outside 0-2000"),
        ("tumour", {"nodes_positive": 101}, "tumour.nodes_positive: outside 0-100"),
        ("tumour", {"ecog": 6}, "tumour.ecog: outside 0-5"),
        ("tumour", {"nodes_positive": 11}, "tumour.nodes_positive: more than nodes_examined"),
        ("biomarker", {"code": "1234-5"}, "biomarker.code: not a supported LOINC code"),
        ("biomarker", {"code": None}, "biomarker.code: missing"),
        ("biomarker", {"result": None}, "biomarker.result: missing"),
        ("biomarker", {"result": "high"}, "biomarker.result: not an allowed value"),
        ("biomarker", {"unit": "fmol mg"}, "biomarker.unit: not a valid UCUM code"),
        ("biomarker", {"day": -36_501}, "biomarker.day: outside -36500-36500"),
        ("treatment", {"type": "hormone"}, "treatment.type: not an allowed value"),
        ("treatment", {"agent_code": "tamoxifen 20mg"},
         "treatment.agent_code: not a valid RxNorm, ATC, SNOMED CT code"),
        ("treatment", {"intent": "cure"}, "treatment.intent: not an allowed value"),
        ("treatment", {"end_day": -1}, "treatment.end_day: before start_day"),
        ("outcome", {"time_origin": None}, "outcome.time_origin: missing"),
        ("outcome", {"os_days": -1}, "outcome.os_days: outside 0-36500"),
        ("outcome", {"os_event": 2}, "outcome.os_event: outside 0-1"),
        ("outcome", {"rfs_days": None}, "outcome.rfs_event: set without rfs_days"),
        ("outcome", {"os_days": None}, "outcome.os_event: set without os_days"),
        ("outcome", {"os_event": 1}, "outcome.os_event: 1 but vital_status not dead"),
        ("outcome", {"vital_status": "dead"}, "outcome.vital_status: dead but os_event 0"),
        ("outcome", {"cause_of_death": "cancer"},
         "outcome.cause_of_death: set but vital_status not dead"),
        ("outcome", {"rfs_days": 1001}, "outcome.rfs_days: after last_followup_day"),
        ("outcome", {"dmfs_days": 1001}, "outcome.dmfs_days: after last_followup_day"),
        ("outcome", {"os_days": 1001}, "outcome.os_days: after last_followup_day"),
        ("outcome", {"vital_status": "dead", "os_event": 1, "os_days": 900, "rfs_days": 950},
         "outcome.rfs_days: after os_days"),
    ],
)  # fmt: skip
def test_each_rule_rejects_the_whole_patient(
    table: TableName, changes: dict[str, Any], reason: str
) -> None:
    rows = patient_rows(3)
    rows[table][2 if table == "biomarker" else 1].update(changes)  # patient S001
    checked = validate(build(rows))
    assert checked.rejected == {reason: 1}
    for name in TABLES:
        assert "S001" not in _ids(checked.data, name)
        assert set(_ids(checked.data, name)) == {"S000", "S002"}


def test_a_death_after_the_last_follow_up_is_consistent() -> None:
    rows = patient_rows(1)
    rows["outcome"][0].update(
        vital_status="dead", os_event=1, os_days=1200, cause_of_death="cancer", dmfs_days=1200
    )
    assert validate(build(rows)).rejected == {}


def test_a_patient_with_two_problems_is_counted_once_under_the_first() -> None:
    rows = patient_rows(4)
    rows["tumour"][1]["grade"] = "G9"
    rows["outcome"][1]["rfs_days"] = 5000
    rows["biomarker"][3]["result"] = None
    rows["outcome"][2]["rfs_days"] = 5000
    checked = validate(build(rows))
    assert checked.rejected == {
        "tumour.grade: not an allowed value": 1,
        "outcome.rfs_days: after last_followup_day": 1,
    }
    assert _ids(checked.data, "patient") == ["S000", "S003"]
    assert checked.reasons == {  # for the site admin's list: every reason, in rule order
        "S001": (  # biomarker row 3 is S001's second test
            "tumour.grade: not an allowed value",
            "biomarker.result: missing",
            "outcome.rfs_days: after last_followup_day",
        ),
        "S002": ("outcome.rfs_days: after last_followup_day",),
    }


def test_rows_without_a_patient_id_are_listed_by_table_and_row() -> None:
    rows = patient_rows(2)
    rows["treatment"][1]["patient_id"] = None
    checked = validate(build(rows))
    assert checked.unlinked == [("treatment row 2", "treatment.patient_id: missing")]
    assert checked.reasons == {}


@pytest.mark.parametrize(
    ("entry", "reason"),
    [(1001, "outcome.randomisation_day: after last_followup_day"), (1000, None), (-20, None)],
)
def test_study_entry_comes_before_the_end_of_follow_up(entry: int, reason: str | None) -> None:
    rows = patient_rows(1)
    rows["outcome"][0]["randomisation_day"] = entry
    assert validate(build(rows)).rejected == ({reason: 1} if reason else {})


def test_kept_rows_are_never_altered() -> None:
    rows = patient_rows(3)
    rows["patient"][0]["age_at_diagnosis"] = 130
    checked = validate(build(rows))
    expected = patient_rows(3)
    for table in TABLES:
        kept = [r for r in expected[table] if r[KEY] != "S000"]
        assert checked.data[table].equals(build({table: kept})[table])


@pytest.mark.parametrize(
    ("edit", "reason", "kept"),
    [
        (lambda r: r["patient"].append(dict(r["patient"][0])),
         "patient.patient_id: more than one row", ["S001", "S002"]),
        (lambda r: r["outcome"].append(dict(r["outcome"][1])),
         "outcome.patient_id: more than one row", ["S000", "S002"]),
        (lambda r: r["outcome"].pop(2), "outcome.patient_id: no row", ["S000", "S001"]),
        (lambda r: r["tumour"].append(dict(r["tumour"][0])),
         "tumour.tumour_seq: repeated for the patient", ["S001", "S002"]),
        (lambda r: r["patient"].pop(0), "tumour.patient_id: no patient row", ["S001", "S002"]),
        (lambda r: r["biomarker"].append(dict(r["biomarker"][0], patient_id="X1")),
         "biomarker.patient_id: no patient row", ["S000", "S001", "S002"]),
        (lambda r: r["treatment"].append(dict(r["treatment"][0], patient_id=None)),
         "treatment.patient_id: missing", ["S000", "S001", "S002"]),
        (lambda r: r["treatment"].append(dict(r["treatment"][0], patient_id=" ")),
         "treatment.patient_id: missing", ["S000", "S001", "S002"]),
    ],
)  # fmt: skip
def test_rows_must_link_to_exactly_one_patient(edit: Any, reason: str, kept: list[str]) -> None:
    rows = patient_rows(3)
    edit(rows)
    checked = validate(build(rows))
    assert checked.rejected == {reason: 1}
    for table in TABLES:
        assert sorted(set(_ids(checked.data, table))) == kept


def test_a_second_tumour_needs_its_own_sequence_number() -> None:
    rows = patient_rows(1)
    rows["tumour"].append(dict(rows["tumour"][0], tumour_seq=2, primary_site="C18.7"))
    checked = validate(build(rows))
    assert checked.rejected == {}
    assert checked.data["tumour"].num_rows == 2


def test_extensions_are_filtered_with_their_patients() -> None:
    rows = patient_rows(3)
    rows["tumour"][0]["grade"] = "G7"
    extensions = [
        {KEY: "S000", "menopause": 1.0},
        {KEY: "S001", "menopause": 0.0},
        {KEY: "S002", "menopause": 1.0},
        {KEY: "S002", "menopause": 0.0},
        {KEY: "Z9", "menopause": 1.0},
    ]
    checked = validate(build(rows, extensions))
    assert checked.rejected == {
        "extensions.patient_id: no patient row": 1,
        "extensions.patient_id: more than one row": 1,
        "tumour.grade: not an allowed value": 1,
    }
    assert checked.data.extensions is not None
    assert checked.data.extensions.to_pylist() == [{KEY: "S001", "menopause": 0.0}]


def test_conversion_errors_reject_their_patients_first() -> None:
    rows = patient_rows(3)
    rows["tumour"][0]["grade"] = "G7"
    errors: ConversionErrors = {
        "tumour": {"tumour.tumour_size_mm: not a number": pa.array([True, True, False])}
    }
    checked = validate(build(rows), errors)
    assert checked.rejected == {"tumour.tumour_size_mm: not a number": 2}
    assert _ids(checked.data, "patient") == ["S002"]


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        ({"tumour": {"r": pa.array([True])}}, "one boolean per row of tumour"),
        ({"tumour": {"r": pa.array([1, 0, 0])}}, "one boolean per row of tumour"),
        ({"tumours": {"r": pa.array([True])}}, "'tumours', which is not a table"),
    ],
)
def test_conversion_errors_must_align_with_a_table(errors: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate(build(patient_rows(3)), errors)


def test_rejections_are_counted_per_patient_and_reason() -> None:
    rows = patient_rows(20)
    for i in range(0, 20, 2):
        rows["patient"][i]["sex"] = "X"
    for i in (1, 3, 5):
        rows["biomarker"][2 * i]["code"] = "0000-0"
        rows["biomarker"][2 * i + 1]["code"] = "0000-0"
    checked = validate(build(rows))
    assert checked.rejected == {
        "patient.sex: not an allowed value": 10,
        "biomarker.code: not a supported LOINC code": 3,
    }
    assert checked.data["patient"].num_rows == 7
    assert checked.data["biomarker"].num_rows == 14


def test_an_empty_extract_is_valid() -> None:
    checked = validate(CdmData())
    assert checked.rejected == {}
    assert checked.data.num_rows() == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize(
    ("low", "high", "rule", "broken"),
    [
        (0, None, "below 0", [True, False, False]),
        (None, 5, "above 5", [False, False, True]),
        (0, 5, "outside 0-5", [True, False, True]),
    ],
)
def test_a_range_may_be_open_on_one_side(
    low: float | None, high: float | None, rule: str, broken: list[bool]
) -> None:
    f = Field("x", "tumour", "number", "A test field.", "test", minimum=low, maximum=high)
    rules = dict(_field_rules(f, pa.array([-1.0, 2.0, 6.0])))
    assert list(rules) == ["not a finite number", rule]
    assert rules[rule].tolist() == broken
