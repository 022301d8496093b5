"""Every rule of the edge's guard, through the real runner: each refusal is a decline naming
the rule, decided before anything about the site's rows is sent. A hostile orchestrator is
played by hand: it picks the round, kind, spec, scaling, model and coefficients of each task."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oncofed.demo.data import mapping_file, site_tables
from oncofed.edge import EdgePolicy, LocalStore, guard
from oncofed.edge.guard import content_sha256, task_hashes
from oncofed.edge.guard.scaling import announced
from oncofed.edge.importing import Source, import_source
from oncofed.edge.ledger import SLOTS, Ledger
from oncofed.edge.policy import cohort_minimums
from oncofed.edge.runner import Contribution, Outcome, TaskRunner
from oncofed.learning.data import pooled_stats, standardization
from oncofed.learning.registry import initial_weights
from oncofed.learning.strategies import apply_strategy, build_strategy
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisParams, AnalysisResult, AnalysisSpec
from oncofed.wire.messages import Decline, EvaluateResult, StatsResult, TaskAssignment
from oncofed.wire.secagg import RoundContext, SecureStep
from oncofed.wire.spec import JobSpec
from tests.support import SITE_KEY, make_spec, save_columns

SPEC = make_spec(rounds=3)
OTHER_SITE = StatsResult(n=50, sums=[10.0, -5.0], sumsq=[60.0, 40.0])
"""Another site's totals: realisable (50 * 60 >= 10 ** 2, 50 * 40 >= 5 ** 2)."""
Edge = Callable[..., TaskRunner]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=120), 50 + rng.normal(size=120)
    y = (x1 + rng.normal(size=120) > 0).astype(int)
    survival = {"os_days": rng.integers(30, 3000, 120), "os_event": rng.integers(0, 2, 120)}
    return save_columns(tmp_path / "datasets", "data", {"x1": x1, "x2": x2, "y": y}, survival)


@pytest.fixture
def edge(store: LocalStore, tmp_path: Path) -> Iterator[Edge]:
    """Starts the site's runner (again: its ledger is kept) with a policy."""
    ledgers: list[Ledger] = []

    def start(**policy: Any) -> TaskRunner:
        ledgers.append(Ledger(tmp_path / "edge"))
        return TaskRunner(store, EdgePolicy.model_validate(policy), "alpha", ledgers[-1], SITE_KEY)

    yield start
    for ledger in ledgers:
        ledger.close()


def task(
    kind: str, number: int, spec: JobSpec | AnalysisSpec = SPEC, **extra: Any
) -> TaskAssignment:
    fields = {"task_id": f"t{number}", "job_id": "j1", "round": number, "kind": kind}
    return TaskAssignment.model_validate({**fields, "spec": spec, **extra})


def refused(outcome: Outcome, reason: str) -> None:
    assert isinstance(outcome, Decline), outcome
    assert reason in outcome.reason, outcome.reason


def never(sha: str) -> bytes:
    raise AssertionError("a refused task downloads nothing")


class Orchestrator:
    """Plays an honest orchestrator of one training job (this site and one other), with
    ``model`` the global model it sends next; tests tamper with what it sends."""

    def __init__(self, runner: TaskRunner, spec: JobSpec = SPEC) -> None:
        self.runner, self.spec = runner, spec
        own = runner.run(task("stats", 0, spec), never)
        assert isinstance(own, StatsResult)
        self.own = own
        self.pooled = pooled_stats([own, OTHER_SITE])
        self.model = initial_weights(spec.model, spec.n_inputs, spec.seed)
        self.state: tensors.Weights = {}

    def task(self, kind: str, number: int, **changes: Any) -> TaskAssignment:
        blob = tensors.encode(self.model)
        scaling = {"pooled": self.pooled, "standardization": standardization(self.pooled)}
        extra = {"model_sha256": tensors.sha256(blob), **scaling, **changes}
        return task(kind, number, extra.pop("spec", self.spec), **extra)

    def run(self, kind: str, number: int, **changes: Any) -> Outcome:
        """The site's answer, audited as the agent audits each before it leaves (which writes
        the ledger's notes); an update becomes the next global model (the strategy applied
        to this site's update alone)."""
        blob = tensors.encode(self.model)
        outcome = self.runner.run(self.task(kind, number, **changes), lambda sha: blob)
        self.runner._ledger.audit(SITE_KEY, "egress", actor="edge", site="alpha")
        if isinstance(outcome, bytes):
            strategy = build_strategy(self.spec.strategy)
            update = tensors.decode(outcome)
            self.model, self.state = apply_strategy(strategy, self.model, update, self.state)
        return outcome

    def moved(self, name: str, by: float) -> tensors.Weights:
        """The current model with one element of ``name`` moved by ``by``."""
        model = {k: v.copy() for k, v in self.model.items()}
        model[name].reshape(-1)[0] += np.float32(by)
        return model


