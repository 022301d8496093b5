"""The site's decisions on projects, kept in its policy file, and the check every task passes
first: its project approved here, within the scope approved here, on the dataset chosen here.

The decisions are the last block of ``policy.yaml``, below a marker line, written only by
``oncofed edge approve`` and ``decline`` (what the admin wrote above it, comments included,
is kept as it is). A decision copies the scope the admin approved: the edge checks tasks
against that copy, never against what the orchestrator says the project is now."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from oncofed._files import replace_file
from oncofed.edge.derived import PerSpec
from oncofed.edge.errors import PolicyViolation
from oncofed.wire.analysis import AnySpec
from oncofed.wire.messages import TaskAssignment
from oncofed.wire.projects import ProjectPublic, ProjectScope

if TYPE_CHECKING:
    from oncofed.edge.config import EdgePolicy

MARKER = "# -- projects: written by `oncofed edge approve` and `decline`; edit with them --"


class ProjectDecision(BaseModel):
    """This site's decision on one project."""

    model_config = ConfigDict(extra="forbid")

    approved: bool
    decided: datetime
    scope_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    dataset: str | None = None
    scope: ProjectScope | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _whole(self) -> ProjectDecision:
        if self.approved and (self.dataset is None or self.scope is None):
            raise ValueError("an approval names its dataset and copies the scope approved")
        if self.scope is not None and self.scope.sha256() != self.scope_sha256:
            raise ValueError("the scope copied is not the scope approved (scope_sha256)")
        return self


def check(policy: EdgePolicy, task: TaskAssignment) -> TaskAssignment:
    """``task`` as this site runs it (on the dataset chosen for its project), or
    ``PolicyViolation`` naming why it does not run here."""
    name = task.spec.project
    if name is None:
        raise PolicyViolation("the job belongs to no project: a site runs only approved projects")
    decision = policy.projects.get(name)
    if decision is None:
        raise PolicyViolation(
            f"project {name!r} is not approved here (policy {policy.version}): the site's "
            f"admin decides with `oncofed edge approve {name} --dataset NAME`"
        )
    if not decision.approved:
        raise PolicyViolation(f"project {name!r} was declined here (policy {policy.version})")
    assert decision.scope is not None and decision.dataset is not None  # an approval's
    if problems := decision.scope.admits(task.spec):
        raise PolicyViolation(
            f"the job is outside project {name!r} as approved here (policy "
            f"{policy.version}): {'; '.join(problems)}"
        )
    return task.model_copy(update={"spec": _AS_RUN(task.spec, decision.dataset)})


_AS_RUN: PerSpec[str, AnySpec] = PerSpec(
    lambda spec, dataset: spec.model_copy(update={"dataset": dataset})
)
"""Specs on the dataset chosen here: one object for a job's tasks, as they came in one
(``guard.task_hashes`` dumps a spec once for them)."""


def decide(
    policy_file: Path,
    project: ProjectPublic,
    *,
    dataset: str | None = None,
    reason: str | None = None,
) -> ProjectDecision:
    """Write this site's decision on ``project`` into the policy file (approve with
    ``dataset``, decline with ``reason``), atomically and only when the result is a valid
    policy; ``PolicyFileError`` otherwise."""
    from oncofed.edge.config import parse_policy

    decision = ProjectDecision(
        approved=dataset is not None,
        decided=datetime.now(UTC).replace(microsecond=0),
        scope_sha256=project.scope_sha256,
        dataset=dataset,
        scope=project.scope if dataset is not None else None,
        reason=reason,
    )
    text = policy_file.read_text(encoding="utf-8-sig")
    admin, _, _ = text.partition(MARKER)
    current = parse_policy(text, policy_file)
    decided = {
        name: d.model_dump(mode="json", exclude_none=True) for name, d in current.projects.items()
    }
    decided[project.name] = decision.model_dump(mode="json", exclude_none=True)
    block = yaml.safe_dump({"projects": decided}, sort_keys=True, width=88)
    updated = admin.rstrip("\n") + "\n\n" + MARKER + "\n" + block
    parse_policy(updated, policy_file)  # never write a policy the edge would refuse
    replace_file(policy_file, updated)
    return decision
