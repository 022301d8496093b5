"""Projects: what a study declares once (its jobs' kinds, model and analysis types, the data
fields they read, their privacy settings) and what each site decided about it.

A site approves a project's *scope*, named by its SHA-256 (``ProjectScope.sha256``): the edge
keeps the scope it approved and checks every task against that copy, so an orchestrator
cannot widen a project after the sites said yes. A project never changes its scope: a study
that needs more declares a new project."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from oncofed.wire.analysis import Analysis, AnalysisSpec
from oncofed.wire.base import Message
from oncofed.wire.spec import JobSpec, Name

JobKind = Literal["train", "analysis"]
AnalysisType = Literal["counts", "summary", "kaplan_meier", "cox", "logistic"]
Variable = Annotated[str, Field(min_length=1, max_length=96)]
Line = Annotated[str, Field(min_length=1, max_length=200)]
Paragraph = Annotated[str, Field(min_length=1, max_length=4000)]
PolicyVersion = Annotated[str, Field(pattern=r"^[0-9a-f]{12,64}$")]
"""A site's policy version: the leading hex digits of the SHA-256 of what it enforces."""
ALWAYS_READ = frozenset({"time_origin"})
"""Variables every job reads (the date its patients' times count from)."""
assert set(get_args(AnalysisType)) == {
    get_args(member.model_fields["type"].annotation)[0]
    for member in get_args(get_args(Analysis)[0])
}, "AnalysisType must name every analysis type"


class ProjectPrivacy(Message):
    secure_aggregation: bool = Field(
        False, description="Every job of the project is securely aggregated."
    )


class ProjectScope(Message):
    """What the project's jobs may do: exactly what a site approves."""

    kinds: list[JobKind] = Field(min_length=1, max_length=2)
    models: list[Name] = Field(default_factory=list, max_length=64)
    analyses: list[AnalysisType] = Field(default_factory=list, max_length=5)
    fields: list[Variable] = Field(min_length=1, max_length=1000)
    privacy: ProjectPrivacy = Field(default_factory=ProjectPrivacy)

    @model_validator(mode="after")
    def _coherent(self) -> ProjectScope:
        for name in ("kinds", "models", "analyses", "fields"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice")
        if ("train" in self.kinds) != bool(self.models):
            raise ValueError("a project names model types if and only if it trains models")
        if ("analysis" in self.kinds) != bool(self.analyses):
            raise ValueError("a project names analysis types if and only if it runs analyses")
        return self

    def sha256(self) -> str:
        """What a site approves, named: the SHA-256 of the scope's canonical JSON."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def admits(self, spec: JobSpec | AnalysisSpec) -> list[str]:
        """Why ``spec`` falls outside this scope (nothing: it is inside)."""
        problems = []
        if spec.kind not in self.kinds:
            problems.append(f"the project runs no {spec.kind} jobs")
        if isinstance(spec, JobSpec) and spec.model.type not in self.models:
            problems.append(f"model type {spec.model.type!r} is not among {self.models}")
        if isinstance(spec, AnalysisSpec) and spec.analysis.type not in self.analyses:
            problems.append(f"analysis {spec.analysis.type!r} is not among {self.analyses}")
        if extra := sorted(spec.variables - set(self.fields) - ALWAYS_READ):
            problems.append(f"fields {', '.join(extra)} are not among the project's fields")
        if self.privacy.secure_aggregation and not spec.privacy.secure_aggregation:
            problems.append("the project's jobs are securely aggregated; this one is not")
        return problems


def covering(specs: Iterable[JobSpec | AnalysisSpec]) -> ProjectScope:
    """The narrowest scope that admits every one of ``specs`` (securely aggregated only when
    they all are): what a researcher declares for a set of jobs written beforehand."""
    specs = list(specs)
    return ProjectScope.model_validate(
        {
            "kinds": sorted({s.kind for s in specs}),
            "models": sorted({s.model.type for s in specs if isinstance(s, JobSpec)}),
            "analyses": sorted({s.analysis.type for s in specs if isinstance(s, AnalysisSpec)}),
            "fields": sorted(set().union(*(s.variables for s in specs)) - ALWAYS_READ),
            "privacy": {"secure_aggregation": all(s.privacy.secure_aggregation for s in specs)},
        }
    )


class NewProject(Message):
    """A researcher proposes a study; its sites each approve or decline it."""

    name: Name
    title: Line
    purpose: Paragraph
    principal_investigator: Line
    members: list[Name] = Field(
        default_factory=list, max_length=1000, description="Researchers besides its creator."
    )
    scope: ProjectScope


Status = Literal["pending", "approved", "declined"]


class SiteDecision(Message):
    site: str
    status: Status
    dataset: str | None = None
    policy_version: str | None = None
    reason: str | None = None
    decided: datetime | None = None


class ProjectPublic(Message):
    name: str
    title: str
    purpose: str
    principal_investigator: str
    owner: str
    members: list[str]
    scope: ProjectScope
    scope_sha256: str
    created: datetime
    sites: list[SiteDecision]


class ProjectAnswer(Message):
    """A site's decision on a project, sent by its edge: for the scope it read (by hash),
    under the policy version that records it."""

    approve: bool
    scope_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    dataset: Name | None = None
    policy_version: PolicyVersion
    reason: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ProjectAnswer:
        if self.approve and self.dataset is None:
            raise ValueError("an approval names the dataset that serves the project")
        if not self.approve and self.dataset is not None:
            raise ValueError("a decline names no dataset")
        return self


class Member(Message):
    name: Name
