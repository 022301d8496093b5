"""FHIR R4 mCODE: the example bundles give hand-known rows, a value the importer cannot
interpret excludes its patient with a reason, bad files give a clear error, and written
bundles (the real GBSG2 cohort among them) read back as the same rows."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from lifelines.datasets import load_gbsg2

import oncofed.cdm
from oncofed.cdm.errors import SourceError
from oncofed.cdm.fields import KEY, TABLES, TableName
from oncofed.cdm.importers import YEAR_OF_BIRTH_AGES
from oncofed.cdm.importers.fhir import FhirImport, ajcc_category, ajcc_stage_group, import_fhir
from oncofed.cdm.tables import CdmData
from oncofed.demo.sources.fhir import write_fhir

EXAMPLES = Path(oncofed.cdm.__file__).parent / "examples" / "fhir"
Rows = dict[TableName, list[dict[str, Any]]]
B = "urn:uuid:6f1c2b9e-3d4a-4c1e-9b8f-0a1b2c3d4e01"
"""The Patient of bundle-b.json has no id: its fullUrl links its rows."""
LOINC, SNOMED, AJCC = "http://loinc.org", "http://snomed.info/sct", "http://cancerstaging.org"
ICD10, ICDO3 = "http://hl7.org/fhir/sid/icd-10", "http://terminology.hl7.org/CodeSystem/icd-o-3"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/"
LOCAL = "http://hospital.example.org/codes"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


@pytest.fixture(scope="module")
def example() -> FhirImport:
    return import_fhir(EXAMPLES)


@pytest.fixture(scope="module")
def translated(tmp_path_factory: pytest.TempPathFactory) -> FhirImport:
    """The example bundles with a code the importer reads added to, or put in place of, each
    value it cannot interpret."""
    folder = tmp_path_factory.mktemp("translated")
    bundles = {path.name: json.loads(path.read_text()) for path in EXAMPLES.glob("*.json")}
    b = [entry["resource"] for entry in bundles["bundle-b.json"]["entry"]]
    b[6]["valueCodeableConcept"] = coded(AJCC, "cN1")  # was cN9
    del b[11]["interpretation"]  # HL7 v3 "H" (high) is no result of the model
    b[12]["focus"] = [{"reference": bundles["bundle-b.json"]["entry"][1]["fullUrl"]}]
    d = [entry["resource"] for entry in bundles["bundle-c.json"]["entry"]]
    d[4]["code"]["coding"].append({"system": ICD10, "code": "C50.2"})  # beside SNOMED
    d[4]["bodySite"][0]["coding"].append({"system": ICDO3, "code": "C509"})
    d[5]["valueCodeableConcept"]["coding"].append({"system": AJCC, "code": "cT2"})
    d[8]["valueCodeableConcept"]["coding"].append({"system": SNOMED, "code": "42425007"})
    for name, content in bundles.items():
        (folder / name).write_text(json.dumps(content))
    return import_fhir(folder)


def present(result: FhirImport | CdmData, table: TableName) -> list[dict[str, Any]]:
    """The rows of ``table`` with their non-null fields only."""
    data = result.data if isinstance(result, FhirImport) else result
    return [{k: v for k, v in row.items() if v is not None} for row in data[table].to_pylist()]


def test_example_patients_and_tumours(translated: FhirImport) -> None:
    assert present(translated, "patient") == [
        {KEY: "pat-a", "sex": "female", "age_at_diagnosis": 53},
        {KEY: B, "sex": "male", "age_at_diagnosis": 48},  # birthDate 1941-09 fixes the age
        {KEY: "pat-d", "sex": "unknown"},
    ]
    assert present(translated, "tumour") == [
        {KEY: "pat-a", "tumour_seq": 1, "primary_site": "C50.4", "icd10": "C50.4",
         "histology": "8500/3", "laterality": "left", "stage_system": "AJCC8",
         "stage_basis": "pathological", "t_category": "T2", "n_category": "N1a",
         "stage_group": "IIB", "grade": "G2", "tumour_size_mm": 25.0, "nodes_positive": 2,
         "nodes_examined": 12, "ecog": 1},
        {KEY: B, "tumour_seq": 1, "primary_site": "C18.7", "icd10": "C18.7",
         "histology": "8140/3", "stage_system": "AJCC7", "stage_basis": "clinical",
         "t_category": "T3", "n_category": "N1", "m_category": "M1a", "stage_group": "IVA",
         "grade": "G3", "ecog": 2, "karnofsky": 80},
        {KEY: B, "tumour_seq": 2, "icd10": "C61"},
        {KEY: "pat-d", "tumour_seq": 1, "primary_site": "C50.9", "icd10": "C50.2",
         "laterality": "left", "stage_basis": "clinical", "t_category": "T2"},
    ]  # fmt: skip


def test_example_biomarkers_and_treatments(translated: FhirImport) -> None:
    assert present(translated, "biomarker") == [
        {KEY: "pat-a", "code": "85337-4", "result": "positive", "day": -6},
        {KEY: "pat-a", "code": "85339-0", "result": "positive", "value": 35.0, "unit": "%",
         "day": -6},
        {KEY: "pat-a", "code": "48676-1", "result": "equivocal", "day": -6},
        {KEY: B, "code": "2039-6", "result": "unknown", "value": 12.5, "unit": "ng/mL", "day": -2},
        {KEY: B, "code": "2857-1", "result": "unknown", "value": 8.1, "unit": "ng/mL", "day": 407},
        {KEY: "pat-d", "code": "85337-4", "result": "positive", "day": 2},
        {KEY: "pat-d", "code": "48676-1", "result": "equivocal", "day": 2},
    ]  # fmt: skip
    assert present(translated, "treatment") == [
        {KEY: "pat-a", "type": "surgery", "start_day": 16, "end_day": 16,
         "agent_code": "64368001", "intent": "curative"},
        {KEY: "pat-a", "type": "radiotherapy", "start_day": 152, "end_day": 223,
         "intent": "curative"},
        {KEY: "pat-a", "type": "chemotherapy", "start_day": 27, "agent_code": "3639",
         "intent": "adjuvant"},  # its MedicationAdministration is not a second row
        {KEY: "pat-a", "type": "endocrine", "start_day": 199, "end_day": 2025,
         "agent_code": "84857"},
        # metformin (RxNorm 6809) on 2015-01-01, 1170 days before the diagnosis on 2018-03-16
        {KEY: "pat-a", "type": "other_medication", "start_day": -1170, "end_day": -1170,
         "agent_code": "6809"},
        {KEY: B, "type": "chemotherapy", "start_day": 21, "end_day": 195, "agent_code": "4492"},
        {KEY: B, "type": "surgery", "start_day": 452, "agent_code": "26294005"},
    ]  # fmt: skip


def test_example_outcomes(translated: FhirImport) -> None:
    origin = {"time_origin": "diagnosis"}
    assert present(translated, "outcome") == [
        # alive: followed to the last disease status, recurrence at the "worsened" one
        {KEY: "pat-a", **origin, "vital_status": "alive", "last_followup_day": 1031,
         "os_days": 1031, "os_event": 0, "rfs_days": 781, "rfs_event": 1},
        # deceasedDateTime: dead at day 624, recurrence before
        {KEY: B, **origin, "vital_status": "dead", "last_followup_day": 624, "os_days": 624,
         "os_event": 1, "rfs_days": 285, "rfs_event": 1},
        # deceasedBoolean only: dead, but when is unknown
        {KEY: "pat-d", **origin, "vital_status": "dead", "last_followup_day": 184,
         "os_event": 1},
    ]  # fmt: skip


NOT_MODEL_VALUES = {
    "Encounter: resource type not used": 1,
    "Observation: code not used by the model": 1,
    "Observation: subject is not a Patient in the bundle (ignored)": 1,
    "Practitioner: resource type not used": 1,
}
"""What is not a model value in the bundles (resources of no patient, of no model table) and
in pat-a's resources (a body weight)."""


