"""FHIR R4 mCODE as producers send it (issue 9): SNOMED CT body sites through the shipped
crosswalk, ResearchSubject study entry and arm, cancer treatment sent without mCODE profiles,
procedures and medications the importer does not classify as cancer treatment, endpoints only
where the records give evidence, and every reason of an excluded patient. Each fixture in
``tests/cdm/mcode/`` is a collection Bundle coded as the mCODE IG's examples code it (profiles
in ``meta``, SNOMED CT body sites with the laterality qualifier extension, CancerDiseaseStatus
LOINC 97509-4, ICD-10-CM diagnoses, RxNorm drugs); every expected day was counted by hand from
the dates in the fixture."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from oncofed.cdm.errors import RejectedPatient
from oncofed.cdm.fields import KEY, TableName
from oncofed.cdm.frame import job_table
from oncofed.cdm.importers.fhir import FhirImport, import_fhir
from oncofed.cdm.importers.fhir.codes import CLINICAL_DRUGS, DRUGS
from oncofed.cdm.importers.fhir.sites import CROSSWALK
from oncofed.cdm.validate import validate
from oncofed.wire.spec import JobSpec

FIXTURES = Path(__file__).parent / "mcode"
DIAGNOSIS = {"time_origin": "diagnosis"}
NO_RFS = "rfs: no disease status recorded"


def imported(name: str) -> FhirImport:
    return import_fhir(FIXTURES / f"{name}.json")


def present(result: FhirImport, table: TableName, *names: str) -> list[dict[str, Any]]:
    """The rows of ``table`` with their non-null values (of ``names`` only, if given)."""
    rows = result.data[table].to_pylist()
    return [
        {k: v for k, v in row.items() if v is not None and (not names or k in (KEY, *names))}
        for row in rows
    ]


# ICD-O-3 topography groups: C00-C80 without the numbers the WHO classification leaves out
GROUPS = [f"C{n:02d}" for n in (*range(0, 27), *range(30, 35), *range(37, 43), 44,
                                *range(47, 59), *range(60, 78), 80)]  # fmt: skip


def test_the_crosswalk_covers_every_topography_group_with_well_formed_codes() -> None:
    """Every group a body structure can name (C80, unknown primary site, is none) has a row;
    SNOMED CT ids are well formed (digits, a partition of a concept, Verhoeff check digit)
    and none has two topographies; a lateralised concept's label names its side."""
    with CROSSWALK.open(encoding="utf-8", newline="") as lines:
        rows = list(csv.DictReader(lines))
    assert list(rows[0]) == ["snomed", "topography", "laterality", "label"]
    assert len(GROUPS) == 70
    assert sorted({row["topography"][:3] for row in rows}) == [g for g in GROUPS if g != "C80"]
    snomed = [row["snomed"] for row in rows]
    assert len(snomed) == len(set(snomed)), "a SNOMED CT id with two topographies"
    for row in rows:
        assert re.fullmatch(r"[1-9]\d{5,17}", row["snomed"]), row
        assert row["snomed"][-3:-1] in ("00", "10"), row  # a concept id, short or extension
        assert verhoeff(row["snomed"]), row
        assert re.fullmatch(r"C\d{2}\.\d", row["topography"]), row
        assert row["laterality"] in ("", "left", "right"), row
        assert row["laterality"] in row["label"].lower(), row
    by_id = {row["snomed"]: row for row in rows}
    assert (by_id["80248007"]["topography"], by_id["80248007"]["laterality"]) == ("C50.9", "left")
    assert (by_id["73056007"]["topography"], by_id["73056007"]["laterality"]) == ("C50.9", "right")
    assert by_id["3572006"]["label"] == "Structure of body of vertebra"  # C41.2, not cervical
    assert (by_id["42400003"]["topography"], by_id["42400003"]["laterality"]) == ("C34.1", "right")


_D = [
    [int(d) for d in row]
    for row in ["0123456789", "1234067895", "2340178956", "3401289567", "4012395678",
                "5987604321", "6598710432", "7659821043", "8765932104", "9876543210"]
]  # fmt: skip
_P = [
    [int(d) for d in row]
    for row in ["0123456789", "1576283094", "5803796142", "8916043527", "9453126870",
                "4286573901", "2793806415", "7046913258"]
]  # fmt: skip
"""Verhoeff's dihedral group D5 multiplication and position permutation tables."""


def verhoeff(number: str) -> bool:
    """The Verhoeff check SNOMED CT ids end with (SNOMED CT Technical Implementation Guide)."""
    check = 0
    for position, digit in enumerate(reversed(number)):
        check = _D[check][_P[position % 8][int(digit)]]
    return check == 0


