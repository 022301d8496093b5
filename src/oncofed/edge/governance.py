"""The site admin's decisions on projects: read a project from the orchestrator, record the
decision in the policy file (``approvals``), then tell the orchestrator, naming the policy
version that holds it. The edge's agent sends every decision again whenever the policy
changes, so a decision the orchestrator missed (it was down) reaches it later."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from oncofed.audit import clip
from oncofed.edge import approvals
from oncofed.edge.config import EdgeHome, EdgePolicy, read_policy
from oncofed.edge.errors import EdgeError, PolicyViolation
from oncofed.edge.ledger import Ledger
from oncofed.edge.store import LocalStore
from oncofed.wire.messages import error_detail
from oncofed.wire.projects import ProjectAnswer, ProjectPublic


class GovernanceError(EdgeError):
    """The orchestrator could not be asked, or refused what was sent."""


def read_projects(home: EdgeHome) -> tuple[list[ProjectPublic], EdgePolicy]:
    """Every project of the consortium, and this site's policy (with its decisions)."""
    policy = read_policy(home.policy_file)
    with home.orchestrator_client() as http:
        found = _call(http, "GET", "/site/projects")
    try:
        return [ProjectPublic.model_validate(p) for p in found.json()], policy
    except (ValueError, ValidationError) as exc:
        raise GovernanceError(f"the orchestrator's list of projects is malformed: {exc}") from exc


def decide_project(
    home: EdgeHome, name: str, *, dataset: str | None = None, reason: str | None = None
) -> tuple[ProjectPublic, str]:
    """Approve ``name`` on ``dataset``, or decline it with ``reason``: in the policy file
    first, then at the orchestrator. Returns the project and the new policy version."""
    policy = read_policy(home.policy_file)
    if dataset is not None:
        _servable(home, policy, dataset)
    with home.orchestrator_client() as http:
        response = _call(http, "GET", f"/site/projects/{name}")
        try:
            project = ProjectPublic.model_validate_json(response.content)
        except ValidationError as exc:
            raise GovernanceError(f"project {name!r} came malformed: {exc}") from exc
        if project.name != name:
            raise GovernanceError(f"asked for project {name!r}, was sent {project.name!r}")
        decision = approvals.decide(home.policy_file, project, dataset=dataset, reason=reason)
        policy = read_policy(home.policy_file)
        with Ledger(home.root) as ledger:
            detail = {"project": name, "policy_version": policy.version}
            detail |= {"dataset": dataset} if dataset else {"reason": clip(reason or "")}
            action = "project.approved" if decision.approved else "project.declined"
            ledger.audit(home.identity(), action, actor="edge", site=home.config().site,
                         project=name, detail=detail)  # fmt: skip
        send_decision(http, name, decision, policy.version)
    return project, policy.version


def send_decision(
    http: httpx.Client, name: str, decision: approvals.ProjectDecision, version: str
) -> None:
    """Tell the orchestrator this site's decision on ``name`` (idempotent)."""
    answer = ProjectAnswer(
        approve=decision.approved,
        scope_sha256=decision.scope_sha256,
        dataset=decision.dataset,
        policy_version=version,
        reason=decision.reason,
    )
    _call(http, "PUT", f"/site/projects/{name}/decision", json=answer.model_dump(mode="json"))


def _servable(home: EdgeHome, policy: EdgePolicy, dataset: str) -> None:
    names = LocalStore(home.datasets).names()
    if dataset not in names:
        known = ", ".join(names) or "none yet: import one with `oncofed edge import`"
        raise PolicyViolation(f"no dataset {dataset!r} here (datasets: {known})")
    if policy.allowed_datasets is not None and dataset not in policy.allowed_datasets:
        raise PolicyViolation(
            f"dataset {dataset!r} is not open: {policy.quote('allowed_datasets')}"
        )


def _call(http: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    try:
        response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
    except httpx.TransportError as exc:
        raise GovernanceError(f"cannot reach the orchestrator at {http.base_url}: {exc}") from exc
    if response.status_code >= 400:
        detail = error_detail(response.content)
        raise GovernanceError(f"{method} {path}: HTTP {response.status_code}: {detail}")
    return response