def test_example_counts_what_it_left_out(translated: FhirImport) -> None:
    assert translated.rows_read == 4
    assert translated.rejected == Counter({"patient: no primary cancer condition": 1})
    assert translated.notes == Counter({
        **NOT_MODEL_VALUES,
        "Condition: secondary cancer (metastasis) not read": 1,  # B's
        "Observation: status entered-in-error (ignored)": 1,  # pat-d's
        "os: death without a date": 1,  # pat-d's deceasedBoolean
    })  # fmt: skip


def test_examples_as_written_exclude_values_not_interpretable(
    example: FhirImport, translated: FhirImport
) -> None:
    """Untranslated, pat-d's cancer is SNOMED-coded only and B has an AJCC cN9: both are
    excluded, and what is not a model value is noted for pat-a and the bundles only."""
    assert example.rows_read == 4
    assert example.rejected == Counter({
        "patient: no primary cancer condition": 1,
        "tumour.icd10: code system not supported": 1,
        "tumour.n_category: code not interpretable": 1,
    })  # fmt: skip
    for table in TABLES:
        kept = [row for row in present(translated, table) if row[KEY] == "pat-a"]
        assert present(example, table) == kept
    assert example.notes == Counter(NOT_MODEL_VALUES)


def test_one_bundle_file() -> None:
    result = import_fhir(EXAMPLES / "bundle-a.json")
    assert result.rows_read == 1
    assert result.data.num_rows() == {
        "patient": 1, "tumour": 1, "biomarker": 3, "treatment": 5, "outcome": 1,
    }  # fmt: skip


NO_RFS = Counter({"rfs: no disease status recorded": 1})
"""The note of a patient without a disease status: no evidence that recurrence was assessed."""


def bundle(*resources: dict[str, Any], **patient: Any) -> dict[str, Any]:
    """A collection Bundle: Patient ``p1`` (female, born 1950-06-15 unless ``patient`` says
    otherwise) and ``resources``, each with subject p1."""
    person = {"resourceType": "Patient", "id": "p1", "gender": "female",
              "birthDate": "1950-06-15", **patient}  # fmt: skip
    linked = [{**r, "subject": {"reference": "Patient/p1"}} for r in resources]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (person, *linked)],
    }


