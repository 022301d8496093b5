"""Projects end to end from the command line: a researcher declares one, each site's admin
approves or declines it at the edge (recorded in its policy file, then at the orchestrator
with the policy version), and everyone reads the decisions as written, at 80 columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from oncofed.cli.main import app
from oncofed.edge import EdgeConfig, EdgeHome
from oncofed.edge.config import read_policy
from oncofed.orchestrator.setup import add_principal
from tests.cli.test_cli import served  # noqa: F401 (a fixture)
from tests.support import State, save_columns

runner = CliRunner()
HOSTILE = "[link=https://evil.test]click[/link] \x1b]8;;https://evil.test\x07x\x1b]8;;\x07"


def oncofed(*args: str, token: str = "", url: str = "") -> tuple[int, str]:
    env = {"ONCOFED_URL": url, "ONCOFED_TOKEN": token, "COLUMNS": "80"}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def edge(tmp_path: Path, url: str, state: State, site: str) -> Path:
    home = EdgeHome(tmp_path / site)
    config = EdgeConfig.model_validate({"orchestrator": url, "site": site})
    home.create(config, state.credentials[site])
    home.policy_file.write_text("# our board's limits\nmin_cohort_size: 20\n")
    rng = np.random.default_rng(0)
    save_columns(home.datasets, "registry", {"x1": rng.normal(size=40)})
    return home.root


def test_declare_approve_decline_and_read(
    tmp_path: Path,
    served: str,  # noqa: F811
    state: State,
) -> None:
    rita = add_principal(state.home, "rita", "researcher").token
    declared = tmp_path / "project.yaml"
    declared.write_text(
        yaml.safe_dump(
            {
                "name": "study",
                "title": HOSTILE,
                "purpose": "Recurrence after surgery.",
                "principal_investigator": "Dr P",
                "members": [],
                "scope": {"kinds": ["analysis"], "analyses": ["summary"], "fields": ["ext.x1"]},
            }
        )
    )
    code, out = oncofed("project", "create", str(declared), token=rita, url=served)
    assert code == 0, out
    alpha, beta = edge(tmp_path, served, state, "alpha"), edge(tmp_path, served, state, "beta")

    code, out = oncofed("edge", "approve", "study", "--dataset", "registry", "--dir", str(alpha))
    assert code == 0, out
    policy = read_policy(alpha / "policy.yaml")
    assert (alpha / "policy.yaml").read_text().startswith("# our board's limits\n")
    assert policy.projects["study"].dataset == "registry"
    assert f"policy version {policy.version}" in out
    code, out = oncofed("edge", "approve", "study", "--dataset", "nowhere", "--dir", str(beta))
    assert code == 1 and "no dataset 'nowhere'" in out
    code, out = oncofed("edge", "decline", "study", "--reason", HOSTILE, "--dir", str(beta))
    assert code == 0, out

    code, out = oncofed("project", "show", "study", token=rita, url=served)
    assert code == 0, out
    assert "\x1b" not in out and "[link=https://evil.test]click[/link]" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ ")}
    assert "approved" in rows["alpha"] and policy.version in rows["alpha"]
    assert "declined" in rows["beta"]
    code, out = oncofed("edge", "projects", "--dir", str(alpha))
    assert code == 0 and "study" in out and "approved" in out
    code, out = oncofed("project", "list", token=rita, url=served)
    assert code == 0 and "study" in out
