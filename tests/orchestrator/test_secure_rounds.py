"""Secure rounds end to end in one process: the real coordinator (SQLite and PostgreSQL) and
four sites with the real runner, ledger and secure sessions, on GBSG2 dealt out as the demo
deals it. A secure job gives what the plain one gives, and the orchestrator keeps only sums."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oncofed.demo.data import site_tables
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisSpec, RegressionReport, SurvivalReport
from oncofed.wire.spec import JobSpec
from tests.sites import Site, enrol, import_gbsg2, play, sites
from tests.support import State

NAMES = {"north": "alpha", "south": "beta", "east": "gamma", "west": "delta"}
BREAST = {"primary_site": "C50", "time_origin": "diagnosis"}
RFS = {"time": "rfs_days", "event": "rfs_event"}
SECURE = {"privacy": {"secure_aggregation": True}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocalStore]:
    """The demo's four hospitals (247, 192, 144 and 103 patients) as alpha to delta."""
    tables = {NAMES[demo]: table for demo, table in site_tables().items()}
    return import_gbsg2(tmp_path_factory.mktemp("sites"), tables)


@pytest.fixture(params=[11], ids=["threshold-11"])
def four(
    request: pytest.FixtureRequest, state: State, stores: dict[str, LocalStore], tmp_path: Path
) -> Iterator[dict[str, Site]]:
    """The four sites, with the policy's small-cell threshold of the test's parameter."""
    enrol(state, ["gamma", "delta"])
    policy = EdgePolicy(small_cell_threshold=request.param)
    with ExitStack() as stack:
        yield sites(state, stores, stack, tmp_path / "edges", policy)


def analysis(body: dict[str, Any], **extra: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {"name": "a", "dataset": "gbsg2", "cohort": BREAST, "analysis": body, **extra}
    )


def training(**extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "t",
            "dataset": "gbsg2",
            "cohort": BREAST,
            "features": ["age_at_diagnosis", {"name": "tumour_size_mm", "transform": "log1p"},
                         "treatment.endocrine"],
            "outcome": {"type": "binary", "time": "rfs_days", "event": "rfs_event",
                        "horizon_days": 1825},
            "model": {"type": "logistic"},
            "rounds": 3,
            "local": {"epochs": 1, "batch_size": 32, "lr": 0.05},
            **extra,
        }
    )  # fmt: skip


@pytest.mark.parametrize("four", [1], indirect=True, ids=["threshold-1"])
def test_secure_kaplan_meier_equals_the_plain_one(state: State, four: dict[str, Site]) -> None:
    """Without suppression (threshold 1) both are the exact pooled curves."""
    km = {"type": "kaplan_meier", "outcome": RFS, "group": "grade", "grid_days": 30}
    plain = play(state, four, analysis(km))
    secure = play(state, four, analysis(km, **SECURE))
    assert secure.status == "completed", secure.error
    assert [r.secure for r in secure.rounds] == [True]
    assert isinstance(plain.report, SurvivalReport) and isinstance(secure.report, SurvivalReport)
    assert secure.report.secure_sites == ["alpha", "beta", "delta", "gamma"]
    assert secure.report.groups.keys() == plain.report.groups.keys() == {"G1", "G2", "G3"}
    for group, curve in secure.report.groups.items():
        assert curve == plain.report.groups[group]
    assert secure.report.logrank == plain.report.logrank


def test_secure_training_equals_the_plain_job(state: State, four: dict[str, Site]) -> None:
    plain = play(state, four, training())
    secure = play(state, four, training(**SECURE))
    assert plain.status == secure.status == "completed", secure.error
    assert [r.kind for r in secure.rounds] == ["stats", "train", "train", "train", "evaluate"]
    assert all(r.secure for r in secure.rounds)
    ours = tensors.decode(state.coordinator.blobs.read(secure.model_sha256 or ""))
    theirs = tensors.decode(state.coordinator.blobs.read(plain.model_sha256 or ""))
    for name, weights in ours.items():
        np.testing.assert_allclose(weights, theirs[name], atol=1e-6)
    assert secure.rounds[-1].metrics["auc"] == pytest.approx(plain.rounds[-1].metrics["auc"])


def test_a_secure_regression_equals_the_plain_one(state: State, four: dict[str, Site]) -> None:
    cox = {"type": "cox", "outcome": RFS, "covariates": [
        "age_at_diagnosis", {"name": "tumour_size_mm", "transform": "log1p"},
        {"name": "nodes_positive", "transform": "log1p"}, "treatment.endocrine"]}  # fmt: skip
    plain = play(state, four, analysis(cox))
    secure = play(state, four, analysis(cox, **SECURE))
    assert secure.status == "completed", secure.error
    assert isinstance(plain.report, RegressionReport)
    assert isinstance(secure.report, RegressionReport)
    for mine, theirs in zip(secure.report.terms, plain.report.terms, strict=True):
        assert mine.coef == pytest.approx(theirs.coef, rel=1e-9, abs=1e-12)
        assert mine.se == pytest.approx(theirs.se, rel=1e-9)
    # each site fitted its own model on its rows and sent the fit in the clear: the per-site
    # terms of the plain loop, which ran every site's own fit at the orchestrator
    assert secure.report.sites.keys() == plain.report.sites.keys() == set(four)
    for site, terms in plain.report.sites.items():
        for mine, theirs in zip(secure.report.sites[site], terms, strict=True):
            assert mine.name == theirs.name
            for field in ("coef", "se", "lower", "upper", "z", "p", "ratio"):
                assert getattr(mine, field) == pytest.approx(getattr(theirs, field), rel=1e-9,
                                                             abs=1e-12)  # fmt: skip
    for mine, theirs in zip(secure.report.heterogeneity, plain.report.heterogeneity, strict=True):
        assert (mine.name, mine.df) == (theirs.name, theirs.df) == (mine.name, 3)
        assert mine.q == pytest.approx(theirs.q, rel=1e-9)
        assert mine.i2 == pytest.approx(theirs.i2, rel=1e-9, abs=1e-12)