def condition(
    onset: str | None = "1990-06-01", icd10: str = "C50.9", system: str = ICD10, **more: Any
) -> dict[str, Any]:
    found = {"resourceType": "Condition", "code": coded(system, icd10), **more}
    return {**found, "onsetDateTime": onset} if onset else found


def observation(loinc: str, day: str | None = "1990-06-05", **value: Any) -> dict[str, Any]:
    found = {"resourceType": "Observation", "status": "final", "code": coded(LOINC, loinc)}
    return {**found, "effectiveDateTime": day, **value} if day else {**found, **value}


def grade(code: str, day: str | None = "1990-06-05", system: str = SNOMED) -> dict[str, Any]:
    return observation("21858-6", day, valueCodeableConcept=coded(system, code))


def read(tmp_path: Path, content: dict[str, Any] | str, name: str = "b.json") -> FhirImport:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return import_fhir(path)


def test_observations_that_agree_and_a_birth_month_that_fixes_the_age(tmp_path: Path) -> None:
    """Born in March 1950, the patient is 40 on 1990-06-01 whatever the day; two grades that
    agree give that grade."""
    grades = (grade("61026006", "1990-06-20"), grade("G3", "1990-06-05", AJCC))
    result = read(tmp_path, bundle(condition(), *grades, birthDate="1950-03"))
    assert present(result, "patient") == [{KEY: "p1", "sex": "female", "age_at_diagnosis": 40}]
    assert present(result, "tumour")[0]["grade"] == "G3"
    assert (result.rejected, result.notes) == (Counter(), NO_RFS)


@pytest.mark.parametrize(
    ("birth", "years", "noted"), [("1950", 40, 1), ("1950-06", 40, 1), ("1950-07", 39, 0)]
)
def test_a_partial_birth_date_gives_the_age_ohdsi_gives(
    birth: str, years: int, noted: int, tmp_path: Path
) -> None:
    """A year or a month of birth (valid FHIR, common after de-identification) keeps the
    patient: the age it fixes, else the year of diagnosis less the year of birth, as OHDSI (and
    the OMOP importer) count it, with a note for the admin."""
    result = read(tmp_path, bundle(condition(), birthDate=birth))
    assert present(result, "patient") == [{KEY: "p1", "sex": "female", "age_at_diagnosis": years}]
    assert result.rejected == Counter()
    assert result.notes == NO_RFS + (Counter({YEAR_OF_BIRTH_AGES: 1}) if noted else Counter())


def test_icd10_cm_codes_keep_their_subcategory(tmp_path: Path) -> None:
    """Up to 4 characters after the dot (ICD-10-CM C50.911) are kept; the primary site comes
    from bodySite only, never from the ICD-10 code."""
    cm = "http://hl7.org/fhir/sid/icd-10-cm"
    right_breast = condition("1990-06-01", "C50.911", cm)
    with_site = condition("1990-07-01", "C50.912", cm, bodySite=[coded(ICDO3, "C509")])
    result = read(tmp_path, bundle(right_breast, with_site))
    assert present(result, "tumour") == [
        {KEY: "p1", "tumour_seq": 1, "icd10": "C50.911"},
        {KEY: "p1", "tumour_seq": 2, "icd10": "C50.912", "primary_site": "C50.9"},
    ]
    assert (result.rejected, result.notes) == (Counter(), NO_RFS)


def test_patients_without_a_usable_cancer_are_excluded(tmp_path: Path) -> None:
    hypertension = condition(icd10="I10")
    metastasis = condition(icd10="C78.7")
    no_date = "patient: no diagnosis date (Condition.onsetDateTime)"
    partial = "patient: partial diagnosis date (Condition.onsetDateTime)"
    for resources, reason in [
        ((hypertension, metastasis), "patient: no primary cancer condition"),
        ((condition(onset=None),), no_date),
        ((condition(), condition(None, "C18.7", onsetString="in 1991")), no_date),
        ((condition(onset="1990-06"),), partial),
        ((condition(), condition("1989-12", "C18.7")), partial),  # which came first?
    ]:
        result = read(tmp_path, bundle(*resources))
        assert result.rows_read == 1
        assert result.rejected == Counter({reason: 1})
        assert result.data.num_rows() == dict.fromkeys(TABLES, 0)


def laterality(code: str) -> dict[str, Any]:
    return {
        "url": MCODE + "mcode-laterality-qualifier",
        "valueCodeableConcept": coded(SNOMED, code),
    }


def histology(system: str, code: str) -> dict[str, Any]:
    return {"url": MCODE + "mcode-histology-morphology-behavior",
            "valueCodeableConcept": coded(system, code)}  # fmt: skip


def surgery(**more: Any) -> dict[str, Any]:
    return {"resourceType": "Procedure", "status": "completed", "performedDateTime": "1990-06-20",
            "category": coded(SNOMED, "387713003"), **more}  # fmt: skip


