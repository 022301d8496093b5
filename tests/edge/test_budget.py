"""The site's privacy budget: differentially private jobs are charged in the edge's ledger, run
until a project or the site has spent its limit, and are declined after it with what remains,
across an edge restart and a second project; the orchestrator cannot reset it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from oncofed.audit import Filters
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.budget import Budget, Charge
from oncofed.edge.config import PrivacyBudget
from oncofed.edge.errors import PolicyViolation
from oncofed.edge.ledger import AUDIT, Ledger
from oncofed.edge.runner import TaskRunner
from oncofed.privacy import accounting
from oncofed.privacy.secagg import new_identity
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import Decline, SiteState, TaskAssignment
from oncofed.wire.spec import JobSpec
from tests.sites import enrol, mortals, play, sites
from tests.support import SITE_KEY, State, declare_project, make_spec, save_columns

LIMITS = PrivacyBudget(epsilon_total=1.6, epsilon_per_project=1.2, delta=1e-5)
SECOND, THIRD = "second-study", "third-study"


def private_spec(name: str, project: str = "test-project", epsilon: float = 0.8) -> JobSpec:
    return make_spec(
        name=name,
        project=project,
        local={"batch_size": 32, "epochs": 1},
        privacy={"differential_privacy": {"epsilon": epsilon, "delta": 1e-5}},
    )


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, LocalStore]:
    rng = np.random.default_rng(3)
    out = {}
    for name in ("alpha", "beta"):
        x1, x2 = rng.normal(size=200), rng.normal(size=200)
        y = (x1 + rng.normal(size=200) > 0).astype(int)
        out[name] = save_columns(tmp_path / name, "data", {"x1": x1, "x2": x2, "y": y})
    return out


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "edge")
    yield ledger
    ledger.close()


def cost(epsilon: float) -> np.ndarray:
    """A Gaussian release's curve costing about ``epsilon`` alone at delta 1e-5."""
    sigma = 1.0
    while accounting.epsilon(accounting.gaussian_rdp(1.0, sigma), 1e-5) > epsilon:
        sigma *= 1.05
    return accounting.gaussian_rdp(1.0, sigma)


def charge(task: str, job: str = "j1", project: str = "p", rdp: np.ndarray | None = None) -> Charge:
    return Charge(task, job, project, "train", 1, cost(0.5) if rdp is None else rdp)


def test_charges_compose_per_project_and_site_and_refuse_past_a_limit(ledger: Ledger) -> None:
    budget = Budget(ledger, SITE_KEY, "alpha")
    first = budget.charge(charge("t1"), LIMITS)
    assert 0.45 < first <= 0.5
    budget.charge(charge("t2", job="j2"), LIMITS)
    spent = budget.spent(LIMITS)
    # Renyi composition is tighter than adding epsilons, and never looser than one release
    assert first < spent.projects["p"] < 2 * first and spent.total == spent.projects["p"]
    assert set(spent.jobs) == {"j1", "j2"}
    with pytest.raises(PolicyViolation, match=r"project p has [0-9.]+ left") as refused:
        budget.charge(charge("t3", rdp=cost(1.0)), LIMITS)
    assert "epsilon_per_project 1.2" in str(refused.value)
    other = budget.charge(charge("t4", project="q", rdp=cost(1.0)), LIMITS)
    assert other > 0.9
    with pytest.raises(PolicyViolation, match=r"epsilon_total 1\.6"):  # the site's limit now
        budget.charge(charge("t5", project="r", rdp=cost(1.0)), LIMITS)
    assert [e.job_id for e in budget.history()] == ["j1", "j2", "j1"]


def test_a_task_run_again_is_charged_once_with_the_same_noise(ledger: Ledger) -> None:
    budget = Budget(ledger, SITE_KEY, "alpha")
    budget.charge(charge("t1"), LIMITS)
    budget.charge(charge("t1"), LIMITS)
    assert len(budget.history()) == 1
    seed = budget.noise_seed("t1", "c" * 64)
    assert seed == budget.noise_seed("t1", "c" * 64)
    assert seed != budget.noise_seed("t1", "d" * 64)
    assert seed != Budget(ledger, new_identity(), "alpha").noise_seed("t1", "c" * 64)


