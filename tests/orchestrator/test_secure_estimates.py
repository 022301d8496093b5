"""The subtraction attack on a lone site that keeps its own numbers, in one process: three
hospitals of the demo that meet every per-site rule and a small one (18 patients) that meets
none, all under the default policy and secure aggregation, with the real coordinator, runner,
ledger and secure sessions (``tests.sites``).

Before the fix a site that shares its estimates sent, beside each secure round, numbers about
itself alone in the clear: a Newton round's derivatives at its own coefficients (0 in the first
round, as the pooled ones: its summand), a training round's held-out metrics. The pooled sum
less the sharing sites' numbers was then the small site's. Each test shows the attack working
on what the sharing sites would have sent (computed here, as the old edge computed it), then
searches everything the orchestrator holds and answered (``tests.canary``) for every site's
own numbers: none is there, while the pooled sums are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from oncofed.analytics.design import derivatives, design
from oncofed.analytics.newton import NewtonState
from oncofed.cdm.frame import job_table
from oncofed.client.report import POOLED_ONLY, final_metrics
from oncofed.demo.data import site_tables
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.runner import Contribution, Outcome
from oncofed.orchestrator.db import Base, Job
from oncofed.orchestrator.settings import Settings
from oncofed.wire.analysis import CoxAnalysis, RegressionReport
from oncofed.wire.messages import Evaluation, JobPublic, PooledRound, TaskAssignment
from oncofed.wire.secagg import MaskedHeader
from oncofed.wire.spec import JobSpec
from tests.canary import Haystack, Needles, labels
from tests.orchestrator.test_secure_rounds import RFS, SECURE, analysis, training
from tests.sites import Site, enrol, import_gbsg2, play, sites
from tests.support import State

SHARING = ("alpha", "beta", "gamma")
SMALL = "delta"
COX = {"type": "cox", "outcome": RFS, "covariates": [
    "age_at_diagnosis", {"name": "tumour_size_mm", "transform": "log1p"},
    {"name": "nodes_positive", "transform": "log1p"}, "treatment.endocrine"]}  # fmt: skip
Contributions = dict[tuple[str, int], Contribution]
"""A job's contributions by (site, round), as each edge computed them before masking."""
Run = Callable[[TaskAssignment, Callable[[str], bytes]], Outcome]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocalStore]:
    """The demo's north, south and east hospitals (247, 192 and 144 patients) as alpha, beta
    and gamma, and 18 of west's patients as delta."""
    demo = site_tables()
    tables = {"alpha": demo["north"], "beta": demo["south"], "gamma": demo["east"],
              SMALL: demo["west"].iloc[:18]}  # fmt: skip
    return import_gbsg2(tmp_path_factory.mktemp("sites"), tables)


@pytest.fixture
def consortium(
    state: State, stores: dict[str, LocalStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, Site], dict[str, Contributions]]]:
    """The four sites under the default policy, and what each computed, by job: every secure
    contribution is kept as its runner returned it."""
    enrol(state, ["gamma", SMALL])
    kept: dict[str, Contributions] = {}
    with ExitStack() as stack:
        played = sites(state, stores, stack, tmp_path / "edges", EdgePolicy())
        for name, site in played.items():
            monkeypatch.setattr(site.runner, "run", _recorded(name, site.runner.run, kept))
        yield played, kept


def _recorded(name: str, run: Run, kept: dict[str, Contributions]) -> Run:
    def recorded(task: TaskAssignment, fetch: Callable[[str], bytes]) -> Outcome:
        outcome = run(task, fetch)
        if isinstance(outcome, Contribution):
            kept.setdefault(task.job_id, {})[name, task.round] = outcome
        return outcome

    return recorded


def holdings(state: State, job: JobPublic) -> Haystack:
    """Everything the orchestrator holds and answered about the job: every row of every table
    of its database (bytes as they are, other values as text), its blob directory and the
    job's public view."""
    items = {}
    with state.sessions() as session:
        for table in Base.metadata.sorted_tables:
            values = [v for row in session.execute(select(table)) for v in row]
            items[f"table {table.name}"] = b"\n".join(
                v if isinstance(v, bytes) else str(v).encode() for v in values
            )
    blobs = Settings.load(state.home).blob_dir
    items |= {f"blob {p.name}": p.read_bytes() for p in blobs.rglob("*") if p.is_file()}
    return Haystack(items | {"job view": job.model_dump_json().encode()})


def needles(numbers: Mapping[str, np.ndarray]) -> Needles:
    found = Needles()
    for label, values in numbers.items():
        found.add_reals(label, values)
    return found