def marker(day: str | None = "1990-06-05", **value: Any) -> dict[str, Any]:
    """An estrogen receptor test."""
    return observation("85337-4", day, **value)


def status(code: str, day: str | None) -> dict[str, Any]:
    """A CancerDiseaseStatus; SNOMED 271299001 is "worsened"."""
    return observation("97509-4", day, valueCodeableConcept=coded(SNOMED, code))


def tnm(loinc: str, code: str, system: str = AJCC, **more: Any) -> dict[str, Any]:
    return observation(loinc, valueCodeableConcept=coded(system, code), **more)


AJCC8, AJCC7 = coded(SNOMED, "897275008"), coded(SNOMED, "443830009")
SECOND = condition("1991-01-01", "C18.7")
REJECTED = [
    # patient
    ("patient.sex: code not interpretable", bundle(condition(), gender="femme")),
    ("patient.age_at_diagnosis: birth after diagnosis",
     bundle(condition(), birthDate="1990-06-02")),
    # the primary cancer Condition
    ("tumour.icd10: code not interpretable", bundle(condition(icd10="C50.91111"))),
    ("tumour.icd10: code system not supported",
     bundle(condition(icd10="254837009", system=SNOMED, meta={"profile": [MCODE + "mcode-"
                                                             "primary-cancer-condition"]}))),
    ("tumour.histology: code system not supported",
     bundle(condition(extension=[histology(SNOMED, "413448000")]))),
    ("tumour.histology: code not interpretable",
     bundle(condition(extension=[histology(ICDO3, "8500")]))),
    ("tumour.laterality: code not interpretable",
     bundle(condition(extension=[laterality("66459002")]))),  # unilateral: which side?
    ("tumour.laterality: conflicting values",
     bundle(condition(extension=[laterality("7771000")],
                      bodySite=[{"extension": [laterality("24028007")]}]))),
    # tumour observations
    ("tumour.grade: code not interpretable", bundle(condition(), grade("99999"))),
    ("tumour.grade: code system not supported", bundle(condition(), grade("G2", system=LOCAL))),
    ("tumour.grade: code not interpretable",
     bundle(condition(), observation("21858-6", valueCodeableConcept={"text": "moderate"}))),
    ("tumour.grade: value type not supported",
     bundle(condition(), observation("21858-6", valueString="G2"))),
    ("tumour.grade: conflicting values",
     bundle(condition(), grade("54102005", "1990-06-20"), grade("61026006", "1990-06-05"))),
    ("tumour.grade: not linked to one primary cancer",
     bundle(condition(), SECOND, grade("G2", system=AJCC))),
    ("tumour.t_category: code system not supported",
     bundle(condition(), tnm("21905-5", "369900003", SNOMED))),
    ("tumour.t_category: code not interpretable",
     bundle(condition(), tnm("21899-0", "ypT2"))),  # post-therapy staging is not read
    ("tumour.n_category: code not interpretable",
     bundle(condition(), tnm("21906-3", "pN1"))),  # pathological code as clinical staging
    ("tumour.m_category: code not interpretable", bundle(condition(), tnm("21907-1", "cM9"))),
    ("tumour.stage_group: code not interpretable",
     bundle(condition(), tnm("21908-9", "Stage IIB"))),
    ("tumour.stage_system: code not interpretable",
     bundle(condition(), tnm("21905-5", "cT2", method=coded(SNOMED, "12345")))),
    ("tumour.stage_system: conflicting values",
     bundle(condition(), tnm("21905-5", "cT2", method=AJCC8),
            tnm("21906-3", "cN0", method=AJCC7))),
    ("tumour.tumour_size_mm: unit not supported",
     bundle(condition(), observation("21889-1", valueQuantity={"value": 1, "unit": "inch"}))),
    ("tumour.tumour_size_mm: comparator not supported",
     bundle(condition(), observation("21889-1", valueQuantity={"value": 5, "unit": "mm",
                                                               "comparator": "<"}))),
    ("tumour.nodes_positive: not a whole number",
     bundle(condition(), observation("21893-3", valueQuantity={"value": 2.5}))),
    ("tumour.nodes_examined: outside 0-150",
     bundle(condition(), observation("21894-1", valueInteger=151))),
    ("tumour.ecog: outside 0-5", bundle(condition(), observation("89247-1", valueInteger=7))),
    ("tumour.ecog: code not interpretable",
     bundle(condition(), observation("89247-1", valueCodeableConcept=coded(LOINC, "LA0-0")))),
    ("tumour.karnofsky: value type not supported",
     bundle(condition(), observation("89243-0", valueString="80%"))),
    # tumour markers
    ("biomarker.result: code not interpretable",
     bundle(condition(), marker(valueCodeableConcept=coded(LOINC, "LA9999-9")))),
    ("biomarker.result: code system not supported",
     bundle(condition(), marker(valueCodeableConcept=coded(LOCAL, "2+")))),
    ("biomarker.result: conflicting values",
     bundle(condition(), marker(valueCodeableConcept=coded(LOINC, "LA6576-8"),
                                interpretation=[coded(V3, "NEG")]))),
    ("biomarker.result: value type not supported",
     bundle(condition(), marker(valueString="positive"))),
    ("biomarker.unit: unit not supported",
     bundle(condition(), marker(valueQuantity={"value": 35, "unit": "per cent"}))),
    ("biomarker.unit: unit not supported",
     bundle(condition(), marker(valueQuantity={"value": 35}))),
    ("biomarker.value: comparator not supported",
     bundle(condition(), marker(valueQuantity={"value": 1, "unit": "%", "comparator": "<"}))),
    ("biomarker.day: partial date",
     bundle(condition(), marker("1990-06", valueCodeableConcept=coded(LOINC, "LA6576-8")))),
    # treatments
    ("treatment.agent_code: code system not supported",
     bundle(condition(), surgery(code=coded("http://www.ama-assn.org/go/cpt", "19301")))),
    ("treatment.agent_code: code not interpretable",
     bundle(condition(), {"resourceType": "MedicationStatement", "status": "completed",
                          "meta": {"profile": [MCODE + "mcode-cancer-related-medication-"
                                                       "statement"]},
                          "medicationCodeableConcept": coded(RXNORM, "103 24")})),
    ("treatment.intent: code not interpretable",
     bundle(condition(), surgery(extension=[{"url": MCODE + "mcode-procedure-intent",
                                             "valueCodeableConcept": coded(SNOMED, "1234")}]))),
    ("treatment.intent: code not interpretable",
     bundle(condition(), surgery(extension=[{"url": MCODE + "mcode-procedure-intent",
                                             "valueString": "curative"}]))),
    ("treatment.start_day: partial date",
     bundle(condition(), surgery(performedDateTime="1990-07"))),
    # outcome
    ("outcome.os_days: partial date", bundle(condition(), deceasedDateTime="1993")),
    ("outcome.os_days: before diagnosis", bundle(condition(), deceasedDateTime="1990-05-31")),
    ("outcome.rfs_event: code not interpretable",
     bundle(condition(), status("1234", "1991-01-01"))),
    ("outcome.rfs_days: no date", bundle(condition(), status("271299001", None))),
    ("outcome.rfs_days: before diagnosis", bundle(condition(), status("271299001", "1990-05-01"))),
    ("outcome.rfs_days: partial date", bundle(condition(), status("271299001", "1991-03"))),
    ("outcome.last_followup_day: partial date",
     bundle(condition(), status("359746009", "1991-03"))),
    ("outcome.last_followup_day: partial date",  # the grade's day could be the last follow-up
     bundle(condition(), grade("54102005", "1992-03"))),
]  # fmt: skip