# -- what a task declares ----------------------------------------------------------------


def canonical_sha256(content: object) -> str:
    """SHA-256 of ``content``'s canonical JSON (sorted keys, no spaces), by one dump."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_task_and_its_spec_are_hashed_as_their_canonical_json() -> None:
    """``task_hashes`` (what the guard pins and compares) is the SHA-256 of the canonical JSON
    of the spec and of the task, its inline model left out, for a training job and an analysis
    alike; the spec's text, made once for the tasks sharing it, changes nothing; and
    ``content_sha256`` hashes a task so too."""
    model = tensors.encode(initial_weights(make_spec().model, 2, 0))
    analysis = AnalysisSpec.model_validate(
        {"name": "c", "project": "p", "dataset": "data",
         "analysis": {"type": "logistic", "outcome": {"type": "binary", "label": "ext.y"},
                      "covariates": ["ext.x1", "ext.x2"]}}
    )  # fmt: skip
    pooled = StatsResult(n=10, sums=[1.0, 2.0], sumsq=[3.0, 4.0])
    for spec, inline in ((make_spec(), model), (analysis, None)):
        for number in (1, 2):  # the second task finds its spec's text made
            task = TaskAssignment(
                task_id=f"t{number}", job_id="j1", round=number, kind="train", spec=spec,
                model_sha256=tensors.sha256(model), model=inline, pooled=pooled,
            )  # fmt: skip
            whole = task.model_dump(mode="json", exclude={"model"})
            expected = (canonical_sha256(whole["spec"]), canonical_sha256(whole))
            assert task_hashes(task) == expected
            assert (
                content_sha256(task)
                == expected[1]
                == content_sha256(task.model_copy(update={"model": None}))
            )
    assert content_sha256(pooled) == canonical_sha256(pooled.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("policy", "spec", "reason"),
    [
        ({"max_clip_norm": 0.5}, make_spec(), "update clip norm 1; policy max_clip_norm is 0.5"),
        (
            {"require_secure_aggregation": True},
            make_spec(),
            "takes part only in securely aggregated jobs (policy require_secure_aggregation)",
        ),
        ({}, make_spec(privacy={"secure_aggregation": True}), "sends no plain result for one"),
    ],
)
def test_what_a_task_declares_is_checked(
    edge: Edge, policy: dict[str, Any], spec: JobSpec, reason: str
) -> None:
    refused(edge(**policy).run(task("stats", 0, spec), never), reason)


def test_ids_that_could_name_a_path_are_refused(edge: Edge) -> None:
    outcome = edge().run(task("stats", 0).model_copy(update={"job_id": "../j1"}), never)
    refused(outcome, "task and job ids must be 1 to 64 letters, digits")


def test_secure_minimums_replace_the_per_site_ones_only_under_secure_aggregation() -> None:
    policy = EdgePolicy(min_cohort_size=20, min_eval_size=11, min_cohort_size_secure=5)
    plain = cohort_minimums(policy, make_spec())
    secure = cohort_minimums(policy, make_spec(privacy={"secure_aggregation": True}))
    assert (plain.cohort, plain.held_out, plain.cohort_rule) == (20, 11, "min_cohort_size")
    assert (secure.cohort, secure.held_out) == (5, 5)
    assert secure.cohort_rule == secure.held_out_rule == "min_cohort_size_secure"


# -- the sequence of a job's tasks -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "number"),
    [("train", 0), ("stats", 1), ("evaluate", 3), ("train", 4), ("evaluate", 5)],
)
def test_round_and_kind_must_fit_a_training_job(edge: Edge, kind: str, number: int) -> None:
    outcome = edge().run(task(kind, number), never)
    refused(outcome, f"a {kind} task in round {number} does not fit job 'test-job': statistics")
    assert "training in rounds 1 to 3, evaluation in round 4" in str(outcome)


def logistic(**analysis: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {
            "name": "a",
            "dataset": "data",
            "analysis": {
                "type": "logistic",
                "outcome": {"type": "binary", "label": "ext.y"},
                "covariates": ["ext.x1", "ext.x2"],
                **analysis,
            },
        }
    )


def zeros(width: int = 3) -> AnalysisParams:
    return AnalysisParams(pooled=[0.0] * width, own=[0.0] * width)


def test_an_analysis_has_its_rounds_only(edge: Edge) -> None:
    counts = AnalysisSpec.model_validate(
        {"name": "c", "dataset": "data", "analysis": {"type": "counts", "rows": "grade"}}
    )
    runner = edge(max_iterations=4)
    refused(runner.run(task("analysis", 1, counts), never), "one round (round 0), not round 1")
    declared = runner.run(task("analysis", 6, logistic(max_iterations=6), params=zeros()), never)
    refused(declared, "Newton round 6 of analysis 'a': it declares 6 iterations and policy")
    local = runner.run(task("analysis", 4, logistic(), params=zeros()), never)
    refused(local, "it declares 50 iterations and policy max_iterations is 4")


def test_rounds_strictly_increase_and_a_round_runs_once(edge: Edge) -> None:
    runner = edge()
    spec = logistic()
    assert isinstance(runner.run(task("analysis", 0, spec, params=zeros()), never), AnalysisResult)
    again = task("analysis", 0, spec, params=zeros()).model_copy(update={"task_id": "other"})
    refused(runner.run(again, never), "round 0 of job j1 was already run here as task t0")
    skip = task("analysis", 3, spec, params=zeros())  # rounds may be skipped, not repeated
    assert isinstance(runner.run(skip, never), AnalysisResult)
    back = task("analysis", 2, spec, params=zeros())
    refused(runner.run(back, never), "round 2 of job j1 comes after round 3 here")


def test_a_task_delivered_again_runs_again_unless_its_content_changed(edge: Edge) -> None:
    runner = edge()
    first = runner.run(task("stats", 0), never)
    assert isinstance(first, StatsResult)
    assert edge().run(task("stats", 0), never) == first  # after a restart too
    changed = task("stats", 0, proximal_mu=0.5)
    refused(runner.run(changed, never), "task t0 was delivered before with different content")


def test_every_task_of_a_job_carries_the_spec_it_started_with(edge: Edge) -> None:
    orchestrator = Orchestrator(edge())
    other = make_spec(rounds=3, local={"lr": 0.5})
    outcome = orchestrator.run("train", 1, spec=other)
    refused(outcome, "task t1 carries a spec that differs from the one job j1 started with")


def test_the_task_budget_holds_across_restarts(edge: Edge) -> None:
    spec = logistic()
    runner = edge(max_tasks_per_job=2)
    for number in (0, 1):
        params = zeros() if number == 0 else fit([0.1, 0.1, 0.01])
        ran = runner.run(task("analysis", number, spec, params=params), never)
        assert isinstance(ran, AnalysisResult), ran
    third = task("analysis", 2, spec, params=zeros())
    refused(edge(max_tasks_per_job=2).run(third, never), "this site has run 2 tasks of job j1")
    assert "policy max_tasks_per_job is 2" in str(edge(max_tasks_per_job=2).run(third, never))


# -- the announced scaling ---------------------------------------------------------------


def test_a_training_task_carries_the_scaling_its_pooled_totals_give(edge: Edge) -> None:
    orchestrator = Orchestrator(edge())
    refused(orchestrator.run("train", 1, pooled=None), "must carry the pooled totals and the")
    short = StatsResult(n=10, sums=[1.0], sumsq=[1.0])
    wrong_width = orchestrator.run("train", 1, pooled=short, standardization=standardization(short))
    refused(wrong_width, "must cover the job's 2 numeric features")
    scaling = standardization(orchestrator.pooled)
    skewed = scaling.model_copy(update={"std": [s * 0.5 for s in scaling.std]})
    refused(orchestrator.run("train", 1, standardization=skewed), "not the one the pooled")
    empty = StatsResult(n=0, sums=[0.0, 0.0], sumsq=[0.0, 0.0])
    outcome = orchestrator.run("train", 1, pooled=empty, standardization=scaling)
    refused(outcome, "the pooled totals count no rows")


def test_the_scaling_is_the_same_in_every_task_of_the_job(edge: Edge) -> None:
    orchestrator = Orchestrator(edge())
    assert isinstance(orchestrator.run("train", 1), bytes)
    other = pooled_stats([orchestrator.own, OTHER_SITE, OTHER_SITE])
    outcome = orchestrator.run("train", 2, pooled=other, standardization=standardization(other))
    refused(outcome, "the pooled totals or standardisation differ from those this job's earlier")


def test_the_pinned_scaling_is_compared_not_derived_again(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's first training task has its scaling derived from its pooled totals and
    pinned; a later task carrying the same is compared with them, not checked again."""
    orchestrator, derived = Orchestrator(edge()), []
    monkeypatch.setattr(guard, "announced", lambda *a: derived.append(a) or announced(*a))
    for number in (1, 2, 3):
        assert isinstance(orchestrator.run("train", number), bytes)
    assert len(derived) == 1