def exact_sum(values: Sequence[np.ndarray]) -> np.ndarray:
    """The sum, element by element, rounded once (as the unmasked fixed-point sum is)."""
    stack = np.stack([np.asarray(v, dtype=np.float64) for v in values])
    flat = [math.fsum(column) for column in stack.reshape(len(values), -1).T]
    return np.array(flat).reshape(stack.shape[1:])


def headers(state: State, job_id: str) -> dict[tuple[str, int], MaskedHeader]:
    """What each site sent in the clear beside its masked input, by (site, round)."""
    with state.sessions() as session:
        row = session.get(Job, job_id)
        assert row is not None
        return {
            (task.site.name, rnd.number): MaskedHeader.model_validate_json(task.result_json or "")
            for rnd in row.rounds
            for task in rnd.tasks
        }


def test_a_lone_site_is_not_revealed_by_the_sharing_sites_estimates(
    state: State,
    stores: dict[str, LocalStore],
    consortium: tuple[dict[str, Site], dict[str, Contributions]],
) -> None:
    played, kept = consortium
    spec = analysis(COX, **SECURE)
    job = play(state, played, spec)
    assert job.status == "completed", job.error
    report = job.report
    assert isinstance(report, RegressionReport) and report.secure_sites == sorted(played)
    assert list(report.sites) == list(SHARING) and report.n == 247 + 192 + 144 + 18
    own_fit = ("no estimates of its own: fewer than 20 patients with complete data here "
               "(policy min_cohort_size)")  # fmt: skip
    assert report.pooled_only == {SMALL: own_fit} and report.excluded == {}
    small = job.participation.sites[SMALL]  # in the sums, only its own estimates are missing
    assert small.state == "took_part" and small.n is None
    assert small.reason == (
        "in the secure sums; no one saw its own numbers; in the pooled fit, not in the "
        f"per-site estimates: {own_fit}"
    )
    own = kept[job.id]
    rounds = len(job.rounds)
    assert rounds >= 4 and len(own) == 4 * rounds

    # Before the fix, a sharing site sent its derivatives at its own coefficients in the clear:
    # 0 in the first round, where they are its summand (computed here as the old edge did).
    assert isinstance(spec.analysis, CoxAnalysis)
    zero = np.zeros(len(report.terms))
    old_clear = {}
    for site in SHARING:
        table = job_table(spec, stores[site].load("gbsg2"))
        old_clear[site] = derivatives(spec.analysis, design(spec.analysis, table), zero)
        summand = own[site, 0].values
        assert old_clear[site].loglik == float(summand["loglik"])
        np.testing.assert_array_equal(old_clear[site].hessian, summand["hessian"])
    # The orchestrator holds the pooled derivatives at 0 (the Newton state after the first
    # round: the log-likelihood and Hessian at its anchor, the gradient as minus the Hessian
    # times the step); less the sharing sites' clear derivatives, they are delta's summand.
    with state.sessions() as session:
        after = session.get(Job, job.id)
        assert after is not None
        first = NewtonState.from_json(after.rounds[1].params_json or "").pooled
    assert first.anchor == zero.tolist() and first.hessian is not None
    hessian = np.asarray(first.hessian)
    gradient = -hessian @ np.asarray(first.beta)
    small = own[SMALL, 0].values
    revealed = (
        (first.loglik or 0.0) - sum(d.loglik for d in old_clear.values()),
        gradient - np.sum([d.gradient for d in old_clear.values()], axis=0),
        hessian - np.sum([d.hessian for d in old_clear.values()], axis=0),
    )
    assert revealed[0] == pytest.approx(float(small["loglik"]), rel=1e-9)
    np.testing.assert_allclose(revealed[1], small["gradient"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(revealed[2], small["hessian"], rtol=1e-9, atol=1e-9)

    # Now: beside the first round a sharing site sent its own fit (the report's per-site
    # terms), delta why it keeps its own; beside the later rounds nothing of their own.
    clear = headers(state, job.id)
    assert clear.keys() == {(site, n) for site in played for n in range(rounds)}
    for (site, number), header in clear.items():
        said = header.clear.model_dump()
        assert said.keys() == {"threshold", "compute_seconds", "epsilon", "noise", "own"}
        assert said["epsilon"] is None  # an exact job spends no privacy budget
        if number:
            assert header.clear.own is None
        elif site == SMALL:
            assert header.clear.own is not None and header.clear.own.terms is None
        else:
            assert header.clear.own is not None and header.clear.own.terms == report.sites[site]
    # No site's numbers, in any round, are anywhere the orchestrator holds or answered: not
    # delta's, and not the sharing sites' that subtracting needs. The pooled ones are.
    pooled = {
        name: exact_sum([own[site, 0].values[name] for site in played])
        for name in ("loglik", "hessian")
    }
    public = needles({f"pooled {name}": value for name, value in pooled.items()})
    search = holdings(state, job)
    assert labels(search.search(public)) == {"pooled loglik", "pooled hessian"}
    before = Haystack({site: d.model_dump_json().encode() for site, d in old_clear.items()})
    for site in played:
        mine = needles(
            {f"{site} round {n} {name}": own[site, n].values[name]
             for n in range(rounds) for name in ("loglik", "gradient", "hessian")}
        ).without(public)  # fmt: skip
        assert len(mine) > 100
        assert not search.search(mine), labels(search.search(mine))
        if site in SHARING:  # the same search finds them in what it sent before the fix
            assert f"{site} round 0 hessian" in labels(before.search(mine))

    # A fit is not a summand: read naively (each sharing site's Hessian at 0 as minus the
    # inverse of its squared standard errors), the pooled Hessian less the sharing sites' misses
    # delta's diagonal by more than delta's own values.
    guess = hessian + sum(np.diag(np.array([t.se for t in report.sites[s]]) ** -2.0)
                          for s in SHARING)  # fmt: skip
    true = np.diag(small["hessian"])
    assert np.all(np.abs(np.diag(guess) - true) > np.abs(true))


def test_a_lone_sites_held_out_metrics_are_not_revealed(
    state: State, consortium: tuple[dict[str, Site], dict[str, Contributions]]
) -> None:
    played, kept = consortium
    spec = training(**SECURE)
    job = play(state, played, spec)
    assert job.status == "completed", job.error
    own = kept[job.id]
    evaluate = job.rounds[-1]
    assert evaluate.kind == "evaluate" and evaluate.secure
    number = evaluate.number
    rows = {site: int(own[site, number].values["n_eval"]) for site in played}
    assert rows[SMALL] < EdgePolicy().min_eval_size <= min(rows[s] for s in SHARING)

    # Before the fix, a sharing site with at least min_eval_size held-out rows sent its metrics
    # in the clear, and delta (fewer) kept its own. The pooled held-out rows and sample-weighted
    # metrics, less the sharing sites' figures, were delta's.
    assert isinstance(spec, JobSpec)
    sums_of = {"log_loss": "log_loss", "mean_probability": "probability"}
    metrics = {
        site: {m: float(own[site, number].values[k]) / rows[site] for m, k in sums_of.items()}
        for site in SHARING
    }
    with state.sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None
        pooled = PooledRound.model_validate_json(row.rounds[-1].result_json or "")
    assert pooled.n_eval == sum(rows.values())
    revealed_rows = (pooled.n_eval or 0) - sum(rows[site] for site in SHARING)
    assert revealed_rows == rows[SMALL]
    for name in ("log_loss", "mean_probability"):
        total = pooled.metrics[name] * (pooled.n_eval or 0)
        revealed = (total - sum(metrics[s][name] * rows[s] for s in SHARING)) / revealed_rows
        expected = float(own[SMALL, number].values[sums_of[name]]) / rows[SMALL]
        assert revealed == pytest.approx(expected, rel=1e-9)

    # Now no site sends a metric of its own in the clear: the job says its metrics are pooled
    # only, and no site's metrics, in any round, are anywhere the orchestrator holds.
    for header in headers(state, job.id).values():
        said = header.clear.model_dump()
        assert said.keys() == {"threshold", "compute_seconds", "epsilon", "noise", "own"}
        assert said["epsilon"] is None  # an exact job spends no privacy budget
        assert header.clear.own is None
    for rnd in job.rounds:
        assert all(s.metrics == {} and s.n_eval is None for s in rnd.sites.values())
    shown = final_metrics(job)
    assert shown["pooled"] == evaluate.metrics and shown["sites"] == {}
    assert shown["note"] == POOLED_ONLY
    search = holdings(state, job)
    public = needles({"pooled metrics": np.array(list(evaluate.metrics.values()))})
    assert labels(search.search(public)) == {"pooled metrics"}
    before = Haystack(
        {site: Evaluation(n_eval=rows[site], metrics=metrics[site]).model_dump_json().encode()
         for site in SHARING}
    )  # fmt: skip
    for site in played:
        mine = Needles()
        for (who, n), contribution in own.items():
            if who != site or "log_loss" not in contribution.values:
                continue
            values = contribution.values
            sums = np.array([float(values["log_loss"]), float(values["probability"])])
            mine.add_reals(f"{site} round {n} metric sums", sums)
            if n > 1:  # round 1 evaluates the initial model (weights 0): log-loss ln 2 anywhere
                mine.add_reals(f"{site} round {n} metrics", sums / contribution.values["n_eval"])
        mine = mine.without(public)
        assert len(mine) > 10
        assert not search.search(mine), labels(search.search(mine))
        if site in SHARING:  # the same search finds them in what it sent before the fix
            assert f"{site} round {number} metrics" in labels(before.search(mine))