@pytest.mark.parametrize(("reason", "content"), REJECTED)
def test_a_value_not_interpretable_excludes_the_patient(
    tmp_path: Path, reason: str, content: dict[str, Any]
) -> None:
    """Excluded with a reason that names the field and rule, never a value; what else of the
    patient is not a model value (here a body weight) is not counted."""
    weight = observation("29463-7", valueQuantity={"value": 70, "unit": "kg"})
    person, *resources = content["entry"]
    linked = {"resource": {**weight, "subject": {"reference": "Patient/p1"}}}
    result = read(tmp_path, {**content, "entry": [person, linked, *resources]})
    assert (result.rows_read, result.rejected, result.notes) == (1, Counter({reason: 1}), Counter())
    assert result.data.num_rows() == dict.fromkeys(TABLES, 0)


def test_a_malformed_icdo3_body_site_is_missing_and_noted(tmp_path: Path) -> None:
    """A body site never excludes its patient: one the importer cannot read is left out."""
    result = read(tmp_path, bundle(condition(bodySite=[coded(ICDO3, "C5")])))
    assert result.rejected == Counter()
    assert result.data["tumour"]["primary_site"].to_pylist() == [None]
    note = "tumour.primary_site: body site with a malformed ICD-O-3 code (left missing)"
    assert result.notes[note] == 1


def test_what_is_not_a_model_value_is_noted_and_the_patient_kept(tmp_path: Path) -> None:
    """A grade of a metastasis, a body weight, metformin, a grade without a value, an undated
    stable disease status and an observation with a partial date that the last disease status
    makes irrelevant leave the model values as they are."""
    about_metastasis = {**grade("99999"), "focus": [{"reference": "Condition/m1"}]}
    metformin = {"resourceType": "MedicationStatement", "status": "active",
                 "medicationCodeableConcept": coded(RXNORM, "6809")}  # fmt: skip
    absent = coded("http://terminology.hl7.org/CodeSystem/data-absent-reason", "unknown")
    resources = (
        condition(),
        {**condition(icd10="C78.7"), "id": "m1"},
        about_metastasis,
        observation("29463-7", valueQuantity={"value": 70, "unit": "kg"}),
        metformin,
        observation("21858-6", dataAbsentReason=absent),
        status("359746009", None),
        grade("54102005", "1990-06"),
        status("359746009", "1991-06-01"),
    )
    result = read(tmp_path, bundle(*resources))
    assert result.rejected == Counter()
    assert present(result, "tumour") == [
        {KEY: "p1", "tumour_seq": 1, "icd10": "C50.9", "grade": "G1"}
    ]
    assert present(result, "outcome") == [
        {KEY: "p1", "time_origin": "diagnosis", "vital_status": "alive", "last_followup_day": 365,
         "os_days": 365, "os_event": 0, "rfs_days": 365, "rfs_event": 0}
    ]  # fmt: skip
    assert result.notes == Counter({
        "Condition: secondary cancer (metastasis) not read": 1,
        "MedicationStatement: other_medication without a full start date (dropped)": 1,
        "Observation: code not used by the model": 1,
        "outcome: disease status without a date from diagnosis on (ignored)": 1,
        "tumour.grade: about a condition that is not a primary cancer (ignored)": 1,
        "tumour.grade: observation without a value (ignored)": 1,
    })  # fmt: skip