def test_verhoeff_check_catches_a_mistyped_id() -> None:
    assert verhoeff("80248007") and verhoeff("73056007")
    assert not verhoeff("80248008") and not verhoeff("73065007")


def test_snomed_body_sites_give_the_topography_and_the_side() -> None:
    """mCODE's own bodySite binding: the crosswalk gives the topography, a lateralised concept
    its side; an ICD-O-3 code beside it wins; a site outside the crosswalk or of another system
    leaves primary_site missing with a note; a laterality qualifier against the concept's own
    side is a conflict, as between two qualifiers."""
    result = imported("snomed-body-sites")
    assert present(result, "tumour") == [
        {KEY: "lung-left", "tumour_seq": 1, "primary_site": "C34.9", "icd10": "C34.92",
         "laterality": "left"},  # Lung structure + the left laterality qualifier
        {KEY: "breast-left", "tumour_seq": 1, "primary_site": "C50.9", "icd10": "C50.912",
         "laterality": "left"},  # Left breast structure: the side is the concept's own
        {KEY: "breast-uoq-right", "tumour_seq": 1, "primary_site": "C50.4", "icd10": "C50.411",
         "laterality": "right"},  # ICD-O-3 C50.4 kept, side from Right breast structure
        {KEY: "sigmoid", "tumour_seq": 1, "primary_site": "C18.7", "icd10": "C18.7"},
        {KEY: "aorta", "tumour_seq": 1, "icd10": "C49.9"},
        {KEY: "local-site", "tumour_seq": 1, "icd10": "C50.912", "laterality": "left"},
    ]  # fmt: skip
    assert [row["age_at_diagnosis"] for row in present(result, "patient")[:4]] == [63, 55, 50, 69]
    assert result.rejected == Counter({"tumour.laterality: conflicting values": 1})
    assert result.rejections == [
        RejectedPatient("side-conflict", "snomed-body-sites.json: entry 12 (Patient)",
                        ("tumour.laterality: conflicting values",))
    ]  # fmt: skip
    assert result.notes == Counter({
        "tumour.primary_site: body site with a SNOMED CT code outside the crosswalk "
        "(left missing)": 1,  # Aortic structure
        "tumour.primary_site: body site with no code read (left missing)": 1,  # a local code
        NO_RFS: 6,
    })  # fmt: skip


def test_research_subjects_give_study_entry_and_arm() -> None:
    """t1 entered on day 30 (actualArm B, assigned A), t2 on day 59 (status follow-up); t3 is
    a candidate, never entered; t4 is in two studies; t5's period.start is a month only."""
    result = imported("research-subjects")
    assert present(result, "patient", "trial_arm") == [
        {KEY: "t1", "trial_arm": "Arm B"}, {KEY: "t2", "trial_arm": "Arm A"}, {KEY: "t3"},
        {KEY: "t4"}, {KEY: "t5", "trial_arm": "Arm B"},
    ]  # fmt: skip
    assert present(result, "outcome") == [
        {KEY: "t1", **DIAGNOSIS, "randomisation_day": 30, "vital_status": "alive",
         "last_followup_day": 360, "os_days": 360, "os_event": 0, "rfs_days": 360,
         "rfs_event": 1},  # worsened on 2020-01-05, day 360
        {KEY: "t2", **DIAGNOSIS, "randomisation_day": 59, "vital_status": "dead",
         "last_followup_day": 546, "os_days": 546, "os_event": 1, "rfs_days": 546,
         "rfs_event": 1},  # died on 2020-06-30, day 546, no recurrence seen on day 334
        {KEY: "t3", **DIAGNOSIS, "vital_status": "alive", "last_followup_day": 0, "os_days": 0,
         "os_event": 0},
        {KEY: "t4", **DIAGNOSIS, "vital_status": "alive", "last_followup_day": 59, "os_days": 59,
         "os_event": 0},  # both entries (days 28 and 59) were days of follow-up
        {KEY: "t5", **DIAGNOSIS, "vital_status": "alive", "last_followup_day": 0, "os_days": 0,
         "os_event": 0},
    ]  # fmt: skip
    assert (result.rejected, result.rejections) == (Counter(), [])
    assert result.notes == Counter({
        "ResearchSubject: status candidate (not entered, not read)": 1,
        "patient.trial_arm, outcome.randomisation_day: subjects of several studies "
        "(left missing)": 1,
        "outcome.randomisation_day: partial period.start (left missing)": 1,
        NO_RFS: 3,
    })  # fmt: skip


