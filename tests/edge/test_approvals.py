"""A site's decisions on projects: kept in its policy file below the admin's own settings,
and checked against every task before anything else, whatever the orchestrator says."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from oncofed.edge import Agent, EdgeConfig, EdgeHome, approvals
from oncofed.edge.config import EdgePolicy, read_policy
from oncofed.edge.errors import PolicyFileError, PolicyViolation
from oncofed.wire.messages import TaskAssignment
from oncofed.wire.projects import ProjectPublic, ProjectScope
from tests.edge.test_agent import Script, stats_task
from tests.support import approve_here, make_spec, save_columns

ADMIN = "# our ethics board's limits, 2026-11\nmin_cohort_size: 30  # never fewer\n"
SCOPE = ProjectScope(kinds=["train"], models=["logistic"], fields=["ext.x1", "ext.x2", "ext.y"])


def project(name: str = "study", scope: ProjectScope = SCOPE) -> ProjectPublic:
    return ProjectPublic(
        name=name, title="A study", purpose="To learn.", principal_investigator="Dr P",
        owner="rita", members=["rita"], scope=scope, scope_sha256=scope.sha256(),
        created=datetime.now(UTC), sites=[],
    )  # fmt: skip


def task(**spec: object) -> TaskAssignment:
    spec = {"project": "study", **spec}
    return TaskAssignment(task_id="t1", job_id="j1", round=0, kind="stats", spec=make_spec(**spec))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(ADMIN)
    return path


def test_a_decision_is_written_below_the_admins_settings_which_stay_as_written(
    policy_file: Path,
) -> None:
    before = read_policy(policy_file).version
    approvals.decide(policy_file, project(), dataset="main")
    text = policy_file.read_text()
    assert text.startswith(ADMIN) and approvals.MARKER in text
    policy = read_policy(policy_file)
    assert policy.min_cohort_size == 30 and policy.version != before
    decision = policy.projects["study"]
    assert decision.approved and decision.dataset == "main" and decision.scope == SCOPE

    approvals.decide(policy_file, project("other"), reason="not our population")
    approvals.decide(policy_file, project(), reason="withdrawn")  # a decision replaced
    policy = read_policy(policy_file)
    assert policy_file.read_text().startswith(ADMIN)
    assert policy_file.read_text().count(approvals.MARKER) == 1
    assert {n: d.approved for n, d in policy.projects.items()} == {"study": False, "other": False}
    assert policy.projects["study"].reason == "withdrawn" and policy.projects["study"].scope is None


def test_a_hand_widened_scope_makes_the_policy_invalid(policy_file: Path) -> None:
    """The copy of the scope and its hash must agree: editing the copy (adding a field) does
    not widen what the site approved, it stops every task until it is put right."""
    approvals.decide(policy_file, project(), dataset="main")
    text = policy_file.read_text().replace("- ext.y", "- ext.y\n      - ext.secret")
    policy_file.write_text(text)
    with pytest.raises(PolicyFileError, match="scope"):
        read_policy(policy_file)


def test_a_task_runs_only_in_a_project_approved_here_on_the_dataset_chosen_here(
    policy_file: Path,
) -> None:
    with pytest.raises(PolicyViolation, match="not approved here"):
        approvals.check(read_policy(policy_file), task())
    with pytest.raises(PolicyViolation, match="belongs to no project"):
        approvals.check(read_policy(policy_file), task(project=None))
    approvals.decide(policy_file, project(), dataset="registry-2025")
    policy = read_policy(policy_file)
    runs = approvals.check(policy, task(dataset="whatever-they-said"))
    assert runs.spec.dataset == "registry-2025"
    approvals.decide(policy_file, project(), reason="ethics withdrew it")
    policy = read_policy(policy_file)
    with pytest.raises(PolicyViolation, match=f"declined here \\(policy {policy.version}\\)"):
        approvals.check(policy, task())


def test_a_jobs_tasks_run_on_one_spec_object_as_they_came_on_one(policy_file: Path) -> None:
    """The spec on the dataset chosen here is made once for the tasks that share a spec object
    (a job's), so what is derived from it (its canonical JSON) is made once too; a spec that
    differs gets its own."""
    approvals.decide(policy_file, project(), dataset="registry-2025")
    policy = read_policy(policy_file)
    first = task(dataset="theirs")
    again = first.model_copy(update={"task_id": "t2", "round": 1})
    other = task(dataset="theirs", seed=7)
    runs, runs_again, runs_other = (approvals.check(policy, t) for t in (first, again, other))
    assert runs.spec is runs_again.spec and runs.spec.dataset == "registry-2025"
    assert runs_other.spec is not runs.spec and runs_other.spec.seed == 7
    assert runs_other.spec.dataset == "registry-2025"
    assert first.spec.dataset == "theirs"  # the task as it came is left as it came


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"model": {"type": "mlp"}}, "model type 'mlp'"),
        ({"features": ["ext.x1", "ext.x2", "ext.secret"]}, "fields ext.secret"),
        ({"cohort": {"sex": ["female"]}}, "fields sex"),
    ],
)
def test_a_job_outside_the_scope_approved_is_refused(
    policy_file: Path, spec: dict[str, object], problem: str
) -> None:
    approvals.decide(policy_file, project(), dataset="main")
    with pytest.raises(PolicyViolation, match=problem):
        approvals.check(read_policy(policy_file), task(**spec))


def test_a_secure_project_refuses_a_job_in_the_clear(policy_file: Path) -> None:
    secure = ProjectScope.model_validate(
        SCOPE.model_dump() | {"privacy": {"secure_aggregation": True}}
    )
    approvals.decide(policy_file, project(scope=secure), dataset="main")
    with pytest.raises(PolicyViolation, match="securely aggregated"):
        approvals.check(read_policy(policy_file), task())


def test_a_policy_made_in_code_has_a_version_too() -> None:
    assert EdgePolicy().version != EdgePolicy(min_cohort_size=30).version


def test_an_orchestrator_cannot_run_a_job_of_a_project_this_site_did_not_approve(
    tmp_path: Path,
) -> None:
    """The attack: a compromised orchestrator sends this site a task of a project its admin
    never approved (or of an approved project, beyond its scope). With the approval in the
    policy the same task runs (the attack is real); without it, or beyond it, the edge
    refuses it, naming the rule and its policy version, before reading a row."""
    home = EdgeHome(tmp_path / "edge")
    home.create(EdgeConfig.model_validate({"orchestrator": "http://orch.test", "site": "a"}), "c")
    rng = np.random.default_rng(1)
    columns = {"x1": rng.normal(size=60), "x2": rng.normal(size=60), "y": rng.integers(0, 2, 60)}
    save_columns(home.datasets, "data", columns)

    def answer(task: TaskAssignment) -> tuple[str, dict[str, object]]:
        script = Script(task, outages=0)
        agent = Agent(home, transport=httpx.MockTransport(script))
        try:
            agent.run(max_tasks=1)
        finally:
            agent.close()
        [(path, body)] = script.posts
        return path.rsplit("/", 1)[-1], body

    kind, body = answer(stats_task())
    assert kind == "decline" and "'test-project' is not approved here" in str(body["reason"])
    approve_here(home.policy_file, make_spec())
    assert answer(stats_task())[0] == "result"  # approved: the same task runs
    kind, body = answer(stats_task(features=["ext.x1", "age_at_diagnosis"]))
    version = read_policy(home.policy_file).version
    assert kind == "decline" and "fields age_at_diagnosis" in str(body["reason"])
    assert f"policy {version}" in str(body["reason"])