@pytest.mark.parametrize(
    ("code", "basis", "expected"),
    [("cT2", "clinical", "T2"), ("T1mi", "clinical", "T1mi"), ("pN0(i+)", "pathological", "N0(i+)"),
     ("pT2", "clinical", None), ("ypT2", "pathological", None), ("cT9", "clinical", None),
     ("cM1c", "clinical", "M1c"), ("Tis", "pathological", "Tis")],
)  # fmt: skip
def test_ajcc_categories(code: str, basis: str, expected: str | None) -> None:
    allowed = ("T1mi", "T2", "Tis", "N0(i+)", "M1c")
    assert ajcc_category(code, basis, allowed) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [("2B", "IIB"), ("IIB", "IIB"), ("0is", "0is"), ("3C1", "IIIC1"), ("4", "IV"), ("1", "I"),
     ("5", None), ("Stage IIB", None), ("2Z", None)],
)  # fmt: skip
def test_ajcc_stage_groups(code: str, expected: str | None) -> None:
    assert ajcc_stage_group(code) == expected


def broken(tmp_path: Path, change: Any, name: str = "bundle-17.json") -> str:
    """The SourceError message for bundle-a.json after ``change`` (a function of its JSON)."""
    content = json.loads((EXAMPLES / "bundle-a.json").read_text())
    change(content)
    with pytest.raises(SourceError) as error:
        read(tmp_path, content, name)
    return str(error.value)


def test_malformed_resource_names_file_entry_and_element(tmp_path: Path) -> None:
    def bad_date(b: dict[str, Any]) -> None:
        b["entry"][3]["resource"]["effectiveDateTime"] = "2018-13-45"

    def bad_number(b: dict[str, Any]) -> None:
        b["entry"][13]["resource"]["valueQuantity"]["value"] = "many"

    def unknown_element(b: dict[str, Any]) -> None:
        b["entry"][3]["resource"]["colour"] = "red"

    def unknown_type(b: dict[str, Any]) -> None:
        b["entry"][3]["resource"]["resourceType"] = "Observashun"

    def not_an_entry(b: dict[str, Any]) -> None:
        b["entry"].append("x")

    assert broken(tmp_path, bad_date) == (
        "bundle-17.json: entry 3 (Observation): effectiveDateTime: "
        "DateTime value string does not match spec regex."
    )
    assert broken(tmp_path, bad_number) == (
        "bundle-17.json: entry 13 (Observation): valueQuantity.value: "
        "Decimal value string does not match spec regex."
    )
    assert broken(tmp_path, unknown_element) == (
        "bundle-17.json: entry 3 (Observation): colour: Extra inputs are not permitted"
    )
    assert broken(tmp_path, unknown_type) == (
        "bundle-17.json: entry 3: 'Observashun' is not a FHIR resource type"
    )
    assert broken(tmp_path, not_an_entry) == "bundle-17.json: entry 26: not a JSON object"
    assert broken(tmp_path, lambda b: b.update(type="history")) == (
        "bundle-17.json: Bundle type 'history' is not read; use one of "
        "('collection', 'transaction', 'batch', 'searchset', 'document')"
    )


