"""``oncofed edge import`` and ``oncofed edge datasets`` as a site admin uses them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from oncofed.cli.main import app
from oncofed.edge import EdgeConfig, EdgeHome, LocalStore

runner = CliRunner()
EXAMPLES = Path(str(resources.files("oncofed.cdm") / "examples"))
ENV = {"COLUMNS": "200"}


def test_import_stores_the_dataset_and_prints_its_report(tmp_path: Path) -> None:
    csv = EXAMPLES / "csv"
    args = ["edge", "import", str(csv / "patients.csv"), "--dir", str(tmp_path / "edge")]
    result = runner.invoke(
        app,
        [*args, "--name", "ex", "--from", "csv", "--mapping", str(csv / "mapping.yaml")],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    assert "<11 rows read" in result.output and "<11 patients" in result.output  # 4: small
    assert "never a row" in result.output
    data = LocalStore(tmp_path / "edge" / "datasets").load("ex")
    assert data["patient"].num_rows == 4
    listed = runner.invoke(app, ["edge", "datasets", "--dir", str(tmp_path / "edge")], env=ENV)
    assert listed.exit_code == 0 and "ex" in listed.output and "csv" in listed.output


@pytest.mark.parametrize(("source", "what"), [("omop", "omop"), ("fhir", "fhir")])
def test_import_of_the_shipped_omop_and_fhir_examples(
    tmp_path: Path, source: str, what: str
) -> None:
    result = runner.invoke(
        app,
        ["edge", "import", str(EXAMPLES / source), "--dir", str(tmp_path), "--name", "ex",
         "--from", what],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    store = LocalStore(tmp_path / "datasets")
    assert store.profile("ex").source_format == what
    left_out = store.rejections_path("ex").read_text().splitlines()[1:]
    assert len(left_out) == {"omop": 4, "fhir": 3}[source]  # the examples' planted problems
    assert f"never sent): {store.rejections_path('ex')}" in result.output.replace("\n", "")


PLANTED = {
    "email": (["ann@example.org", "bob@example.com", "cy@example.net"], "e-mail address"),
    "date_of_birth": (["1950-03-12", "1960-02-29", "1945-07-01"], "calendar date"),
    "mrn": (["MRN00123456", "MRN00123457", "MRN00123458"], "medical record number"),
    "contact": (["ann@example.org", "bob@example.com", "cy@example.net"], "e-mail address"),
    "ref": (["MRN00123456", "MRN00123457", "MRN00123458"], "medical record number"),
}


@pytest.mark.parametrize("column", sorted(PLANTED))
def test_a_planted_identifier_is_refused_and_nothing_is_stored(tmp_path: Path, column: str) -> None:
    values, rule = PLANTED[column]
    csv = tmp_path / "export.csv"
    pd.DataFrame({"age": [50, 60, 70], column: values}).to_csv(csv, index=False)
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "fields": {"age_at_diagnosis": "age"},
                "extensions": {"extra": {"column": column, "values": {v: "x" for v in values}}},
            }
        )
    )
    edge = tmp_path / "edge"
    result = runner.invoke(
        app,
        ["edge", "import", str(csv), "--dir", str(edge), "--name", "ex", "--from", "csv",
         "--mapping", str(mapping)],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    assert f"column '{column}' refused ({rule})" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert LocalStore(edge / "datasets").names() == []


def test_a_mapping_mistake_names_its_line(tmp_path: Path) -> None:
    csv = tmp_path / "export.csv"
    pd.DataFrame({"age": [50], "tgrade": ["II"]}).to_csv(csv, index=False)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("version: 1\nfields:\n  age_at_diagnosis: age\n  grade: {column: tgrad}\n")
    result = runner.invoke(
        app,
        ["edge", "import", str(csv), "--dir", str(tmp_path / "e"), "--name", "ex", "--from",
         "csv", "--mapping", str(mapping)],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "map.yaml, line 4, fields.grade.column: column 'tgrad' is not in export.csv" in output


def test_csv_without_a_mapping_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["edge", "import", "x.csv", "--dir", str(tmp_path), "--name", "ex", "--from", "csv"],
        env=ENV,
    )
    assert result.exit_code == 1
    assert "--from csv needs a mapping file" in result.output


def test_an_import_where_every_patient_fails_keeps_the_earlier_one(tmp_path: Path) -> None:
    csv = tmp_path / "export.csv"
    pd.DataFrame({"age": [50, 60, 70]}).to_csv(csv, index=False)
    good = tmp_path / "good.yaml"
    good.write_text(
        "version: 1\nfields:\n  age_at_diagnosis: age\n  time_origin: {constant: diagnosis}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text() + "  ecog: age\n")  # ECOG is 0-5: every patient fails
    edge = tmp_path / "edge"
    common = ["edge", "import", str(csv), "--dir", str(edge), "--name", "ex", "--from", "csv"]
    assert runner.invoke(app, [*common, "--mapping", str(good)], env=ENV).exit_code == 0
    failed = runner.invoke(app, [*common, "--mapping", str(bad)], env=ENV)
    output = " ".join(failed.output.split())
    assert failed.exit_code == 1, failed.output
    assert "no patient passed validation" in output and "earlier import of 'ex' is kept" in output
    assert "(tumour.ecog: outside 0-5: 3)" in output  # exact counts: the admin's own screen
    store = LocalStore(edge / "datasets")
    assert store.load("ex")["patient"].num_rows == 3
    refused = store.refused_path("ex")
    assert f"everypatient,witheveryreason:{refused}" in output.replace(" ", "")
    assert refused.read_text().splitlines()[1:] == [
        f'{row},"export.csv, data row {row}",tumour.ecog: outside 0-5' for row in (1, 2, 3)
    ]
    assert runner.invoke(app, [*common, "--mapping", str(good)], env=ENV).exit_code == 0
    assert not refused.exists()  # a later import replaced the refused one


def test_the_file_must_fit_the_format(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["edge", "import", "x.parquet", "--dir", str(tmp_path), "--name", "ex", "--from", "csv",
         "--mapping", "m.yaml"],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--from csv expects a .csv file" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (None, "policy.yaml is missing: restore it"),
        ("small_cell_threshold: five\n", "policy.yaml line 1: small_cell_threshold: Input"),
    ],
)
def test_an_enrolled_edge_imports_only_under_its_valid_policy(
    tmp_path: Path, policy: str | None, error: str
) -> None:
    """The report's small-cell threshold comes from the policy: once the edge is enrolled, a
    deleted or broken policy stops the import, never the defaults in its place."""
    edge = EdgeHome(tmp_path / "edge")
    edge.create(EdgeConfig.model_validate({"orchestrator": "http://o.test", "site": "a"}), "c")
    if policy is None:
        edge.policy_file.unlink()
    else:
        edge.policy_file.write_text(policy)
    csv = EXAMPLES / "csv"
    result = runner.invoke(
        app,
        ["edge", "import", str(csv / "patients.csv"), "--dir", str(edge.root), "--name", "ex",
         "--from", "csv", "--mapping", str(csv / "mapping.yaml")],
        env=ENV,
    )  # fmt: skip
    assert result.exit_code == 1
    assert error in " ".join(result.output.split())
    assert LocalStore(edge.datasets).names() == []
