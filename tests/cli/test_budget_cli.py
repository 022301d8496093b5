"""``oncofed edge budget``: what the site spent, by project and charge, at 80 columns, and as
JSON for scripts; the same after the edge restarts (the ledger is read again)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from oncofed.cli.main import app
from oncofed.edge import EdgeConfig, EdgeHome
from oncofed.edge.budget import Budget, Charge
from oncofed.edge.ledger import Ledger
from oncofed.privacy import accounting

runner = CliRunner()


def home_with_charges(root: Path) -> EdgeHome:
    home = EdgeHome(root)
    home.create(EdgeConfig.model_validate({"orchestrator": "http://orch.test", "site": "a"}), "c")
    policy = yaml.safe_load(home.policy_file.read_text()) or {}
    policy["privacy_budget"] = {"epsilon_total": 4.0, "epsilon_per_project": 3.0}
    home.policy_file.write_text(yaml.safe_dump(policy))
    step = accounting.dpsgd_rdp(0.2, 3.0, 20)
    with Ledger(home.root) as ledger:
        budget = Budget(ledger, home.identity(), "a")
        limits = home.policy().privacy_budget
        for number, (job, project) in enumerate(
            [
                ("job-one", "breast-cancer-recurrence-study"),
                ("job-one", "breast-cancer-recurrence-study"),
                ("job-two", "p2"),
            ]
        ):
            budget.charge(Charge(f"t{number}", job, project, "train", number + 1, step), limits)
    return home


def test_the_budget_is_listed_by_project_and_charge_at_80_columns(tmp_path: Path) -> None:
    home = home_with_charges(tmp_path / "edge")
    result = runner.invoke(app, ["edge", "budget", "--dir", str(home.root)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert all(len(line) <= 80 for line in out.splitlines())
    words = " ".join(out.split())
    assert "of 4 in all, at most 3 per project" in words
    assert "breast-cancer-" in words and "p2 / job-two" in words  # a long name folds
    assert words.count("train 1") == 1 and "train 3" in words


def test_json_gives_the_figures_and_every_charge(tmp_path: Path) -> None:
    home = home_with_charges(tmp_path / "edge")
    result = runner.invoke(app, ["edge", "budget", "--dir", str(home.root), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["limits"]["epsilon_total"] == 4.0
    assert [c["job"] for c in document["charges"]] == ["job-one", "job-one", "job-two"]
    one = accounting.epsilon(accounting.dpsgd_rdp(0.2, 3.0, 20), 1e-5)
    two = accounting.epsilon(2 * accounting.dpsgd_rdp(0.2, 3.0, 20), 1e-5)
    assert document["charges"][0]["epsilon"] == one
    projects = document["spent"]["projects"]
    assert abs(projects["breast-cancer-recurrence-study"] - two) < 1e-9 and projects["p2"] == one
    assert one < document["spent"]["total"] < 3 * one