Rest = tuple[int, list[float], list[float]]


@pytest.mark.parametrize(
    ("rest", "what"),
    [
        ((-1, [0.0, 0.0], [0.0, 0.0]), "count fewer rows than this site"),
        ((1, [3.0, 0.0], [4.0, 0.0]), "cannot include this site's own"),
        ((0, [0.5, 0.0], [0.25, 0.0]), "cannot include this site's own"),
        ((5, [0.0, 0.0], [-1.0, 0.0]), "cannot include this site's own"),
    ],
    ids=["fewer-rows", "impossible-spread", "no-rows-left-but-sums", "negative-squares"],
)
def test_pooled_totals_must_be_realisable_with_this_sites_own(
    edge: Edge, rest: Rest, what: str
) -> None:
    """The totals announced minus this site's own must be totals of some rows."""
    orchestrator = Orchestrator(edge())
    own, (n, sums, sumsq) = orchestrator.own, rest
    orchestrator.pooled = StatsResult(
        n=own.n + n,
        sums=[a + b for a, b in zip(own.sums, sums, strict=True)],
        sumsq=[a + b for a, b in zip(own.sumsq, sumsq, strict=True)],
    )
    refused(orchestrator.run("train", 1), what)


def test_this_site_alone_may_be_the_whole_pool(edge: Edge) -> None:
    orchestrator = Orchestrator(edge())
    orchestrator.pooled = orchestrator.own
    assert isinstance(orchestrator.run("train", 1), bytes)