def test_a_randomisation_origin_measures_the_trial_from_study_entry() -> None:
    """A job from randomisation keeps the two patients who entered, with times from entry:
    t1 360 - 30 = 330 (recurrence), t2 546 - 59 = 487 (death)."""
    spec = JobSpec.model_validate({
        "name": "trial", "dataset": "d", "features": ["age_at_diagnosis"],
        "outcome": {"type": "survival", "time": "rfs_days", "event": "rfs_event"},
        "model": {"type": "cox"}, "cohort": {"time_origin": "randomisation"},
    })  # fmt: skip
    table = job_table(spec, imported("research-subjects").data)
    np.testing.assert_array_equal(table["rfs_days"], [330, 487])
    np.testing.assert_array_equal(table["rfs_event"], [1, 1])
    np.testing.assert_array_equal(table["age_at_diagnosis"], [58, 60])


def test_procedures_and_medications_not_classified_as_cancer_treatment_are_kept() -> None:
    """Diagnosis 2018-03-16: the biopsy (SNOMED CT) on 2018-03-06 is day -10, metformin
    (RxNorm) from 2017-01-01 to 2018-12-31 days -439 to 290; a CPT-only colonoscopy, an undated
    echocardiography, ondansetron from "2018-04" and a SNOMED-coded drug are dropped and noted.
    Their days are no follow-up: the last is the surgery's, day 16."""
    result = imported("other-treatments")
    assert present(result, "treatment") == [
        {KEY: "o1", "type": "other_procedure", "start_day": -10, "end_day": -10,
         "agent_code": "723990008"},
        {KEY: "o1", "type": "surgery", "start_day": 16, "end_day": 16, "agent_code": "64368001"},
        {KEY: "o1", "type": "other_medication", "start_day": -439, "end_day": 290,
         "agent_code": "6809"},
    ]  # fmt: skip
    assert present(result, "outcome", "last_followup_day") == [{KEY: "o1", "last_followup_day": 16}]
    assert (result.rejected, result.rejections) == (Counter(), [])
    assert result.notes == Counter({
        "Procedure: other_procedure without a SNOMED CT code (dropped)": 1,
        "Procedure: other_procedure without a full start date (dropped)": 1,
        "MedicationRequest: other_medication without a full start date (dropped)": 1,
        "MedicationStatement: other_medication without an RxNorm code (dropped)": 1,
        NO_RFS: 1,
    })  # fmt: skip


def test_an_endpoint_without_evidence_is_missing() -> None:
    """Diagnosis 2015-01-01. RFS only with a disease status: e1 (dead on day 365) and e2
    (alive, last seen day 59) have none, so no RFS, where RFS used to copy OS; e3 is stable on
    day 181 (censored there), e4 stable on day 365 and dead on day 731 (event at death); e5
    died on an unknown day."""
    result = imported("endpoints")
    assert present(result, "outcome") == [
        {KEY: "e1", **DIAGNOSIS, "vital_status": "dead", "last_followup_day": 365,
         "os_days": 365, "os_event": 1},
        {KEY: "e2", **DIAGNOSIS, "vital_status": "alive", "last_followup_day": 59,
         "os_days": 59, "os_event": 0},
        {KEY: "e3", **DIAGNOSIS, "vital_status": "alive", "last_followup_day": 181,
         "os_days": 181, "os_event": 0, "rfs_days": 181, "rfs_event": 0},
        {KEY: "e4", **DIAGNOSIS, "vital_status": "dead", "last_followup_day": 731,
         "os_days": 731, "os_event": 1, "rfs_days": 731, "rfs_event": 1},
        {KEY: "e5", **DIAGNOSIS, "vital_status": "dead", "last_followup_day": 0, "os_event": 1},
    ]  # fmt: skip
    assert result.notes == Counter({NO_RFS: 3, "os: death without a date": 1})


def test_every_reason_of_an_excluded_patient_is_kept() -> None:
    """three-rules breaks three rules (a month-only marker date, an unknown grade code, a
    birth after diagnosis), in that order in its bundle: the published count has the first,
    its record all three. Counts sum to the patients excluded."""
    result = imported("every-reason")
    assert result.rows_read == 3
    assert result.rejected == Counter(
        {"biomarker.day: partial date": 1, "outcome.os_days: partial date": 1}
    )
    assert result.rejections == [
        RejectedPatient("three-rules", "every-reason.json: entry 0 (Patient)", (
            "biomarker.day: partial date",
            "tumour.grade: code not interpretable",
            "patient.age_at_diagnosis: birth after diagnosis",
        )),
        RejectedPatient("one-rule", "every-reason.json: entry 4 (Patient)",
                        ("outcome.os_days: partial date",)),
    ]  # fmt: skip
    assert sum(result.rejected.values()) == len(result.rejections)
    assert present(result, "patient", "sex") == [{KEY: "kept", "sex": "female"}]