def test_each_charge_is_in_the_signed_audit_log(ledger: Ledger) -> None:
    Budget(ledger, SITE_KEY, "alpha").charge(charge("t1", project="p"), LIMITS)
    with ledger.sessions() as session:
        [entry] = AUDIT.read(session, Filters(action="privacy.spent"))
        assert entry.project == "p" and entry.detail["task"] == "t1"
        assert 0.45 < float(entry.detail["epsilon"]) <= 0.5
        assert AUDIT.verify(session, SITE_KEY.public_key()).ok


def test_the_planned_job_is_checked_before_it_starts(ledger: Ledger) -> None:
    budget = Budget(ledger, SITE_KEY, "alpha")
    budget.check("j1", "p", cost(1.1), LIMITS)
    with pytest.raises(PolicyViolation, match=r"job j1 would spend epsilon 1\.2"):
        budget.check("j1", "p", cost(1.25), LIMITS)
    budget.charge(charge("t1", rdp=cost(0.9)), LIMITS)
    budget.check("j1", "p", cost(1.1), LIMITS)  # what j1 spent already is in its plan
    with pytest.raises(PolicyViolation, match="project p has"):
        budget.check("j2", "p", cost(0.8), LIMITS)


@pytest.mark.parametrize("state", ["sqlite"], indirect=True)  # the budget is the edge's
def test_jobs_run_until_the_budget_is_spent_across_a_restart_and_a_second_project(
    state: State, stores: dict[str, LocalStore], tmp_path: Path
) -> None:
    policy = EdgePolicy(privacy_budget=LIMITS)
    with state.sessions.begin() as session:
        for name in (SECOND, THIRD):
            declare_project(session, state.admin_id, private_spec("x", name),
                            approved_by=state.sites.values(), name=name)  # fmt: skip
    root = tmp_path / "edges"
    with ExitStack() as stack:
        played = mortals(state, stores, stack, root, policy)
        first = play(state, played, private_spec("first"))
        assert first.status == "completed"
        for status in first.participation.sites.values():
            assert status.epsilon is not None and 0.7 < status.epsilon <= 0.8
        spent = Budget(played["alpha"].ledger, SITE_KEY, "alpha").spent(LIMITS)
        assert spent.projects["test-project"] == pytest.approx(spent.total)
        for name, site in played.items():  # the edges restart: the ledger is read again
            site.ledger.close()
            site.ledger = Ledger(root / name)
            site.restart()
        again = play(state, played, private_spec("second", epsilon=1.0))
        assert again.status == "failed"
        for status in again.participation.sites.values():
            assert status.state is SiteState.DECLINED
            assert "privacy budget: job" in status.reason and "left" in status.reason
        other = play(state, played, private_spec("other", SECOND, epsilon=1.0))
        assert other.status == "completed"
        last = play(state, played, private_spec("third", THIRD, epsilon=1.2))
        assert last.status == "failed"
        assert "epsilon_total 1.6" in last.participation.sites["alpha"].reason
        history = Budget(played["alpha"].ledger, SITE_KEY, "alpha").history()
        assert {e.project for e in history} == {"test-project", SECOND}


@pytest.mark.parametrize(
    ("policy", "spec", "reason"),
    [
        ({"require_differential_privacy": True}, make_spec(), "only differentially private"),
        ({"privacy_budget": {"delta": 1e-7}}, private_spec("j"), "delta 1e-05 is above"),
    ],
)
def test_a_site_declines_what_its_privacy_policy_does_not_allow(
    stores: dict[str, LocalStore], ledger: Ledger, policy: dict[str, object], spec: JobSpec,
    reason: str,
) -> None:  # fmt: skip
    runner = TaskRunner(
        stores["alpha"], EdgePolicy.model_validate(policy), "alpha", ledger, SITE_KEY
    )
    task = TaskAssignment(task_id="t1", job_id="j1", round=0, kind="stats", spec=spec)
    outcome = runner.run(task, lambda sha: b"")
    assert isinstance(outcome, Decline) and reason in outcome.reason
    assert Budget(ledger, SITE_KEY, "alpha").history() == []