# -- the global models -------------------------------------------------------------------


def test_the_first_model_is_the_initial_model_of_the_spec_and_seed(edge: Edge) -> None:
    orchestrator = Orchestrator(edge())
    orchestrator.model = orchestrator.moved("layers.0.bias", 1e-6)
    refused(orchestrator.run("train", 1), "the round-1 model is not the initial model the job's")


@pytest.mark.parametrize(
    ("spec", "step"),
    [
        (make_spec(rounds=3), 1.0),
        (make_spec(rounds=3, local={"clip_norm": 0.1}), 0.1),
        (make_spec(rounds=3, strategy={"name": "fedprox", "mu": 0.1}), 1.0),
        (make_spec(rounds=3, strategy={"name": "fedadam", "lr": 0.01, "tau": 1.0}), 0.01),
    ],
    ids=["fedavg", "fedavg-small-clip", "fedprox", "fedadam"],
)
def test_each_later_model_is_within_the_strategys_step_per_round(
    edge: Edge, spec: JobSpec, step: float
) -> None:
    """Round 2's model may be one step from round 1's; round 3's two steps (this site refused
    round 2's, so the last model it saw is still round 1's)."""
    orchestrator = Orchestrator(edge(), spec)
    seen = orchestrator.model
    assert isinstance(orchestrator.run("train", 1), bytes)
    orchestrator.model = seen
    orchestrator.model = orchestrator.moved("layers.0.weight", 1.5 * step)
    outcome = orchestrator.run("train", 2)
    refused(outcome, "the global model of round 2 moved further from the model of round 1 than")
    assert f"1 round(s) of {spec.strategy.name} with updates clipped to" in str(outcome)
    assert isinstance(orchestrator.run("train", 3), bytes)


def test_a_job_whose_clipped_steps_could_travel_too_far_is_declined(edge: Edge) -> None:
    """30 rounds of steps of 1 could take the model 30 from its start, past the default 25."""
    refused(edge().run(task("stats", 0, make_spec(rounds=30)), never),
            "30 rounds of updates clipped to 1 could move the model 30 from its start; policy "
            "max_model_travel is 25")  # fmt: skip
    assert isinstance(edge().run(task("stats", 0, make_spec(rounds=25), job_id="j2"), never),
                      StatsResult)  # fmt: skip


def test_no_model_travels_further_than_the_policy_lets_a_job(edge: Edge) -> None:
    """FedAdam bounds each element's move, so 20 rounds of moves within its steps may add up
    to far more than max_model_travel: the site refuses the model that goes too far."""
    spec = make_spec(rounds=20, strategy={"name": "fedadam", "lr": 0.5, "tau": 1.0})
    orchestrator = Orchestrator(edge(max_model_travel=1.0), spec)
    start = orchestrator.model
    number = 0
    while (outcome := orchestrator.run("train", number := number + 1)) and isinstance(
        outcome, bytes
    ):
        away = {k: v.astype(np.float64) - start[k] for k, v in orchestrator.model.items()}
        assert np.sqrt(sum((d**2).sum() for d in away.values())) <= 1.0 + 1e-6
        orchestrator.model = {
            k: v + np.float32(0.4) * np.sign(v) for k, v in orchestrator.model.items()
        }
    refused(outcome, "further from the job's initial model than this site lets a job travel "
                     "(policy max_model_travel 1)")  # fmt: skip
    assert number > 1


