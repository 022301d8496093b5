"""An import's local list of the patients it left out: every reason, never published."""

from __future__ import annotations

import csv
import json
import stat
from importlib import resources
from pathlib import Path

from oncofed.edge.importing import Source, import_source
from oncofed.edge.store import LocalStore

EXAMPLE = Path(str(resources.files("oncofed.cdm") / "examples" / "csv"))
FHIR_FIXTURES = Path(__file__).parents[1] / "cdm" / "mcode"


def test_a_rejected_patient_is_listed_locally_with_every_reason(tmp_path: Path) -> None:
    rows = (EXAMPLE / "patients.csv").read_text().splitlines()
    cells = rows[2].split(",")  # data row 2
    cells[5], cells[6] = "x", "9"  # size_cm not a number, grade outside the value map
    rows[2] = ",".join(cells)
    source = tmp_path / "patients.csv"
    source.write_text("\n".join(rows) + "\n")
    store = LocalStore(tmp_path / "datasets")
    report = import_source(
        store, "ex", Source("csv", str(source), EXAMPLE / "mapping.yaml"), threshold=11
    )
    assert report.rejected_list == store.rejections_path("ex")
    with report.rejected_list.open(newline="") as listed:
        assert list(csv.reader(listed)) == [
            ["source_key", "where", "reasons"],
            ["2", "patients.csv, data row 2",
             "tumour.tumour_size_mm: not a number; tumour.grade: not an allowed value"],
        ]  # fmt: skip
    assert stat.S_IMODE(report.rejected_list.stat().st_mode) == 0o600
    assert report.profile.rejected  # counted once, by the first reason, in the report ...
    assert "data row" not in report.profile.model_dump_json()  # ... which names no one
    assert store.load("ex")["patient"].num_rows == 3


def test_an_import_that_leaves_no_one_out_has_an_empty_list(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "datasets")
    source = Source("csv", str(EXAMPLE / "patients.csv"), EXAMPLE / "mapping.yaml")
    report = import_source(store, "ex", source, threshold=11)
    assert report.rejected_list is not None
    assert report.rejected_list.read_text().splitlines() == ["source_key,where,reasons"]


def test_an_omop_import_lists_the_persons_it_left_out(tmp_path: Path) -> None:
    example = EXAMPLE.parent / "omop"
    store = LocalStore(tmp_path / "datasets")
    report = import_source(store, "ex", Source("omop", str(example)), threshold=11)
    assert report.rejected_list is not None
    with report.rejected_list.open(newline="") as file:
        listed = list(csv.DictReader(file))
    assert [(row["source_key"], row["where"]) for row in listed] == [
        ("2", "measurement table"), ("3", "person table"), ("4", "measurement table"),
        ("5", "measurement table"),
    ]  # fmt: skip
    assert listed[1]["reasons"] == "condition_occurrence: no primary cancer condition"


def test_a_fhir_import_lists_whom_the_importer_and_validation_left_out(tmp_path: Path) -> None:
    """every-reason.json: two patients the importer excludes and one it keeps; a second
    bundle's patient, born in 1800, passes the importer and fails validation (age over 120)."""
    folder = tmp_path / "bundles"
    folder.mkdir()
    text = (FHIR_FIXTURES / "every-reason.json").read_text()
    (folder / "a.json").write_text(text)
    bundle = json.loads(text)
    kept = [e for e in bundle["entry"] if e["resource"]["id"] in ("kept", "c-kept")]
    bundle["entry"] = json.loads(json.dumps(kept).replace("kept", "old"))
    bundle["entry"][0]["resource"]["birthDate"] = "1800-01-01"
    (folder / "b.json").write_text(json.dumps(bundle))
    store = LocalStore(tmp_path / "datasets")
    report = import_source(store, "ex", Source("fhir", str(folder)), threshold=11)
    assert report.rejected_list is not None
    with report.rejected_list.open(newline="") as file:
        listed = [(row["source_key"], row["where"], row["reasons"]) for row in csv.DictReader(file)]
    assert listed == [
        ("three-rules", "a.json: entry 0 (Patient)", "biomarker.day: partial date; "
         "tumour.grade: code not interpretable; patient.age_at_diagnosis: birth after diagnosis"),
        ("one-rule", "a.json: entry 4 (Patient)", "outcome.os_days: partial date"),
        ("old", "b.json: entry 0 (Patient)", "patient.age_at_diagnosis: outside 0-120"),
    ]  # fmt: skip
    assert store.load("ex")["patient"].num_rows == 1


def test_snomed_body_sites_and_year_only_birth_dates_keep_every_patient(tmp_path: Path) -> None:
    """An mCODE export as producers send it: SNOMED CT body sites, birth years only (after
    de-identification). Every patient is stored (the one whose qualifier contradicts its
    body site's side aside), each with an age and every site the crosswalk names."""
    bundle = json.loads((FHIR_FIXTURES / "snomed-body-sites.json").read_text())
    conflict = ("side-conflict", "c-conflict")
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["id"] not in conflict]
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["birthDate"] = "1950"
    source = tmp_path / "export.json"
    source.write_text(json.dumps(bundle))
    store = LocalStore(tmp_path / "datasets")
    report = import_source(store, "ex", Source("fhir", str(source)), threshold=11)
    data = store.load("ex")
    assert data["patient"].num_rows == 6 and report.profile.rejected == {}
    assert data["patient"]["age_at_diagnosis"].null_count == 0
    sites = sorted(s for s in data["tumour"]["primary_site"].to_pylist() if s is not None)
    assert sites == ["C18.7", "C34.9", "C50.4", "C50.9"]  # aorta and a local code: missing