def test_specs_that_differential_privacy_cannot_protect_are_refused() -> None:
    dp = {"differential_privacy": {"epsilon": 1.0}}
    with pytest.raises(ValidationError, match="binary models only"):
        make_spec(model={"type": "cox"}, outcome={"type": "survival", "time": "os_days",
                  "event": "os_event"}, privacy=dp)  # fmt: skip
    with pytest.raises(ValidationError, match="fedprox"):
        make_spec(strategy={"name": "fedprox", "mu": 0.1}, privacy=dp)
    with pytest.raises(ValidationError, match="needs secure_aggregation"):
        AnalysisSpec.model_validate({"name": "a", "dataset": "d", "privacy": dp,
                                     "analysis": {"type": "counts", "rows": "grade"}})  # fmt: skip
    secure = {**dp, "secure_aggregation": True}
    regression = {"type": "cox", "outcome": {"time": "os_days", "event": "os_event"},
                  "covariates": ["ecog"]}  # fmt: skip
    with pytest.raises(ValidationError, match="not available for cox analyses"):
        AnalysisSpec.model_validate({"name": "a", "dataset": "d", "privacy": secure,
                                     "analysis": regression})  # fmt: skip
    counts = {"type": "counts", "rows": "grade"}
    for extra in ({"bounds": {"age_at_diagnosis": (20, 90)}}, {"newton_rounds": 3}):
        ignored = {**secure, "differential_privacy": {"epsilon": 1.0, **extra}}
        with pytest.raises(ValidationError, match="apply to logistic regression only"):
            AnalysisSpec.model_validate({"name": "a", "dataset": "d", "privacy": ignored,
                                         "analysis": counts})  # fmt: skip


@pytest.mark.parametrize(("epsilon", "delta"), [(0.005, 1e-5), (0.02, 1e-10)])
def test_an_epsilon_no_noise_reaches_is_refused(epsilon: float, delta: float) -> None:
    """At delta the accountant's conversion alone costs an epsilon no noise removes (0.0035 at
    1e-5): a job must ask for twice that, else no site could calibrate its noise."""
    floor = accounting.epsilon_floor(delta)
    loud = accounting.epsilon(accounting.skellam_rdp(1e15, 1.0, 1.0), delta)
    assert loud == pytest.approx(floor, rel=1e-3) and epsilon < 2 * floor
    with pytest.raises(ValidationError, match=f"epsilon {epsilon:g} is too small"):
        make_spec(privacy={"differential_privacy": {"epsilon": epsilon, "delta": delta}})
    variance = accounting.calibrate_skellam(2 * floor, delta, 1.0, 1.0)
    assert accounting.epsilon(accounting.skellam_rdp(variance, 1.0, 1.0), delta) <= 2 * floor


@pytest.mark.parametrize("state", ["sqlite"], indirect=True)  # the budget is the edge's
def test_a_secure_private_job_reports_each_sites_epsilon_and_no_loss(
    state: State, tmp_path: Path
) -> None:
    enrol(state, ["gamma"])
    rng = np.random.default_rng(4)
    stores = {}
    for name in ("alpha", "beta", "gamma"):
        x1, x2 = rng.normal(size=150), rng.normal(size=150)
        y = (x1 + rng.normal(size=150) > 0).astype(int)
        stores[name] = save_columns(tmp_path / name, "data", {"x1": x1, "x2": x2, "y": y})
    with state.sessions.begin() as session:
        declare_project(session, state.admin_id, approved_by=[state.sites["gamma"]])
    spec = private_spec("secure").model_copy(
        update={
            "privacy": private_spec("x").privacy.model_copy(update={"secure_aggregation": True})
        }
    )
    with ExitStack() as stack:
        done = play(state, sites(state, stores, stack, tmp_path / "edges"), spec)
    assert done.status == "completed", done.error
    for status in done.participation.sites.values():
        assert status.epsilon is not None and 0.7 < status.epsilon <= 0.8
        assert status.epsilon == 0.8  # rounded up to a tenth: the exact one would tell n
    trained = [r for r in done.rounds if r.kind == "train"]
    assert trained and all(r.train_loss is None for r in trained)
