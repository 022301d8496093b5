"""FHIR R4 mCODE: the example bundles give hand-known rows, bad files a clear error, and
written bundles (the real GBSG2 cohort among them) read back as the same rows."""

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
from oncofed.cdm.importers.fhir import FhirImport, ajcc_category, ajcc_stage_group, import_fhir
from oncofed.cdm.tables import CdmData
from oncofed.demo.sources.fhir import write_fhir

EXAMPLES = Path(oncofed.cdm.__file__).parent / "examples" / "fhir"
Rows = dict[TableName, list[dict[str, Any]]]
B = "urn:uuid:6f1c2b9e-3d4a-4c1e-9b8f-0a1b2c3d4e01"
"""The Patient of bundle-b.json has no id: its fullUrl links its rows."""


@pytest.fixture(scope="module")
def example() -> FhirImport:
    return import_fhir(EXAMPLES)


def present(result: FhirImport | CdmData, table: TableName) -> list[dict[str, Any]]:
    """The rows of ``table`` with their non-null fields only."""
    data = result.data if isinstance(result, FhirImport) else result
    return [{k: v for k, v in row.items() if v is not None} for row in data[table].to_pylist()]


def test_example_patients_and_tumours(example: FhirImport) -> None:
    assert present(example, "patient") == [
        {KEY: "pat-a", "sex": "female", "age_at_diagnosis": 53},
        {KEY: B, "sex": "male", "age_at_diagnosis": 48},  # birthDate 1941-09 fixes the age
        {KEY: "pat-d", "sex": "unknown"},
    ]
    assert present(example, "tumour") == [
        {KEY: "pat-a", "tumour_seq": 1, "primary_site": "C50.4", "icd10": "C50.4",
         "histology": "8500/3", "laterality": "left", "stage_system": "AJCC8",
         "stage_basis": "pathological", "t_category": "T2", "n_category": "N1a",
         "stage_group": "IIB", "grade": "G2", "tumour_size_mm": 25.0, "nodes_positive": 2,
         "nodes_examined": 12, "ecog": 1},
        {KEY: B, "tumour_seq": 1, "primary_site": "C18.7", "icd10": "C18.7",
         "histology": "8140/3", "stage_system": "AJCC7", "stage_basis": "clinical",
         "t_category": "T3", "m_category": "M1a", "stage_group": "IVA", "grade": "G3",
         "karnofsky": 80},
        {KEY: B, "tumour_seq": 2, "icd10": "C61"},
        {KEY: "pat-d", "tumour_seq": 1, "laterality": "left"},
    ]  # fmt: skip


def test_example_biomarkers_and_treatments(example: FhirImport) -> None:
    assert present(example, "biomarker") == [
        {KEY: "pat-a", "code": "85337-4", "result": "positive", "day": -6},
        {KEY: "pat-a", "code": "85339-0", "result": "positive", "value": 35.0, "unit": "%",
         "day": -6},
        {KEY: "pat-a", "code": "48676-1", "result": "equivocal", "day": -6},
        {KEY: B, "code": "2039-6", "result": "unknown", "value": 12.5, "unit": "ng/mL", "day": -2},
        {KEY: B, "code": "2857-1", "result": "unknown", "value": 8.1, "unit": "ng/mL", "day": 407},
        {KEY: "pat-d", "code": "85337-4", "result": "positive", "day": 2},
        {KEY: "pat-d", "code": "48676-1", "result": "unknown", "day": 2},
    ]  # fmt: skip
    assert present(example, "treatment") == [
        {KEY: "pat-a", "type": "surgery", "start_day": 16, "end_day": 16,
         "agent_code": "64368001", "intent": "curative"},
        {KEY: "pat-a", "type": "radiotherapy", "start_day": 152, "end_day": 223,
         "intent": "curative"},
        {KEY: "pat-a", "type": "chemotherapy", "start_day": 27, "agent_code": "3639",
         "intent": "adjuvant"},  # its MedicationAdministration is not a second row
        {KEY: "pat-a", "type": "endocrine", "start_day": 199, "end_day": 2025,
         "agent_code": "84857"},
        {KEY: B, "type": "chemotherapy", "start_day": 21, "end_day": 195, "agent_code": "4492"},
        {KEY: B, "type": "surgery", "start_day": 452, "agent_code": "26294005"},
    ]  # fmt: skip


