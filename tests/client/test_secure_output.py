"""Secure analyses' reports (pooled tables only, the sites in the sums named) go through the
client's writers and terminal view like plain ones; a secure training job's metrics are shown
pooled only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from oncofed.cli.watch import render_job
from oncofed.client.analysis_output import render_analysis, write_analysis
from oncofed.client.plots import write_result
from oncofed.client.report import POOLED_ONLY
from oncofed.edge import LocalStore
from oncofed.wire.analysis import AnalysisSpec
from tests.orchestrator.test_secure_rounds import (  # noqa: F401 (stores: a fixture)
    BREAST,
    RFS,
    stores,
    training,
)
from tests.sites import Site, enrol, play, sites
from tests.support import State

SECURE = {"privacy": {"secure_aggregation": True}}
ANALYSES: list[dict[str, Any]] = [
    {"type": "counts", "rows": "grade", "columns": "treatment.endocrine"},
    {"type": "summary", "variable": "age_at_diagnosis", "bins": [20, 40, 50, 60, 70, 90]},
    {"type": "kaplan_meier", "outcome": RFS, "group": "grade", "grid_days": 90},
    {"type": "cox", "outcome": RFS, "covariates": ["age_at_diagnosis", "treatment.endocrine"]},
]


@pytest.fixture
def four(
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
    tmp_path: Path,
) -> Iterator[dict[str, Site]]:
    enrol(state, ["gamma", "delta"])
    with ExitStack() as stack:
        yield sites(state, stores, stack, tmp_path / "edges")


@pytest.mark.parametrize("analysis", ANALYSES, ids=lambda a: a["type"])
def test_a_secure_report_is_written_and_shown(
    state: State, four: dict[str, Site], analysis: dict[str, Any], tmp_path: Path
) -> None:
    spec = AnalysisSpec.model_validate(
        {"name": "s", "dataset": "gbsg2", "cohort": BREAST, "analysis": analysis, **SECURE}
    )
    job = play(state, four, spec)
    assert job.status == "completed", job.error
    assert job.report is not None and job.report.secure_sites == sorted(four)
    written = write_analysis(job.report, job.name, tmp_path / "out")
    assert written and all(path.stat().st_size > 0 for path in written)
    console = Console(width=80, record=True)
    console.print(render_analysis(job.report))
    shown = console.export_text()
    assert "securely aggregated over: alpha, beta, delta, gamma" in shown
    assert all(len(line) <= 80 for line in shown.splitlines())


PRIVATE: list[dict[str, Any]] = [
    {"type": "counts", "rows": "grade"},
    {"type": "summary", "variable": "age_at_diagnosis", "bins": [20, 40, 50, 60, 70, 90]},
    {"type": "kaplan_meier", "outcome": RFS, "grid_days": 180, "horizon_days": 2160},
    {"type": "logistic", "outcome": {"label": "os_event"},
     "covariates": ["age_at_diagnosis", "treatment.endocrine"]},
]  # fmt: skip


@pytest.mark.parametrize("analysis", PRIVATE, ids=lambda a: a["type"])
def test_a_private_report_says_its_noise_and_each_sites_epsilon(
    state: State, four: dict[str, Site], analysis: dict[str, Any], tmp_path: Path
) -> None:
    dp = {"epsilon": 4.0, "bounds": {"age_at_diagnosis": [20, 80]}}
    privacy = {"secure_aggregation": True, "differential_privacy": dp}
    if analysis["type"] != "logistic":
        dp.pop("bounds")
    spec = AnalysisSpec.model_validate(
        {"name": "p", "dataset": "gbsg2", "cohort": BREAST, "analysis": analysis,
         "privacy": privacy}
    )  # fmt: skip
    job = play(state, four, spec)
    assert job.status == "completed", job.error
    assert job.report is not None and job.report.noise is not None
    written = write_analysis(job.report, job.name, tmp_path / "out")
    assert written and all(path.stat().st_size > 0 for path in written)
    console = Console(width=80, record=True)
    console.print(render_analysis(job.report, job.participation))
    shown = console.export_text()
    assert "differentially private: epsilon 4 (delta 1e-05) at each site; noise of s.d." in shown
    assert shown.count("epsilon 4.00 spent") == 4  # each site's, in the sites table
    assert "patients in the result: about " in shown and "(a noisy count" in shown
    if analysis["type"] == "logistic":
        assert "no log-likelihood (differential privacy)" in shown
    assert all(len(line) <= 80 for line in shown.splitlines())


def test_a_secure_training_job_shows_its_metrics_pooled_only(
    state: State, four: dict[str, Site], tmp_path: Path
) -> None:
    """No site's own held-out metrics are known: the live view has no column per site and says
    so, and the report's final metrics are the pooled ones with the same note."""
    job = play(state, four, training(**SECURE))
    assert job.status == "completed", job.error
    console = Console(width=100, record=True)
    console.print(render_job(job))
    shown = console.export_text()
    assert POOLED_ONLY in " ".join(shown.replace("│", " ").split())
    metrics, _, states = shown.partition("┃ site ")  # the metrics table, then the sites'
    assert not any(site in metrics for site in four)  # no column of a site's own metrics
    assert all(f"{site} │ took part" in " ".join(states.split()) for site in four)
    model = state.coordinator.blobs.read(job.model_sha256 or "")
    report = json.loads(write_result(job, model, tmp_path / "out")["report"].read_text())
    final = job.rounds[-1]
    assert report["final"] == {
        "pooled": final.metrics,
        "pooled_rows": final.metric_rows,
        "notes": final.notes,
        "sites": {},
        "note": POOLED_ONLY,
    }
    assert final.metric_rows["auc"] == final.metric_rows["log_loss"] > 0
    assert report["final"]["pooled"].keys() >= {"auc", "log_loss"}
    assert all(not m for row in report["rounds"] for m in row["site_metrics"].values())
