"""``oncofed model show``: what a model file expects, whole at 80 columns and piped; its
metadata as JSON; a file that is no model is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from oncofed.cli.main import app
from oncofed.client import ModelMetadata, load_model
from tests.client.test_load_model import written

runner = CliRunner()
ENV = {"COLUMNS": "80"}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return written(tmp_path)


def test_show_says_what_the_model_expects_within_80_columns(model: Path) -> None:
    result = runner.invoke(app, ["model", "show", str(model)], env=ENV)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.output
    metadata = load_model(model).metadata
    words = " ".join(result.output.split())
    assert "model cox_mlp (survival); layers 8 → 16 → 1, dropout 0.1" in words
    assert "outcome survival: time rfs_days, event rfs_event" in words
    assert f"spec sha256 {metadata.spec_sha256}" in words  # whole, on one line
    assert f"job id {metadata.job_id}" in words and "written by oncofed 0.1.0" in words
    assert "predicts risk score (log relative hazard" in words
    scaling = metadata.standardization
    assert (
        f"2 tumour_size_mm log1p; mean {scaling.mean[1]!r}, sd {scaling.std[1]!r}" in words
    )  # every digit: the exact numbers the model scales by
    assert "3 grade one-hot: G1 (reference), G2, G3" in words
    assert "7 treatment.endocrine none; mean" in words


def test_a_binary_models_outcome_and_prediction(tmp_path: Path) -> None:
    model = written(tmp_path, "gbsg2_recurrence_5y.yaml")
    result = runner.invoke(app, ["model", "show", str(model)], env=ENV)
    words = " ".join(result.output.split())
    assert "model logistic (binary); layers 8 → 1" in words
    assert "outcome binary: rfs_event by day 1825 of rfs_days" in words
    assert "predicts probability of the outcome" in words


def test_show_json_prints_the_metadata(model: Path) -> None:
    result = runner.invoke(app, ["model", "show", str(model), "--json"], env=ENV)
    assert result.exit_code == 0, result.output
    shown = ModelMetadata.model_validate(json.loads(result.output))
    assert shown == load_model(model).metadata


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a model", "not a safetensors file"),
        (None, "cannot be read"),
    ],
)
def test_a_file_that_is_no_model_is_refused_in_one_line(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.safetensors"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(app, ["model", "show", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = result.output.splitlines()
    assert line.startswith(f"error: {path}: {message}")
