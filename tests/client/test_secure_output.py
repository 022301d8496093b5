"""Secure analyses' reports (pooled tables only, the sites in the sums named) go through the
client's writers and terminal view like plain ones."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from oncofed.client.analysis_output import render_analysis, write_analysis
from oncofed.edge import LocalStore
from oncofed.wire.analysis import AnalysisSpec
from tests.orchestrator.test_secure_rounds import BREAST, RFS, stores  # noqa: F401 (fixture)
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