def test_a_site_that_missed_round_1_compares_with_the_initial_model(edge: Edge) -> None:
    orchestrator = Orchestrator(edge())
    initial = orchestrator.model
    orchestrator.model = orchestrator.moved("layers.0.weight", 2.5)
    refused(orchestrator.run("train", 3), "moved further from the initial model than 2 round(s)")
    orchestrator.model = initial
    orchestrator.model = orchestrator.moved("layers.0.weight", 1.5)
    assert isinstance(orchestrator.run("evaluate", 4), EvaluateResult)  # within 3 steps


def test_the_evaluation_model_is_checked_and_its_answer_ends_the_models_kept(
    edge: Edge, tmp_path: Path
) -> None:
    orchestrator = Orchestrator(edge())
    for number in (1, 2, 3):
        assert isinstance(orchestrator.run("train", number), bytes)
    kept = tmp_path / "edge" / "jobs" / "j1"
    assert sorted(p.name for p in kept.iterdir()) == list(SLOTS)
    honest = orchestrator.model
    orchestrator.model = {k: v + np.float32(1.0) for k, v in honest.items()}
    refused(orchestrator.run("evaluate", 4), "the global model of round 4 moved further")
    assert kept.exists()
    orchestrator.model = honest
    refused(orchestrator.run("evaluate", 4, task_id="t4b"), "round 4 of job j1 was already run")
    assert isinstance(orchestrator.run("evaluate", 4), Decline)  # t4 again: refused again
    assert kept.exists()


def test_the_evaluation_answer_drops_the_last_model(edge: Edge, tmp_path: Path) -> None:
    orchestrator = Orchestrator(edge())
    assert isinstance(orchestrator.run("train", 1), bytes)
    assert isinstance(orchestrator.run("evaluate", 4), EvaluateResult)
    assert not (tmp_path / "edge" / "jobs" / "j1").exists()


# -- what the site sends -----------------------------------------------------------------


def test_updates_are_clipped_to_the_specs_norm(edge: Edge) -> None:
    spec = make_spec(rounds=3, local={"lr": 1.0, "epochs": 5, "clip_norm": 0.05})
    orchestrator = Orchestrator(edge(), spec)
    start = {k: v.astype(np.float64) for k, v in orchestrator.model.items()}
    assert isinstance(orchestrator.run("train", 1), bytes)
    moved = math.sqrt(
        sum(float(np.sum((orchestrator.model[k] - v) ** 2)) for k, v in start.items())
    )
    assert moved == pytest.approx(0.05, rel=1e-4)


def test_fedprox_mu_comes_from_the_spec_never_from_the_task(
    store: LocalStore, tmp_path: Path
) -> None:
    def update(spec: JobSpec, asked: float, where: str) -> tensors.Weights:
        with Ledger(tmp_path / where) as ledger:
            orchestrator = Orchestrator(
                TaskRunner(store, EdgePolicy(), "alpha", ledger, SITE_KEY), spec
            )
            assert isinstance(orchestrator.run("train", 1, proximal_mu=asked), bytes)
            return orchestrator.model

    local = {"epochs": 3, "lr": 0.2, "clip_norm": 8.0}  # 3 rounds of 8 travel within 25
    fedavg = make_spec(rounds=3, local=local)
    fedprox = make_spec(rounds=3, local=local, strategy={"name": "fedprox", "mu": 50.0})
    plain = update(fedavg, 0.0, "a")
    asked = update(fedavg, 50.0, "b")  # the task asks for a proximal term: ignored
    proximal = update(fedprox, 0.0, "c")  # the spec's mu applies whatever the task says
    for name in plain:
        np.testing.assert_array_equal(plain[name], asked[name])
    assert any(not np.array_equal(plain[n], proximal[n]) for n in plain)


# -- Newton coefficients -----------------------------------------------------------------


def newton(edge: Edge, *rounds: AnalysisParams, job_id: str = "j1") -> Outcome:
    """Run Newton rounds 0.. of a logistic regression with these coefficients (round 0's:
    zeros); the last outcome."""
    runner = edge()
    outcome: Outcome = Decline(reason="no round")
    for number, params in enumerate((zeros(), *rounds)):
        ids = {"job_id": job_id, "task_id": f"{job_id}-t{number}"}
        step = task("analysis", number, logistic(), params=params, **ids)
        outcome = runner.run(step, never)
    return outcome