def test_cancer_treatment_sent_without_mcode_profiles_is_typed() -> None:
    """As EHRs send it: a total mastectomy (SNOMED CT 172043006) with neither the mCODE surgical
    profile nor category, and drugs as RxNorm clinical drugs (docetaxel 1 ML 20 MG/ML
    injection, tamoxifen 20 MG oral tablet) without the cancer-related profiles. Diagnosis
    2018-03-16: surgery on day 25, docetaxel day 47, tamoxifen from day 77, each drug under its
    ingredient (docetaxel 72962, tamoxifen 10324)."""
    result = imported("ehr-treatments")
    assert present(result, "treatment") == [
        {KEY: "h1", "type": "surgery", "start_day": 25, "end_day": 25, "agent_code": "172043006"},
        {KEY: "h1", "type": "chemotherapy", "start_day": 47, "end_day": 47,
         "agent_code": "72962"},
        {KEY: "h1", "type": "endocrine", "start_day": 77, "agent_code": "10324"},
    ]  # fmt: skip
    assert present(result, "outcome", "last_followup_day") == [{KEY: "h1", "last_followup_day": 77}]


def test_an_other_treatment_the_model_cannot_hold_never_excludes_the_patient() -> None:
    """Aspirin (RxNorm 1191) with its end (2018-04-01) before its start (2018-05-01) and an
    appendectomy in 1900, day -43022 (outside -36500 to 36500), are dropped and noted by kind:
    the patient is kept, where validation used to reject the whole patient."""
    result = imported("ehr-treatments")
    assert (result.rows_read, result.rejected, result.rejections) == (1, Counter(), [])
    checked = validate(result.data)
    assert (checked.rejected, checked.data["patient"].num_rows) == ({}, 1)
    assert present(result, "patient", "age_at_diagnosis") == [{KEY: "h1", "age_at_diagnosis": 57}]
    assert result.notes == Counter({
        "MedicationStatement: other_medication with its end before its start (dropped)": 1,
        "Procedure: other_procedure with a day outside -36500 to 36500 (dropped)": 1,
        NO_RFS: 1,
    })  # fmt: skip


def test_clinical_drugs_name_ingredients_of_the_drug_map() -> None:
    """Each clinical drug of the shipped map names an ingredient the drug map types, and no id
    is both (a clinical drug is never read as an ingredient of another drug)."""
    assert set(CLINICAL_DRUGS.values()) <= set(DRUGS)
    assert not set(CLINICAL_DRUGS) & set(DRUGS)


def test_several_body_sites_of_one_tumour_never_exclude_the_patient() -> None:
    """Breast structure with its upper outer quadrant is C50.4, the more specific code of the
    group; two quadrants (C50.4, C50.2), or a breast and an axillary node (C50, C77), leave
    primary_site missing with a note; the side of Left breast structure still counts."""
    result = imported("body-site-rules")
    assert present(result, "tumour", "primary_site", "laterality")[:3] == [
        {KEY: "uoq", "primary_site": "C50.4"},
        {KEY: "two-quadrants"},
        {KEY: "breast-and-node", "laterality": "left"},
    ]  # fmt: skip
    assert (result.rows_read, result.rejected, result.rejections) == (5, Counter(), [])
    assert result.notes == Counter({
        "tumour.primary_site: body sites of different parts of one organ (left missing)": 1,
        "tumour.primary_site: body sites of several topography groups (left missing)": 1,
        NO_RFS: 5,
    })  # fmt: skip


def test_right_upper_lobe_and_body_of_tongue_are_crosswalked() -> None:
    """Right upper lobe of lung (42400003) is C34.1 on the right, like the other lobes; the
    body of the tongue (61344008), its anterior two thirds, is ICD-O-3 C02.3 (C02.0 is only
    its dorsal surface)."""
    result = imported("body-site-rules")
    assert present(result, "tumour", "primary_site", "laterality")[3:] == [
        {KEY: "rul", "primary_site": "C34.1", "laterality": "right"},
        {KEY: "tongue", "primary_site": "C02.3"},
    ]  # fmt: skip
