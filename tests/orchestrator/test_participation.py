"""Every site's state in a job, worked out once by the orchestrator from its task records: took
part with its counts, suppressed (an answer with nothing in it), declined with the reason,
expired, failed; and an analysis' pooled n beside the cohort sizes its sites reported."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import numpy as np
import pytest

from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import TaskRunner
from oncofed.orchestrator.participation import MAX_REASON
from oncofed.wire.analysis import CountsReport, RegressionReport, SurvivalReport
from oncofed.wire.base import Evaluation
from oncofed.wire.messages import IN_RESULT, EvaluateResult, JobPublic, SiteState
from tests.orchestrator.test_analysis import (  # noqa: F401 (stores: a fixture)
    BREAST,
    COVARIATES,
    RFS,
    _play,
    run,
    spec,
    stores,
)
from tests.orchestrator.test_rounds import (
    _expire_open_rounds,
    held_out,
    post_update,
    take,
    through_stats,
    weights_like,
)
from tests.sites import job
from tests.support import SITE_KEY, State, make_spec

ALPHA, BETA = 439, 247  # the patients in each site's cohort (GBSG2 split unequally)


def states(public: JobPublic) -> dict[str, SiteState]:
    return {site: status.state for site, status in public.participation.sites.items()}


def test_a_training_site_took_part_with_its_rows_or_expired(state: State) -> None:
    """Alpha's update in round 1 is refused, yet it evaluates the final model: it took part
    with its rows, and the note says which round it is not in. Beta misses the last deadline."""
    created = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    waiting = job(state, created.id).participation.sites["alpha"]
    assert waiting.state == SiteState.WAITING
    assert waiting.reason == "round 0 (stats) not answered yet"
    through_stats(state, created.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    nan = {k: np.full_like(v, np.nan) for k, v in weights_like(0.0).items()}
    assert post_update(state, "alpha", a, nan, 30)[0] == "rejected"
    assert post_update(state, "beta", b, weights_like(1.0), 10)[0] == "accepted"
    take(state, "beta")
    evaluate = take(state, "alpha")
    assert evaluate.kind == "evaluate"
    state.coordinator.accept_result(
        state.sites["alpha"], evaluate.task_id,
        EvaluateResult(evaluation=Evaluation(n_eval=held_out(30), metrics={}),
                       compute_seconds=0.1),
    )  # fmt: skip
    _expire_open_rounds(state, created.id)
    state.coordinator.expire()
    public = job(state, created.id)
    assert public.status == "completed"
    alpha, beta = public.participation.sites["alpha"], public.participation.sites["beta"]
    assert (alpha.state, alpha.n, alpha.n_eval) == (SiteState.TOOK_PART, 30, held_out(30))
    assert alpha.reason.startswith("not in round 1 (its answer was refused: ")
    assert "NaN or infinite" in alpha.reason
    assert (beta.state, beta.round, beta.reason) == (
        SiteState.EXPIRED, 2, "no result before the round deadline"
    )  # fmt: skip
    assert public.participation.pooled_n is None  # no pooled n for a training job


def test_a_decline_is_shown_with_its_reason_cleaned(state: State) -> None:
    """A reason a site wrote is shown on one line, without control characters, and cut."""
    created = state.coordinator.submit(make_spec(), state.admin_id)
    reason = "policy\nmin_cohort_size=20\x1b[31m " + "x" * 3000
    state.coordinator.decline(state.sites["beta"], take(state, "beta").task_id, reason[:2000])
    beta = job(state, created.id).participation.sites["beta"]
    assert beta.state == SiteState.DECLINED and beta.round == 0
    assert beta.reason.startswith("policy min_cohort_size=20 [31m xxx")
    assert len(beta.reason) == MAX_REASON and beta.reason.endswith("…")


def test_a_declining_site_and_the_patients_in_the_curves(
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
) -> None:
    cohort = {**BREAST, "age": {"min": 65}}  # alpha has 9 such patients, beta 83
    km = spec({"type": "kaplan_meier", "outcome": RFS, "group": "grade"}, cohort=cohort)
    done = run(state, stores, km)
    assert done.status == "completed", done.error
    alpha, beta = done.participation.sites["alpha"], done.participation.sites["beta"]
    assert alpha.state == SiteState.DECLINED and alpha.n is None
    assert alpha.reason == (
        "the job's cohort at this site is smaller than its minimum cohort size "
        "(policy min_cohort_size=20)"
    )
    assert done.report is not None and done.report.excluded == {
        "alpha": f"declined: {alpha.reason}"
    }
    assert isinstance(done.report, SurvivalReport)
    curves = done.report.groups
    assert beta.state == SiteState.TOOK_PART and beta.n == 83
    assert beta.counted == sum(c.at_risk[0] for c in curves.values())
    assert beta.groups == 5 and beta.hidden == 5 - len(curves)  # G1 to G3, G4 and GX
    assert beta.reason.startswith("no series for ") and "GX" in beta.reason
    assert done.participation.pooled_n == beta.counted
    assert done.participation.reported_n == 83


def test_a_site_whose_answer_holds_nothing_is_suppressed(
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
) -> None:
    """At a threshold of 300 no group of alpha's 439 patients has enough events to be sent: its
    answer is accepted but empty, and said to be so, and the gap in the pooled n shows it."""
    km = spec({"type": "kaplan_meier", "outcome": RFS, "group": "grade"})
    with ExitStack() as stack:
        runners = {}
        for site, threshold in (("alpha", 300), ("beta", 11)):
            ledger = Ledger(state.home.parent / f"edge-{site}")
            stack.callback(ledger.close)
            policy = EdgePolicy(small_cell_threshold=threshold)
            runners[site] = TaskRunner(stores[site], policy, site, ledger, SITE_KEY)
        done = _play(state, runners, km, None)
    assert done.status == "completed", done.error
    assert done.rounds[0].sites["alpha"].status == "accepted"  # the round's record
    alpha = done.participation.sites["alpha"]
    assert (alpha.state, alpha.n, alpha.counted, alpha.hidden) == (
        SiteState.SUPPRESSED, ALPHA, 0, 5
    )  # fmt: skip
    assert "it sent no group" in alpha.reason and "adds nothing to the curves" in alpha.reason
    counted = done.participation.sites["beta"].counted
    assert done.participation.pooled_n == counted and isinstance(counted, int)
    assert done.participation.reported_n == ALPHA + BETA


def test_a_regression_counts_the_complete_cases_beside_the_cohorts(
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
) -> None:
    """Patients censored before the five-year horizon have no outcome: the pooled n is the
    complete cases, beside the 686 patients the sites reported."""
    outcome = {"type": "binary", "time": "rfs_days", "event": "rfs_event", "horizon_days": 1825}
    done = run(state, stores, spec({"type": "logistic", "outcome": outcome,
                                    "covariates": COVARIATES}))  # fmt: skip
    report = done.report
    assert isinstance(report, RegressionReport)
    sites = done.participation.sites
    assert {s.n for s in sites.values()} == {ALPHA, BETA}
    counted = [s.counted for s in sites.values()]
    assert all(isinstance(n, int) and n < ALPHA + BETA for n in counted)
    assert sum(n for n in counted if isinstance(n, int)) == report.n < ALPHA + BETA
    assert sum(s.events or 0 for s in sites.values()) == report.events
    assert done.participation.pooled_n == report.n
    assert done.participation.reported_n == ALPHA + BETA
    assert report.excluded == {} and report.pooled_only == {}


@pytest.mark.parametrize("analysis", [
    {"type": "counts", "rows": "grade", "columns": "treatment.endocrine"},
    {"type": "summary", "variable": "nodes_positive", "bins": [0, 1, 2, 3, 5, 10, 20]},
])  # fmt: skip
def test_hidden_cells_are_counted(
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
    analysis: dict[str, Any],
) -> None:
    done = run(state, stores, spec(analysis))
    assert done.status == "completed", done.error
    for site, status in done.participation.sites.items():
        assert status.state in IN_RESULT and status.n == {"alpha": ALPHA, "beta": BETA}[site]
        assert status.groups is not None and status.hidden is not None
        if status.hidden:
            assert status.reason.startswith(f"{status.hidden} of its {status.groups} ")
    assert any(status.hidden for status in done.participation.sites.values())
    report = done.report
    if isinstance(report, CountsReport):
        assert done.participation.pooled_n == report.pooled.cells[-1][-1] == ALPHA + BETA
        assert done.participation.sites["alpha"].groups == 6 * 3  # grade, 0/1, each and missing


@pytest.mark.parametrize("failed", [False, True])
def test_a_site_that_could_not_run_its_task_failed_one_that_would_not_declined(
    state: State, failed: bool
) -> None:
    """An error at the site (its agent says so) is a failure, a refusal a decline; either way
    the site is left out of the job's later rounds and the others go on."""
    created = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    task = take(state, "alpha")
    reason = "RuntimeError at the site; see the edge's log" if failed else "policy max_rounds"
    ack = state.coordinator.decline(state.sites["alpha"], task.task_id, reason, failed=failed)
    assert ack.status == "declined"
    through_stats(state, created.id, {"beta": 30})
    alpha = job(state, created.id).participation.sites["alpha"]
    assert (alpha.state, alpha.reason) == (
        SiteState.FAILED if failed else SiteState.DECLINED, reason
    )  # fmt: skip
    assert state.coordinator.next_task(state.sites["alpha"]) is None  # not in later rounds
    assert take(state, "beta").kind == "train"