def fit(pooled: list[float], own: list[float] | None = None) -> AnalysisParams:
    return AnalysisParams(pooled=pooled, own=own if own is not None else pooled)


def test_honest_coefficients_pass(edge: Edge) -> None:
    outcome = newton(edge, fit([0.1, 0.8, 0.0]), fit([0.12, 1.1, 0.01]))
    assert isinstance(outcome, AnalysisResult)


@pytest.mark.parametrize(
    ("rounds", "reason"),
    [
        ((fit([0.0, 0.0]),), "the coefficients must be one per term (3 terms)"),
        ((), None),
        ((fit([0.0, 6.0, 0.0]),), "the pooled coefficient of 'ext.x1' changes the linear"),
        ((fit([0.0, 0.5, 0.0], [0.0, 0.5, -6.0]),), "the own coefficient of 'ext.x2'"),
        ((fit([11.0, 0.0, 0.0]),), "puts the linear predictor at this site's mean patient"),
        ((fit([2.0, 2.5, 0.0]), fit([2.0, -1.5, 0.0])), "the pooled move of 'ext.x1'"),
        ((fit([0.0, 0.0, 0.0]), fit([7.0, 0.0, 0.0])), "the pooled move puts the linear"),
    ],
    ids=["width", "zeros", "effect", "own-effect", "level", "move", "level-move"],
)
def test_newton_coefficients_stay_within_the_sites_bounds(
    edge: Edge, rounds: tuple[AnalysisParams, ...], reason: str | None
) -> None:
    outcome = newton(edge, *rounds)
    if reason is None:
        assert isinstance(outcome, AnalysisResult)
        return
    refused(outcome, reason)
    limits = ("max_coefficient_effect (5)", "max_newton_step (3)", "twice policy", "per term")
    assert any(limit in str(outcome) for limit in limits)


def test_newton_starts_from_zero_and_carries_coefficients(edge: Edge) -> None:
    runner = edge()
    start = task("analysis", 0, logistic(), params=fit([0.0, 0.1, 0.0]))
    refused(runner.run(start, never), "a Newton loop starts from coefficients 0")
    refused(runner.run(task("analysis", 1, logistic()), never), "must carry its coefficients")
    later = task("analysis", 2, logistic(), params=zeros())
    refused(runner.run(later, never), "Newton round 2 comes without the earlier rounds at this")


def test_a_logistic_models_level_is_bounded_at_the_mean_patient_not_by_its_intercept(
    edge: Edge,
) -> None:
    """ext.x2 has mean 50 and sd 1 here: 2 per unit is an effect of 2, and a linear predictor
    of 100 at the mean unless the intercept brings it back."""
    assert isinstance(newton(edge, fit([-100.0, 0.0, 2.0])), AnalysisResult)
    beyond = newton(edge, fit([0.0, 0.0, 2.0]), job_id="j2")
    refused(beyond, "linear predictor at this site's mean patient")


