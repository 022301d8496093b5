"""``oncofed edge check`` as a site admin runs it, its output piped at 80 columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from oncofed.cdm.tables import CdmData
from oncofed.cli.main import app
from oncofed.edge import EdgeConfig, EdgeHome, EdgePolicy, LocalStore
from tests.support import sample_profile, save_columns

runner = CliRunner()
ENV = {"COLUMNS": "80"}


@pytest.fixture
def home(tmp_path: Path) -> EdgeHome:
    """An enrolled edge (as ``oncofed edge init`` leaves it) with one dataset of 60 patients
    stored as an import stores it."""
    edge = EdgeHome(tmp_path / "edge")
    config = {"orchestrator": "https://fl.example.org", "site": "hospital-a"}
    edge.create(EdgeConfig.model_validate(config), "ofsite_secret")
    edge.identity()
    rng = np.random.default_rng(0)
    save_columns(edge.datasets, "data", {"x1": rng.normal(size=60), "y": rng.integers(0, 2, 60)})
    return edge


def check(home: EdgeHome) -> tuple[int, str]:
    """The exit code, and the output as one line of words (rich wraps at 80 columns)."""
    result = runner.invoke(app, ["edge", "check", "--dir", str(home.root)], env=ENV)
    assert "Traceback" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
    return result.exit_code, " ".join(result.output.split())


def test_a_valid_edge_passes_and_says_what_it_accepts(home: EdgeHome) -> None:
    code, output = check(home)
    assert code == 0, output
    for line in [
        "ok edge.json site hospital-a, orchestrator https://fl.example.org/",
        "ok credential readable by its owner only",
        "ok identity.key fingerprint ",
        f"ok policy.yaml valid (version {home.policy().version}); sets every setting",
        "ok dataset data 60 patients (rows: patient 60, tumour 0, biomarker 0, treatment 0, "
        "outcome 60; extensions ext.x1, ext.y)",
        "What this site accepts (policy.yaml):",
        "task kinds stats, train, evaluate, analysis",
        "model types logistic, mlp, cox, cox_mlp",
        "datasets data (every valid dataset)",
        "cohort at least 20 patients (and training rows) and 11 held-out rows; 1 under secure",
        "training at most 50,000,000 parameters, 1000 rounds, 100 local epochs",
        "secure aggregation optional (a job may ask for it); at least 3 sites",
        "all of an analysis's noise added here (no trusted_peers)",
    ]:
        assert line in output
    assert "error" not in output and "warning" not in output


def test_what_the_policy_narrows_is_what_it_accepts(home: EdgeHome) -> None:
    home.policy_file.write_text(
        "allowed_tasks: [analysis]\nallowed_datasets: [data, registry]\n"
        "require_secure_aggregation: true\nmin_cohort_size: 100\n"
        "privacy_budget: {epsilon_total: 4, epsilon_per_project: 2}\n"
        "trusted_peers: {beta: 66687aadf862bd77, gamma: 0123456789abcdef}\n"
    )
    code, output = check(home)
    assert code == 0, output  # warnings do not fail the check
    every = len(EdgePolicy.model_fields) - 1  # projects are decisions, not settings
    version = home.policy().version
    assert f"valid (version {version}); sets 6 of {every} settings (defaults: the rest)" in output
    assert "warning dataset data fewer patients than min_cohort_size (100)" in output
    assert "task kinds analysis " in output
    assert "datasets data; allowed but not valid here: registry " in output
    assert "secure aggregation required; " in output
    assert "differential privacy optional; budget epsilon 4 in all, 2 per project" in output
    assert "1/3 of an analysis's noise added here (peers pinned)" in output


def test_an_invalid_policy_is_named_by_line_and_setting(home: EdgeHome) -> None:
    home.policy_file.write_text(
        "# hospital-a, agreed with the ethics board\nallowed_tasks: [analysis]\n"
        "min_cohort_size: fifty\nmax_rnds: 10\n"
    )
    code, output = check(home)
    assert code == 1
    assert "error policy.yaml line 3: min_cohort_size: Input should be a valid integer" in output
    assert (
        "error policy.yaml line 4: max_rnds: not a policy setting (did you mean max_rounds?)"
        in output
    )
    assert "This site accepts nothing: it declines every task until policy.yaml is fixed" in output


def test_a_missing_policy_fails_the_check(home: EdgeHome) -> None:
    home.policy_file.unlink()
    code, output = check(home)
    assert code == 1
    assert "error policy.yaml is missing: restore it" in output


def test_a_broken_dataset_fails_the_check_and_the_others_are_checked(home: EdgeHome) -> None:
    store = LocalStore(home.datasets)
    store.save("other", CdmData(), sample_profile("other", patients=0))
    (home.datasets / "data" / "outcome.parquet").write_bytes(b"PAR1 not parquet")
    code, output = check(home)
    assert code == 1
    assert "error dataset data dataset 'data' is damaged" in output
    assert "import it again" in output
    assert "ok dataset other 0 patients" in output
    assert "datasets other (every valid dataset)" in output  # a damaged one is not offered


def test_a_dataset_the_models_rules_now_refuse_fails_the_check(home: EdgeHome) -> None:
    """Stored without passing today's rules (an import by an older version, or edited by
    hand): the check validates it as an import would."""
    ids = pa.array([f"{i:032x}" for i in range(3)])
    data = CdmData(
        {
            "patient": pa.table({"patient_id": ids, "age_at_diagnosis": [50, 150, 60]}),
            "outcome": pa.table({"patient_id": ids, "time_origin": ["diagnosis"] * 3}),
        }
    )
    LocalStore(home.datasets).save("aged", data, sample_profile("aged", patients=3))
    code, output = check(home)
    assert code == 1
    assert "error dataset aged patients that break the model's rules" in output
    assert "patient.age_at_diagnosis: outside 0-120: 1" in output


def test_a_directory_that_is_not_an_edge_fails_the_check(tmp_path: Path) -> None:
    code, output = check(EdgeHome(tmp_path))
    assert code == 1
    assert "error edge.json missing: not an enrolled edge" in output
    assert "error credential cannot be read" in output


def test_settings_that_do_not_validate_are_one_line(home: EdgeHome) -> None:
    (home.root / "edge.json").write_text('{"orchestrator": "fl.example.org", "site": "a"}')
    code, output = check(home)
    assert code == 1
    assert "edge.json is not valid: orchestrator: Input should be a valid URL" in output