def test_files_that_are_no_bundle(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "bundle-a.json", tmp_path)
    (tmp_path / "patient.json").write_text('{"resourceType": "Patient", "id": "p9"}')
    with pytest.raises(SourceError, match=r"^patient\.json: not a FHIR Bundle \(resourceType "
                       r"Patient\)$"):  # fmt: skip
        import_fhir(tmp_path)
    cases = {
        "[1, 2]": "list.json: not a FHIR Bundle (resourceType none, not a JSON object)",
        '{"resourceType": "Bundle",\n "type": }': (
            "list.json: not valid JSON (line 2, column 10): Expecting value"
        ),
    }
    for text, message in cases.items():
        with pytest.raises(SourceError) as error:
            read(tmp_path, text, "list.json")
        assert str(error.value) == message
    with pytest.raises(SourceError, match="no such file or folder"):
        import_fhir(tmp_path / "absent.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"empty: no \*\.json bundles in this folder$"):
        import_fhir(tmp_path / "empty")


def test_a_patient_in_two_bundles_is_refused(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "bundle-a.json", tmp_path / "a.json")
    shutil.copy(EXAMPLES / "bundle-a.json", tmp_path / "b.json")
    with pytest.raises(SourceError) as error:
        import_fhir(tmp_path)
    assert str(error.value) == (
        "b.json: entry 0 (Patient): the same Patient id is in a.json: entry 0 (Patient)"
    )


def gbsg2_rows() -> CdmData:
    """The real GBSG2 cohort in the canonical encoding every importer must give."""
    cohort = load_gbsg2()
    keys = [f"G{i:03d}" for i in range(len(cohort))]
    rows: Rows = {table: [] for table in TABLES}
    for key, r in zip(keys, cohort.to_dict("records"), strict=True):
        rows["patient"].append({KEY: key, "sex": "female", "age_at_diagnosis": r["age"]})
        rows["tumour"].append(
            {KEY: key, "tumour_seq": 1, "primary_site": "C50.9", "icd10": "C50.9",
             "grade": {"I": "G1", "II": "G2", "III": "G3"}[r["tgrade"]],
             "tumour_size_mm": float(r["tsize"]), "nodes_positive": r["pnodes"]}
        )  # fmt: skip
        for loinc, column in (("85337-4", "estrec"), ("85339-0", "progrec")):
            rows["biomarker"].append(
                {KEY: key, "code": loinc, "value": float(r[column]), "unit": "fmol/mg",
                 "result": "positive" if r[column] >= 10 else "negative", "day": 0}
            )  # fmt: skip
        if r["horTh"] == "yes":
            rows["treatment"].append(
                {KEY: key, "type": "endocrine", "agent_code": "10324", "intent": "adjuvant",
                 "start_day": 0, "end_day": 730}
            )  # fmt: skip
        rows["outcome"].append(
            {KEY: key, "time_origin": "diagnosis", "vital_status": "alive",
             "last_followup_day": r["time"], "os_days": r["time"], "os_event": 0,
             "rfs_days": r["time"], "rfs_event": r["cens"]}
        )  # fmt: skip
    return CdmData({t: pa.Table.from_pylist(rows[t]) for t in TABLES})


def assert_reads_back(data: CdmData, result: FhirImport) -> None:
    """The same rows, patient by patient (bundles are written and read in patient order)."""
    written = data["patient"].column(KEY).to_pylist()
    read_back = result.data["patient"].column(KEY).to_pylist()
    assert len(read_back) == len(written)
    key = dict(zip(read_back, written, strict=True))
    for table in TABLES:
        rows = [{**r, KEY: key[r[KEY]]} for r in result.data[table].to_pylist()]
        assert sorted(rows, key=repr) == sorted(data[table].to_pylist(), key=repr), table


def test_gbsg2_round_trip(tmp_path: Path) -> None:
    data = gbsg2_rows()
    paths = write_fhir(data, tmp_path, seed=7)
    assert len(paths) == 686
    result = import_fhir(tmp_path)
    assert (result.rows_read, result.rejected, result.notes) == (686, Counter(), Counter())
    assert_reads_back(data, result)


def rich_rows() -> CdmData:
    """Patients using every field the FHIR writer can carry."""
    rows: Rows = {
        "patient": [
            {KEY: "x1", "sex": "female", "age_at_diagnosis": 61, "trial_arm": "Arm A: AC-T"},
            {KEY: "x2", "sex": "male"},
            {KEY: "x3", "age_at_diagnosis": 45},
        ],
        "tumour": [
            {KEY: "x1", "tumour_seq": 1, "primary_site": "C50.4", "icd10": "C50.412",
             "histology": "8500/3", "laterality": "left", "stage_system": "AJCC8",
             "stage_basis": "pathological", "t_category": "T2", "n_category": "N1a",
             "m_category": "M0", "stage_group": "IIB", "grade": "G2", "tumour_size_mm": 25.5,
             "nodes_positive": 2, "nodes_examined": 12, "ecog": 1, "karnofsky": 90},
            {KEY: "x1", "tumour_seq": 2, "icd10": "C18.7", "laterality": "right"},
            {KEY: "x2", "tumour_seq": 1, "icd10": "C61", "stage_system": "AJCC7",
             "stage_basis": "clinical", "t_category": "T3"},
            {KEY: "x3", "tumour_seq": 1, "grade": "GX"},
        ],
        "biomarker": [
            {KEY: "x1", "code": "85337-4", "result": "positive", "value": 35.0, "unit": "%",
             "day": -6},
            {KEY: "x1", "code": "48676-1", "result": "equivocal"},
            {KEY: "x2", "code": "2857-1", "result": "unknown", "value": 8.1, "unit": "ng/mL",
             "day": 407},
            {KEY: "x3", "code": "85339-0", "result": "unknown"},
        ],
        "treatment": [
            {KEY: "x1", "type": "surgery", "start_day": 16, "end_day": 16,
             "agent_code": "64368001", "intent": "curative"},
            {KEY: "x1", "type": "radiotherapy", "start_day": 152, "end_day": 223},
            {KEY: "x1", "type": "chemotherapy", "start_day": 27, "agent_code": "3639",
             "intent": "neoadjuvant"},
            {KEY: "x1", "type": "targeted", "agent_code": "224905", "intent": "palliative"},
            {KEY: "x2", "type": "other", "start_day": 5},
            {KEY: "x2", "type": "other_procedure", "start_day": -10, "end_day": -10,
             "agent_code": "723990008"},
            {KEY: "x3", "type": "other_medication", "start_day": 100, "end_day": 200,
             "agent_code": "6809"},
        ],
        "outcome": [
            {KEY: "x1", "time_origin": "diagnosis", "randomisation_day": 21,
             "vital_status": "alive", "last_followup_day": 1031, "os_days": 1031, "os_event": 0,
             "rfs_days": 781, "rfs_event": 1},
            {KEY: "x2", "time_origin": "diagnosis", "vital_status": "dead",
             "last_followup_day": 624, "os_days": 624, "os_event": 1, "rfs_days": 285,
             "rfs_event": 1},
            {KEY: "x3", "time_origin": "diagnosis", "vital_status": "dead",
             "last_followup_day": 184, "os_event": 1},
        ],
    }  # fmt: skip
    return CdmData({t: pa.Table.from_pylist(rows[t]) for t in TABLES})


def test_every_writable_field_round_trips(tmp_path: Path) -> None:
    data = rich_rows()
    write_fhir(data, tmp_path)
    result = import_fhir(tmp_path)
    assert (result.rows_read, result.rejected) == (3, Counter())
    assert result.notes == Counter({
        "treatment.type: drug not in the RxNorm map, type other": 1,
        "os: death without a date": 1,  # x3
    })  # fmt: skip
    assert_reads_back(data, result)


def test_writer_is_seeded_and_ids_are_random(tmp_path: Path) -> None:
    data = rich_rows()
    first = [p.read_text() for p in write_fhir(data, tmp_path / "a", seed=1)]
    again = [p.read_text() for p in write_fhir(data, tmp_path / "b", seed=1)]
    other = [p.read_text() for p in write_fhir(data, tmp_path / "c", seed=2)]
    assert first == again
    assert first != other
    assert not any('"x1"' in text or "x2" in text for text in first)
    ids = import_fhir(tmp_path / "a").data["patient"].column(KEY).to_pylist()
    assert len(set(ids)) == 3 and all(len(i) == 36 for i in ids)  # random UUIDs


def replaced(data: CdmData, table: TableName, **values: Any) -> CdmData:
    """``data`` with ``values`` set in the first row of ``table``."""
    rows = data[table].to_pylist()
    rows[0].update(values)
    return CdmData({**data.tables, table: pa.Table.from_pylist(rows)})


def test_writer_refuses_what_would_not_read_back(tmp_path: Path) -> None:
    data = rich_rows()
    cases = [
        (replaced(data, "tumour", laterality="unknown"), "laterality 'unknown'"),
        (replaced(data, "tumour", stage_basis=None), "staging without both stage_basis"),
        (replaced(data, "treatment", type="chemotherapy", agent_code="10324"),
         "chemotherapy with RxNorm code '10324'"),
        (replaced(data, "treatment", intent="unknown"), "treatment intent 'unknown'"),
        (replaced(data, "biomarker", unit=None), "biomarker 85337-4 value without unit"),
        (replaced(data, "outcome", os_days=1000), r"outcome \['os_days'\]"),
        (replaced(data, "outcome", dmfs_days=20, dmfs_event=0),
         r"outcome \['dmfs_days', 'dmfs_event'\]"),
        (replaced(data, "outcome", time_origin="surgery"), "time origin 'surgery'"),
        (replaced(data, "treatment", type="other_procedure", start_day=None),
         "other_procedure without agent_code and start_day"),
        (replaced(data, "treatment", type="other_medication", agent_code="10324", intent=None),
         "other_medication with RxNorm code '10324'"),
        (replaced(data, "treatment", type="other_medication", agent_code="198240", intent=None),
         "other_medication with RxNorm code '198240'"),  # tamoxifen 10 MG Oral Tablet
        (replaced(data, "treatment", type="other_procedure", agent_code="172043006",
                  intent=None), "other_procedure with SNOMED CT code '172043006'"),  # mastectomy
        (replaced(data, "treatment", type="endocrine", agent_code="198240"),
         "endocrine with RxNorm code '198240'"),  # would read back as its ingredient, 10324
        (replaced(data, "treatment", type="other", agent_code="198240"),
         "other with RxNorm code '198240'"),
        (replaced(data, "outcome", rfs_days=None, rfs_event=None), r"outcome \['rfs_days'"),
    ]  # fmt: skip
    for changed, message in cases:
        with pytest.raises(ValueError, match=rf"^patient 1: {message}"):
            write_fhir(changed, tmp_path)
    untreated = CdmData({**data.tables, "tumour": data["tumour"].slice(0, 3)})
    with pytest.raises(ValueError, match=r"^patient 3: a patient without tumour or outcome row"):
        write_fhir(untreated, tmp_path)