@pytest.fixture(scope="module")
def west(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """The demo's west hospital: its share of GBSG2 (real rows), imported."""
    root = tmp_path_factory.mktemp("west")
    site_tables()["west"].to_csv(root / "west.csv", index=False)
    store = LocalStore(root / "datasets")
    source = Source("csv", str(root / "west.csv"), mapping_file("gbsg2.yaml", root))
    import_source(store, "gbsg2", source, threshold=11)
    return store


def test_a_cox_models_level_is_free_but_its_effects_are_bounded(
    west: LocalStore, tmp_path: Path
) -> None:
    """Age at west (mean 64, sd 6.7 years): 0.25 per year is an effect of 1.7 and a linear
    predictor of 16 at the mean patient, a level that cancels from a Cox partial likelihood;
    0.8 per year is an effect of 5.3."""
    cox = AnalysisSpec.model_validate(
        {
            "name": "cox",
            "dataset": "gbsg2",
            "analysis": {
                "type": "cox",
                "outcome": {"time": "rfs_days", "event": "rfs_event"},
                "covariates": ["age_at_diagnosis"],
            },
        }
    )
    with Ledger(tmp_path / "edge") as ledger:
        runner = TaskRunner(west, EdgePolicy(), "west", ledger, SITE_KEY)
        for job_id, beta, answered in (("j1", 0.25, AnalysisResult), ("j2", 0.8, Decline)):
            for number, params in enumerate((zeros(1), fit([beta]))):
                ids = {"job_id": job_id, "task_id": f"{job_id}-t{number}"}
                outcome = runner.run(task("analysis", number, cox, params=params, **ids), never)
            assert isinstance(outcome, answered), outcome
    assert "the pooled coefficient of 'age_at_diagnosis' changes the linear" in str(outcome)


def test_the_decline_reasons_name_no_number_of_the_sites_rows(edge: Edge) -> None:
    """A reason reaches the orchestrator: it names the fit, term and policy limit only."""
    outcome = newton(edge, fit([0.0, 0.0, 5.5]))
    assert outcome == Decline(
        reason="the pooled coefficient of 'ext.x2' changes the linear predictor by more than "
        "policy max_coefficient_effect (5) across one standard deviation here"
    )


def secure_cox(number: int, params: AnalysisParams) -> TaskAssignment:
    """A secure unstratified Cox round over the two extension columns (survival from ext.t)."""
    spec = AnalysisSpec.model_validate(
        {
            "name": "c",
            "dataset": "data",
            "analysis": {"type": "cox", "outcome": {"time": "os_days", "event": "os_event"},
                         "covariates": ["ext.x1", "ext.x2"], "stratified": False},
            "privacy": {"secure_aggregation": True},
        }
    )  # fmt: skip
    plain = task("analysis", number, spec, params=params)
    context = RoundContext(job_id="j1", round=number, announced=plain.announced())
    return plain.model_copy(update={"secure": SecureStep(phase="keys", context=context)})


def test_only_a_secure_unstratified_cox_round_carries_an_offset(edge: Edge) -> None:
    runner = edge()
    offset = AnalysisParams(pooled=[0.0] * 3, own=[0.0] * 3, offset=1.0)
    refused(runner.run(task("analysis", 0, logistic(), params=offset), never),
            "only a secure unstratified Cox round carries an offset")  # fmt: skip


def test_an_offset_must_keep_every_patients_term_encodable(edge: Edge) -> None:
    """x2 is about 50 here: at b = (0, 0.5) the linear predictors are about 25, so an offset of
    25 keeps every exp(x'b - c) near 1, and one of 80 would drown them all but the largest."""
    runner = edge()
    assert not isinstance(runner.run(secure_cox(0, AnalysisParams(pooled=[0.0] * 2)), never),
                          Decline)  # fmt: skip
    far = AnalysisParams(pooled=[0.0, 0.5], offset=80.0)
    refused(
        runner.run(secure_cox(1, far), never),
        "the offset of the risk-set sums is too far from this site's linear predictors",
    )
    near = AnalysisParams(pooled=[0.0, 0.5], offset=25.0)
    assert not isinstance(runner.run(secure_cox(2, near), never), Decline)


@pytest.mark.parametrize("number", [0, 1])
def test_a_secure_round_with_coefficients_of_the_sites_own_is_refused(
    edge: Edge, number: int
) -> None:
    """A secure round carries the pooled coefficients only, from the first round on (at 0 as
    later): the site fits its own model itself, and derivatives at coefficients chosen for it
    alone are never computed for the clear. A plain round carries its own, one per term."""
    runner = edge()
    if number:
        assert not isinstance(runner.run(secure_cox(0, AnalysisParams(pooled=[0.0] * 2)), never),
                              Decline)  # fmt: skip
    own = AnalysisParams(pooled=[0.0, 0.1 * number], own=[0.0, 0.1 * number])
    refused(runner.run(secure_cox(number, own), never),
            "a secure round carries no coefficients of this site's own")  # fmt: skip
    plain = task("analysis", 0, logistic(), params=AnalysisParams(pooled=[0.0] * 3),
                 job_id="j2", task_id="j2-t0")  # fmt: skip
    refused(runner.run(plain, never), "the coefficients must be one per term (3 terms)")


def private_logistic(
    bounds: dict[str, tuple[float, float]] | None, cohort: dict[str, Any] | None = None
) -> AnalysisSpec:
    """``logistic()`` under secure aggregation, differentially private (epsilon 4) with these
    covariate ranges (None: exact)."""
    privacy: dict[str, Any] = {"secure_aggregation": True}
    if bounds is not None:
        privacy["differential_privacy"] = {"epsilon": 4.0, "delta": 1e-5, "bounds": bounds}
    body = logistic().model_dump(exclude={"privacy", "cohort"})
    return AnalysisSpec.model_validate({**body, "privacy": privacy, "cohort": cohort or {}})


def private_round(
    spec: AnalysisSpec, number: int, pooled: list[float], job_id: str = "j1"
) -> TaskAssignment:
    ids = {"job_id": job_id, "task_id": f"{job_id}-p{number}"}
    plain = task("analysis", number, spec, params=AnalysisParams(pooled=pooled), **ids)
    context = RoundContext(job_id=job_id, round=number, announced=plain.announced())
    return plain.model_copy(update={"secure": SecureStep(phase="keys", context=context)})


@pytest.mark.parametrize(
    ("pooled", "reason"),
    [
        ([0.0, 6.0, 0.0], "the pooled coefficient of 'ext.x1' changes the linear"),
        ([11.0, 0.0, 0.0], "puts the linear predictor at this site's mean patient"),
    ],
    ids=["effect", "level"],
)
def test_under_dp_no_coefficient_is_refused_on_the_sites_rows(
    edge: Edge, pooled: list[float], reason: str
) -> None:
    """Coefficients an exact round refuses on this site's spread and mean are answered, and
    charged, under DP: the refusal would tell something exact of the rows, uncharged, while the
    noise covers any coefficients. Their form is still checked."""
    refused(newton(edge, fit(pooled)), reason)
    runner = edge()
    spec = private_logistic({"ext.x1": (-3, 3), "ext.x2": (40, 60)})
    first = runner.run(private_round(spec, 0, [0.0] * 3, job_id="j2"), never)
    assert isinstance(first, Contribution), first
    answer = runner.run(private_round(spec, 1, pooled, job_id="j2"), never)
    assert isinstance(answer, Contribution), answer
    assert first.clear.epsilon is not None and answer.clear.epsilon is not None
    assert answer.clear.epsilon > first.clear.epsilon
    refused(runner.run(private_round(spec, 0, pooled, job_id="j3"), never),
            "a Newton loop starts from coefficients 0")  # fmt: skip
    refused(runner.run(private_round(spec, 0, [0.0] * 2, job_id="j4"), never),
            "one per term (3 terms)")  # fmt: skip


@pytest.mark.parametrize("pooled", [[0.0, 1e308, -1e308], [2e6, 0.0, 0.0], [0.0, 0.0, 3e4]])
def test_under_dp_coefficients_no_site_can_compute_are_declined(
    edge: Edge, pooled: list[float]
) -> None:
    """Finite coefficients whose linear predictor overflows (1e308 x 3 - 1e308 x 60 is NaN:
    the site's sums would not be numbers) or passes 1e6 somewhere in the declared ranges are
    declined, by the ranges alone: the same at every site."""
    runner = edge()
    spec = private_logistic({"ext.x1": (-3, 3), "ext.x2": (40, 60)})
    assert isinstance(runner.run(private_round(spec, 0, [0.0] * 3), never), Contribution)
    refused(
        runner.run(private_round(spec, 1, pooled), never),
        "the pooled coefficients put the linear predictor beyond 1e+06 within the declared",
    )


def test_a_private_analysis_answers_an_empty_cohort_and_charges_it(edge: Edge) -> None:
    """An exact analysis declines a cohort below the site's minimum, which says exactly that it
    is small; a differentially private one answers it with noise alone and pays for it."""
    nobody = {"where": [{"field": "ext.x1", "min": 100.0}]}
    runner = edge()
    refused(runner.run(private_round(private_logistic(None, nobody), 0, [0.0] * 3), never),
            "smaller than its minimum cohort size")  # fmt: skip
    spec = private_logistic({"ext.x1": (-3, 3), "ext.x2": (40, 60)}, nobody)
    answer = runner.run(private_round(spec, 0, [0.0] * 3, job_id="j3"), never)
    assert isinstance(answer, Contribution), answer
    assert answer.clear.epsilon is not None and answer.clear.epsilon > 0
    assert answer.values["gradient"].any()  # noise alone: the cohort adds nothing


def test_a_private_newton_loop_runs_its_rounds_only_and_must_fit_the_budget_whole(
    edge: Edge,
) -> None:
    """Five rounds (``newton_rounds``), each charged; a sixth is declined however many
    iterations the analysis declares. No own fit goes in the clear beside the first round. A
    loop whose five rounds the budget cannot pay is declined before its first."""
    bounds = {"ext.x1": (-3, 3), "ext.x2": (40, 60)}
    runner = edge()
    spec = private_logistic(bounds)
    for number in range(5):
        answer = runner.run(private_round(spec, number, [0.0] * 3), never)
        assert isinstance(answer, Contribution), answer
        assert answer.clear.own is None and answer.clear.epsilon is not None
    assert answer.clear.epsilon == 4.0
    refused(runner.run(private_round(spec, 5, [0.0] * 3), never),
            "round 6 of a differentially private analysis of 5 rounds")  # fmt: skip
    poor = edge(privacy_budget={"epsilon_per_project": 3.0})
    refused(poor.run(private_round(spec, 0, [0.0] * 3, job_id="j2"), never),
            "job j2 would spend")  # fmt: skip
