"""Cohort filters and job variables compiled over a site's model tables, against hand counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from oncofed.cdm import frame as frames
from oncofed.cdm.frame import (
    Columns,
    check_time_origin,
    cohort_mask,
    job_rows,
    job_table,
    patient_frame,
)
from oncofed.cdm.tables import CdmData
from oncofed.learning.data import DataError
from oncofed.wire.spec import CohortFilter, JobSpec

# Eight patients, p1..p8. p2 has two primaries (the first, C50.9, is the index tumour).
PATIENT = {
    "patient_id": [f"p{i}" for i in range(1, 9)],
    "sex": ["female"] * 6 + ["male", "female"],
    "age_at_diagnosis": [34, 45, 52, 61, 67, 72, 58, 90],
}
TUMOUR = {
    "patient_id": ["p1", "p2", "p2", "p3", "p4", "p5", "p6", "p7", "p8"],
    "tumour_seq": [1, 2, 1, 1, 1, 1, 1, 1, 1],
    "primary_site": ["C50.9", "C18.7", "C50.4", "C50.9", "C50.1", "C34.1", "C50.9", "C61.9", None],
    "histology": ["8500/3", "8140/3", "8520/3", "8500/3", "8500/2", "8140/3", None, "8140/3", None],
    "grade": ["G1", "G3", "G2", "G3", "G2", "G3", "GX", "G2", None],
    "stage_group": ["I", "IV", "IIA", "IIIA", "0", "IIB", None, "II", None],
    "tumour_size_mm": [12.0, 80.0, 25.0, 55.0, 5.0, 40.0, None, None, 30.0],
}
BIOMARKER = {  # p1 was tested for ER twice: the earliest test (day -3) counts
    "patient_id": ["p1", "p1", "p2", "p3", "p4", "p1", "p3"],
    "code": ["85337-4", "85337-4", "85337-4", "85337-4", "85337-4", "48676-1", "48676-1"],
    "result": ["negative", "positive", "positive", "negative", "unknown", "negative", "positive"],
    "value": [3.0, 50.0, 120.0, 1.0, None, None, None],
    "day": [5, -3, 0, 0, 0, 0, 0],
}
TREATMENT = {
    "patient_id": ["p1", "p1", "p3", "p4", "p6"],
    "type": ["surgery", "endocrine", "chemotherapy", "endocrine", "surgery"],
    "start_day": [0, 30, 10, 20, 0],
}
OUTCOME = {
    "patient_id": [f"p{i}" for i in range(1, 9)],
    "time_origin": ["diagnosis"] * 7 + ["surgery"],
    "rfs_days": [1000, 200, 800, 1500, 90, 400, 700, 300],
    "rfs_event": [0, 1, 1, 0, 0, 1, 0, 1],
}


def data(extensions: pa.Table | None = None) -> CdmData:
    tables: Any = {
        "patient": pa.table(PATIENT),
        "tumour": pa.table(TUMOUR),
        "biomarker": pa.table(BIOMARKER),
        "treatment": pa.table(TREATMENT),
        "outcome": pa.table(OUTCOME),
    }
    return CdmData(tables, extensions)


def selected(cohort: dict[str, Any]) -> list[str]:
    filt = CohortFilter.model_validate(cohort)
    cdm = data()
    frame = patient_frame(cdm, filt.variables)
    keep = cohort_mask(frame, filt, cdm["patient"].num_rows)
    return [pid for pid, k in zip(PATIENT["patient_id"], keep, strict=True) if k]


@pytest.mark.parametrize(
    ("cohort", "expected"),
    [
        ({}, ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"]),
        ({"primary_site": "C50"}, ["p1", "p2", "p3", "p4", "p6"]),  # p2 by its first primary
        ({"primary_site": ["C50.9", "C61"]}, ["p1", "p3", "p6", "p7"]),
        ({"histology": "8500/3"}, ["p1", "p3"]),
        ({"histology": "8500"}, ["p1", "p3", "p4"]),  # any behaviour
        ({"grade": ["G2", "G3"]}, ["p2", "p3", "p4", "p5", "p7"]),
        ({"stage_group": ["IIA", "IIB"]}, ["p2", "p5"]),
        ({"sex": "male"}, ["p7"]),
        ({"age": {"min": 50, "max": 67}}, ["p3", "p4", "p5", "p7"]),  # inclusive bounds
        ({"age": {"min": 90}}, ["p8"]),
        ({"biomarkers": {"ER": "positive"}}, ["p1", "p2"]),  # p1: earliest ER test
        ({"biomarkers": {"ER": ["negative", "unknown"]}}, ["p3", "p4"]),
        ({"biomarkers": {"ER": "negative", "HER2": "positive"}}, ["p3"]),
        ({"treatments": ["endocrine"]}, ["p1", "p4"]),
        ({"treatments": ["surgery", "endocrine"]}, ["p1"]),
        ({"without_treatments": ["surgery", "chemotherapy"]}, ["p2", "p4", "p5", "p7", "p8"]),
        ({"time_origin": "surgery"}, ["p8"]),
        ({"where": [{"field": "tumour_size_mm", "min": 25, "max": 55}]}, ["p2", "p3", "p5", "p8"]),
        ({"where": [{"field": "biomarker.ER.value", "max": 10}]}, ["p3"]),
        ({"where": [{"field": "rfs_event", "min": 1}]}, ["p2", "p3", "p6", "p8"]),
        (
            {"primary_site": "C50", "grade": ["G2", "G3"], "treatments": ["endocrine"]},
            ["p4"],
        ),
    ],
)
def test_cohort_filter_selects_hand_counted_patients(
    cohort: dict[str, Any], expected: list[str]
) -> None:
    assert selected(cohort) == expected


def test_frame_takes_index_tumour_earliest_test_and_treatment_flags() -> None:
    frame = patient_frame(
        data(), ["grade", "biomarker.ER", "biomarker.ER.value", "treatment.endocrine"]
    )
    assert frame["grade"].to_pylist() == ["G1", "G2", "G3", "G2", "G3", "GX", "G2", None]
    assert frame["biomarker.ER"].to_pylist()[:5] == [
        "positive", "positive", "negative", "unknown", None,
    ]  # fmt: skip
    assert frame["biomarker.ER.value"].to_pylist()[:3] == [50.0, 120.0, 1.0]
    assert frame["treatment.endocrine"].to_pylist() == [1, 0, 0, 1, 0, 0, 0, 0]
    assert "patient_id" not in frame


def _spec(**changes: Any) -> JobSpec:
    base: dict[str, Any] = {
        "name": "t",
        "dataset": "d",
        "features": ["age_at_diagnosis", {"name": "grade", "levels": ["G1", "G2", "G3"]}],
        "outcome": {"type": "survival", "time": "rfs_days", "event": "rfs_event"},
        "model": {"type": "cox"},
        "cohort": {"time_origin": "diagnosis"},
    }
    return JobSpec.model_validate({**base, **changes})


def test_job_table_has_the_job_variables_for_the_cohort_only() -> None:
    table = job_table(_spec(cohort={"primary_site": "C50", "time_origin": "diagnosis"}), data())
    assert set(table) == {
        "age_at_diagnosis", "grade", "rfs_days", "rfs_event", "primary_site", "time_origin",
    }  # fmt: skip
    np.testing.assert_array_equal(table["age_at_diagnosis"], [34, 45, 52, 61, 72])
    assert table["grade"].tolist() == ["G1", "G2", "G3", "G2", "GX"]
    assert table["rfs_days"].dtype == np.float64


def test_a_cohort_mixing_time_origins_is_refused() -> None:
    spec = _spec(cohort={})
    with pytest.raises(DataError, match=r"mixes time origins \['diagnosis', 'surgery'\]"):
        check_time_origin(spec, job_table(spec, data()))
    chosen = _spec(cohort={"time_origin": "surgery"})
    check_time_origin(chosen, job_table(chosen, data()))  # one origin: fine


def test_extension_features_and_a_missing_extension() -> None:
    ext = pa.table({"patient_id": PATIENT["patient_id"], "menopause": ["pre"] * 4 + ["post"] * 4})
    spec = _spec(features=[{"name": "ext.menopause", "levels": ["pre", "post"]}])
    assert job_table(spec, data(ext))["ext.menopause"].tolist() == ["pre"] * 4 + ["post"] * 3
    with pytest.raises(DataError, match=r"no extension feature 'ext\.menopause'"):
        job_table(spec, data())


@pytest.mark.parametrize("order", [slice(None), slice(None, None, -1), slice(1, None)])
def test_extension_rows_are_matched_to_patients_in_any_order(order: slice) -> None:
    """An import writes its extensions in patient order (read without a lookup); rows in
    another order, or a patient without one, are matched by pseudonym all the same."""
    ids, sizes = PATIENT["patient_id"], [float(i) for i in range(1, 9)]
    ext = pa.table({"patient_id": ids[order], "size": sizes[order]})
    frame = patient_frame(data(ext), ["ext.size"])
    expected = [size if pid in ids[order] else None for pid, size in zip(ids, sizes, strict=True)]
    assert frame["ext.size"].to_pylist() == expected


def test_a_randomisation_origin_measures_times_from_study_entry() -> None:
    """p1 entered the study on day 100, p2 on day 250 (after its recurrence on day 200), p8's
    times are already from its own origin (surgery) with no entry day, the rest never entered.
    """
    outcome = {**OUTCOME, "randomisation_day": [100, 250, None, None, None, None, None, None]}
    outcome["last_followup_day"] = [1200, 900, 800, 1500, 90, 400, 700, 300]
    cdm = CdmData({**data().tables, "outcome": pa.table(outcome)})
    spec = _spec(cohort={"time_origin": "randomisation"})
    table = job_table(spec, cdm)
    assert table["time_origin"].tolist() == ["randomisation"] * 2
    np.testing.assert_array_equal(table["rfs_days"], [900, np.nan])  # p2: before entry
    np.testing.assert_array_equal(table["rfs_event"], [0, np.nan])
    assert "randomisation_day" not in table
    from_diagnosis = job_table(_spec(cohort={"time_origin": "diagnosis"}), cdm)
    np.testing.assert_array_equal(from_diagnosis["rfs_days"][:2], [1000, 200])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, NaN equal to NaN and None to None, and the same dtype."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.tolist() == b.tolist()
    return bool(np.array_equal(a, b, equal_nan=True))


def _kept_data() -> CdmData:
    outcome = {**OUTCOME, "randomisation_day": [100, 250, None, None, None, None, None, None]}
    ext = pa.table(
        {
            "patient_id": PATIENT["patient_id"][::-1],
            "menopause": ["pre"] * 4 + ["post"] * 4,
            "size": [float(i) for i in range(8)],
        }
    )
    return CdmData({**data().tables, "outcome": pa.table(outcome)}, ext)


def test_kept_columns_give_every_job_the_rows_its_tables_give() -> None:
    """An edge keeps a dataset's ``Columns`` (computed once, when it starts) for every job:
    cohorts, origins (times moved to study entry) and extensions read as categories or as
    numbers come out as they do from the tables themselves."""
    cdm = _kept_data()
    kept = Columns(cdm)
    kept.warm()
    specs = [
        _spec(cohort={"primary_site": "C50", "time_origin": "diagnosis"}),
        _spec(cohort={"time_origin": "randomisation"}),
        _spec(cohort={}, features=["biomarker.ER", "treatment.endocrine", "ext.size"]),
        _spec(features=[{"name": "ext.menopause", "levels": ["pre", "post"]}]),
        _spec(cohort={"time_origin": "diagnosis"}),  # again, after the randomisation one
    ]
    for spec in specs:
        fresh, reused = job_rows(spec, cdm), job_rows(spec, kept)
        assert list(reused.table) == list(fresh.table)
        assert all(_same(reused.table[n], fresh.table[n]) for n in fresh.table), spec.cohort
        assert reused.pseudonyms.equals(fresh.pseudonyms)


def test_kept_columns_are_computed_once_and_shared_read_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept = Columns(_kept_data())
    kept.warm()  # a string extension as categories, a numeric one as numbers
    computed: list[list[str]] = []

    def counted(cdm: CdmData, names: Any) -> frames.Frame:
        computed.append(sorted(names))
        return patient_frame(cdm, names)

    monkeypatch.setattr(frames, "patient_frame", counted)
    every = _spec(cohort={})  # all eight patients: the columns themselves
    first, second = job_rows(every, kept).table, job_rows(every, kept).table
    assert computed == []  # warmed: every patient field and extension
    assert first["grade"] is second["grade"]
    with pytest.raises(ValueError, match="read-only"):  # Arrow's copy, made read-only
        first["grade"][0] = "G1"
    job_rows(_spec(cohort={}, features=["biomarker.ER"]), kept)
    job_rows(_spec(cohort={}, features=["biomarker.ER"]), kept)
    assert computed == [["biomarker.ER"]]  # asked for first: computed then, once
