"""bench/many_sites.py keeps working: its simulation, at 5 sites, runs the counts analysis
against a real orchestrator process to completion."""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def many_sites(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The benchmark module, imported as ``make bench`` runs it (bench/ on the path)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("many_sites")


def test_five_sites_complete_a_counts_analysis_and_a_training_job(
    many_sites: ModuleType, tmp_path: Path
) -> None:
    began = time.monotonic()
    simulation = many_sites.simulate(tmp_path, sites=5, jobs=("counts", "small"))
    run = asyncio.run(asyncio.wait_for(simulation, timeout=60))  # stops the orchestrator too
    assert time.monotonic() - began < 30
    counts, small = run.jobs
    assert (counts.job, counts.status, counts.error) == ("counts", "completed", None)
    assert counts.accepted == 5  # every simulated site's answer is in the result
    assert counts.posted == 5 and counts.rejected == counts.errors == 0
    assert 0 < counts.wall_s < 30
    assert (small.job, small.status, small.accepted) == ("small", "completed", 5)
    rounds = len(small.rounds)  # statistics, training and evaluation rounds
    assert small.posted == 5 * rounds and small.rejected == small.errors == 0
    assert small.answers == 5 * (rounds - 1)  # each came back with the next round's task
    # one request a round: every task came with an ack, the first with the counts job's last
    assert small.handed == 5 * rounds and small.polls == 0
    assert small.answer_p99_s >= small.answer_p50_s > 0
    assert counts.orchestrator_peak_bytes > 0 and run.orchestrator_vmhwm_bytes > 0
    assert [step.requests for step in run.setup] == [5, 5, 5, 5, 5]  # create .. approve
