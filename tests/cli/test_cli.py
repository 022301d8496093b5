"""CLI behaviour that needs no running federation: clean errors, operator commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from oncofed.cli.main import app

runner = CliRunner()


def test_invalid_spec_names_the_field_without_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: x\ndataset: d\nfeatures: [age]\n"
        "outcome: {type: binary, label: y}\nmodel: {type: forest}\n"
    )
    result = runner.invoke(
        app,
        ["job", "submit", str(spec)],
        env={"ONCOFED_URL": "http://127.0.0.1:9", "ONCOFED_TOKEN": "t"},
    )
    assert result.exit_code == 1
    assert "model.type" in result.output and "Traceback" not in result.output


def test_unreachable_orchestrator_is_a_clean_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["site", "list", "--url", "http://127.0.0.1:9", "--token", "t"])
    assert result.exit_code == 1 and "cannot reach the orchestrator" in result.output


def test_operator_init_site_add_and_token(tmp_path: Path) -> None:
    home = tmp_path / "orch"
    init = runner.invoke(app, ["orchestrator", "init", "--dir", str(home)])
    assert init.exit_code == 0 and "ofadm_" in init.output
    again = runner.invoke(app, ["orchestrator", "init", "--dir", str(home)])
    assert again.exit_code == 1 and "initialised already" in again.output
    site = runner.invoke(app, ["site", "add", "hospital-a", "--dir", str(home)])
    assert site.exit_code == 0 and "ofenr_" in site.output
    dup = runner.invoke(app, ["site", "add", "hospital-a", "--dir", str(home)])
    assert dup.exit_code == 1 and "exists already" in dup.output
    token = runner.invoke(app, ["orchestrator", "token", "rita", "--dir", str(home)])
    assert token.exit_code == 0 and "ofres_" in token.output


@pytest.mark.parametrize(
    ("token", "message"),
    [("ofenr_x", "not an enrolment token"), ("ofenr_" + "x" * 40, "cannot reach")],
)
def test_edge_init_errors_are_clean_and_leave_no_credential(
    tmp_path: Path, token: str, message: str
) -> None:
    edge = tmp_path / "e"
    args = ["edge", "init", "--dir", str(edge), "--orchestrator", "http://127.0.0.1:9"]
    result = runner.invoke(app, [*args, "--token", token])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (edge / "credential").exists()