def test_example_outcomes(example: FhirImport) -> None:
    origin = {"time_origin": "diagnosis"}
    assert present(example, "outcome") == [
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


def test_example_counts_what_it_left_out(example: FhirImport) -> None:
    assert example.rows_read == 4
    assert example.rejected == Counter({"patient: no primary cancer condition": 1})
    assert example.notes == Counter({
        "Condition: secondary cancer (metastasis) not read": 1,
        "Encounter: resource type not used": 1,
        "MedicationStatement: not a cancer drug (ignored)": 1,
        "Observation: code not used by the model": 1,
        "Observation: status entered-in-error (ignored)": 1,
        "Observation: subject is not a Patient in the bundle (ignored)": 1,
        "Practitioner: resource type not used": 1,
        "biomarker.result: code not mapped": 2,
        "tumour.ecog: not linked to one primary cancer (focus)": 1,
        "tumour.icd10: no ICD-10 code of the model's form": 1,
        "tumour.n_category: code not mapped": 1,
        "tumour.primary_site: bodySite has no ICD-O-3 topography": 1,
        "tumour.t_category: code not mapped": 1,
    })  # fmt: skip


def test_one_bundle_file() -> None:
    result = import_fhir(EXAMPLES / "bundle-b.json")
    assert result.rows_read == 1
    assert result.data.num_rows() == {
        "patient": 1, "tumour": 2, "biomarker": 2, "treatment": 2, "outcome": 1,
    }  # fmt: skip


def bundle(*resources: dict[str, Any], birth: str = "1950-06-15") -> dict[str, Any]:
    """A collection Bundle: Patient ``p1`` and ``resources``, each with subject p1."""
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": birth}
    linked = [{**r, "subject": {"reference": "Patient/p1"}} for r in resources]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (patient, *linked)],
    }


def condition(
    onset: str = "1990-06-01", icd10: str = "C50.9", system: str = "http://hl7.org/fhir/sid/icd-10"
) -> dict[str, Any]:
    coding = {"system": system, "code": icd10}
    return {"resourceType": "Condition", "code": {"coding": [coding]}, "onsetDateTime": onset}


def grade(code: str, day: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "21858-6"}]},
        "effectiveDateTime": day,
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
    }


def read(tmp_path: Path, content: dict[str, Any] | str, name: str = "b.json") -> FhirImport:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return import_fhir(path)


def test_age_and_earliest_observation(tmp_path: Path) -> None:
    """A birth year alone leaves the age open: null, noted. Of two grades the earliest counts."""
    result = read(tmp_path, bundle(condition(), grade("54102005", "1990-06-20"),
                                   grade("61026006", "1990-06-05"), birth="1950"))  # fmt: skip
    assert present(result, "patient") == [{KEY: "p1", "sex": "female"}]
    assert present(result, "tumour")[0]["grade"] == "G3"
    assert result.notes == Counter({
        "patient.age_at_diagnosis: birthDate does not fix an age at diagnosis": 1,
        "tumour.grade: observations differ, the earliest used": 1,
    })  # fmt: skip


def test_icd10_cm_codes_keep_their_subcategory(tmp_path: Path) -> None:
    """Up to 4 characters after the dot (ICD-10-CM C50.911) are kept, 5 are not; the primary
    site comes from bodySite only, never from the ICD-10 code."""
    cm = "http://hl7.org/fhir/sid/icd-10-cm"
    topography = {"system": "http://terminology.hl7.org/CodeSystem/icd-o-3", "code": "C509"}
    right_breast = condition("1990-06-01", "C50.911", cm)
    with_site = {**condition("1990-07-01", "C50.912", cm), "bodySite": [{"coding": [topography]}]}
    too_long = condition("1990-08-01", "C50.91111", cm)
    result = read(tmp_path, bundle(right_breast, with_site, too_long))
    assert present(result, "tumour") == [
        {KEY: "p1", "tumour_seq": 1, "icd10": "C50.911"},
        {KEY: "p1", "tumour_seq": 2, "icd10": "C50.912", "primary_site": "C50.9"},
        {KEY: "p1", "tumour_seq": 3},
    ]
    assert result.notes == Counter({"tumour.icd10: no ICD-10 code of the model's form": 1})


def test_patients_without_a_usable_cancer_are_excluded(tmp_path: Path) -> None:
    hypertension = condition(icd10="I10")
    metastasis = condition(icd10="C78.7")
    no_onset = {k: v for k, v in condition().items() if k != "onsetDateTime"}
    for resources, reason in [
        ((hypertension, metastasis), "patient: no primary cancer condition"),
        ((no_onset,), "patient: no diagnosis date (Condition.onsetDateTime)"),
        ((condition(onset="1990-06"),), "patient: no diagnosis date (Condition.onsetDateTime)"),
    ]:
        result = read(tmp_path, bundle(*resources))
        assert result.rows_read == 1
        assert result.rejected == Counter({reason: 1})
        assert result.data.num_rows() == dict.fromkeys(TABLES, 0)


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
            {KEY: "x1", "sex": "female", "age_at_diagnosis": 61},
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
        ],
        "outcome": [
            {KEY: "x1", "time_origin": "diagnosis", "vital_status": "alive",
             "last_followup_day": 1031, "os_days": 1031, "os_event": 0, "rfs_days": 781,
             "rfs_event": 1},
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
    assert result.notes == Counter({"treatment.type: drug not in the RxNorm map, type other": 1})
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
    ]  # fmt: skip
    for changed, message in cases:
        with pytest.raises(ValueError, match=rf"^patient 1: {message}"):
            write_fhir(changed, tmp_path)
    untreated = CdmData({**data.tables, "tumour": data["tumour"].slice(0, 3)})
    with pytest.raises(ValueError, match=r"^patient 3: a patient without tumour or outcome row"):
        write_fhir(untreated, tmp_path)
