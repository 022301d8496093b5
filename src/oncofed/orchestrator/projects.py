"""Projects: researchers declare them, each site's edge approves or declines them, and a job
runs only within its project's scope and only at the sites that approved it.

The orchestrator's checks here are for the researcher's benefit (a clear refusal at once);
each edge checks every task again against the scope it approved, whatever is sent."""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, select, true
from sqlalchemy.orm import QueryableAttribute, Session, selectinload

from oncofed.orchestrator.db import (
    Principal,
    Project,
    ProjectMember,
    ProjectSite,
    Site,
    utcnow,
)
from oncofed.orchestrator.errors import BadRequest, Conflict, Forbidden, NotFound
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.projects import (
    NewProject,
    ProjectAnswer,
    ProjectPublic,
    ProjectScope,
    SiteDecision,
)
from oncofed.wire.spec import JobSpec

_LOAD = (
    selectinload(Project.owner),
    selectinload(Project.members),
    selectinload(Project.decisions).selectinload(ProjectSite.site),
)


def create(session: Session, owner_id: int, new: NewProject) -> ProjectPublic:
    """Store a project; its creator is its first member, ``new.members`` (researchers) the
    others."""
    if session.scalar(select(Project.id).where(Project.name == new.name)) is not None:
        raise Conflict(f"a project named {new.name!r} exists already")
    owner = session.get(Principal, owner_id)
    assert owner is not None  # the caller was authenticated as it
    members = [owner, *_researchers(session, [m for m in new.members if m != owner.name])]
    project = Project(
        name=new.name,
        title=new.title,
        purpose=new.purpose,
        principal_investigator=new.principal_investigator,
        owner=owner,
        scope_json=new.scope.model_dump_json(),
        scope_sha=new.scope.sha256(),
        members=members,
    )
    session.add(project)
    session.flush()
    return public(session, project)


def add_member(session: Session, name: str, member: str, caller_id: int, role: str) -> None:
    """Add a researcher to a project: its owner or the operator may."""
    project = _project(session, name, visible(role, caller_id))
    if role != "operator" and project.owner_id != caller_id:
        raise Forbidden(f"only project {name!r}'s owner or the operator adds members")
    (researcher,) = _researchers(session, [member])
    if researcher not in project.members:
        project.members.append(researcher)


def visible(
    role: str, caller_id: int, project: QueryableAttribute[int | None] | None = None
) -> ColumnElement[bool]:
    """The projects (by ``project``, their id: ``Project.id`` by default) a caller may read:
    a researcher's own (as a member); every one for the operator, site admins and sites (who
    must read a project to decide on it)."""
    if role == "researcher":
        member = select(ProjectMember.project_id).where(
            ProjectMember.project_id == (Project.id if project is None else project),
            ProjectMember.principal_id == caller_id,
        )
        return exists(member)
    return true()


def listed(session: Session, role: str, caller_id: int) -> list[ProjectPublic]:
    query = select(Project).options(*_LOAD).where(visible(role, caller_id))
    return [public(session, p) for p in session.scalars(query.order_by(Project.name))]


def read(session: Session, name: str, role: str, caller_id: int) -> ProjectPublic:
    """A project the caller may read (one they may not is as absent as one that never was)."""
    return public(session, _project(session, name, visible(role, caller_id)))


def decide(
    session: Session, name: str, site_id: int, answer: ProjectAnswer
) -> tuple[SiteDecision, bool]:
    """Record a site's decision, for the scope it read (an answer about another scope is a
    conflict: the edge read something else, or was shown a forgery); and whether it differs
    from what was on record (an edge sends its decisions again whenever its policy changed)."""
    project = _project(session, name)
    if answer.scope_sha256 != project.scope_sha:
        raise Conflict(
            f"project {name!r} has scope {project.scope_sha[:12]}, not "
            f"{answer.scope_sha256[:12]}: read the project again before deciding"
        )
    status = "approved" if answer.approve else "declined"
    said = (status, answer.dataset, answer.reason, answer.policy_version)
    row = session.get(ProjectSite, (project.id, site_id))
    if row is not None and (row.status, row.dataset, row.reason, row.policy_version) == said:
        return _decision(row), False
    if row is None:
        row = ProjectSite(project_id=project.id, site_id=site_id)
        session.add(row)
    row.status, row.dataset, row.reason, row.policy_version = said
    row.decided_at = utcnow()
    session.flush()
    session.refresh(row)
    return _decision(row), True


def for_job(
    session: Session, name: str, caller_id: int, role: str, spec: JobSpec | AnalysisSpec
) -> tuple[int, list[str]]:
    """The project a job is submitted in (its id) and the sites that approved it, when the
    caller is a member and the job is within its scope."""
    project = _project(session, name, visible(role, caller_id))
    if problems := ProjectScope.model_validate_json(project.scope_json).admits(spec):
        raise BadRequest(f"the job is outside project {name!r}: {'; '.join(problems)}")
    approved = [
        d.site.name
        for d in project.decisions
        if d.status == "approved" and d.site.credential_hash is not None
    ]
    if not approved:
        raise Conflict(f"no enrolled site has approved project {name!r} yet")
    return project.id, approved


def public(session: Session, project: Project) -> ProjectPublic:
    """The project with every site's decision (sites that said nothing: pending)."""
    decided = {d.site_id: d for d in project.decisions}
    pending = session.scalars(
        select(Site).where(Site.id.not_in(decided), Site.revoked_at.is_(None)).order_by(Site.name)
    )
    sites = sorted(
        [_decision(d) for d in decided.values()]
        + [SiteDecision(site=s.name, status="pending") for s in pending],
        key=lambda d: d.site,
    )
    return ProjectPublic(
        name=project.name,
        title=project.title,
        purpose=project.purpose,
        principal_investigator=project.principal_investigator,
        owner=project.owner.name,
        members=[m.name for m in project.members],
        scope=ProjectScope.model_validate_json(project.scope_json),
        scope_sha256=project.scope_sha,
        created=project.created_at,
        sites=sites,
    )


def _decision(row: ProjectSite) -> SiteDecision:
    return SiteDecision(
        site=row.site.name,
        status="approved" if row.status == "approved" else "declined",
        dataset=row.dataset,
        policy_version=row.policy_version,
        reason=row.reason,
        decided=row.decided_at,
    )


def _project(session: Session, name: str, seen: ColumnElement[bool] | None = None) -> Project:
    """The project named ``name`` (among those ``seen``, when given)."""
    query = select(Project).options(*_LOAD).where(Project.name == name)
    project = session.scalar(query if seen is None else query.where(seen))
    if project is None:
        raise NotFound(f"no project {name!r}")
    return project


def _researchers(session: Session, names: list[str]) -> list[Principal]:
    found = {
        p.name: p
        for p in session.scalars(
            select(Principal).where(Principal.name.in_(names), Principal.role == "researcher")
        )
    }
    if missing := [n for n in names if n not in found]:
        raise NotFound(f"no researcher named {', '.join(missing)}")
    return [found[n] for n in names]
