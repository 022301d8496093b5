"""Projects: researchers declare them and add members; every person reads those in their
scope; each site's edge reads them and sends its site's decision."""

from __future__ import annotations

from fastapi import APIRouter

from oncofed.audit import clip
from oncofed.orchestrator import projects
from oncofed.orchestrator.db import AUDIT
from oncofed.orchestrator.deps import (
    CurrentPrincipal,
    CurrentResearcher,
    CurrentSite,
    SessionDep,
)
from oncofed.wire.projects import Member, NewProject, ProjectAnswer, ProjectPublic, SiteDecision

router = APIRouter(tags=["projects"])


@router.post("/projects", status_code=201)
def create_project(
    project: NewProject, session: SessionDep, caller: CurrentResearcher
) -> ProjectPublic:
    """Declare a project; every site's admin then approves or declines it for their site."""
    created = projects.create(session, caller.id, project)
    detail = {"scope_sha256": created.scope_sha256, "members": created.members}
    AUDIT.record(
        session,
        "project.created",
        actor=caller.actor,
        project=project.name,
        user=caller.name,
        detail=detail,
    )
    return created


@router.get("/projects")
def list_projects(session: SessionDep, caller: CurrentPrincipal) -> list[ProjectPublic]:
    """A researcher's projects; every project for the operator and site admins."""
    return projects.listed(session, caller.role, caller.id)


@router.get("/projects/{name}")
def get_project(name: str, session: SessionDep, caller: CurrentPrincipal) -> ProjectPublic:
    return projects.read(session, name, caller.role, caller.id)


@router.post("/projects/{name}/members", status_code=204)
def add_member(name: str, member: Member, session: SessionDep, caller: CurrentResearcher) -> None:
    """Add a researcher (the project's owner or the operator may)."""
    projects.add_member(session, name, member.name, caller.id, caller.role)
    AUDIT.record(
        session, "project.member_added", actor=caller.actor, project=name, user=member.name
    )


@router.get("/site/projects")
def site_projects(session: SessionDep, site: CurrentSite) -> list[ProjectPublic]:
    """Every project, with this site's own decision (others' are not its business)."""
    return [_own(p, site.name) for p in projects.listed(session, "site", site.id)]


@router.get("/site/projects/{name}")
def site_project(name: str, session: SessionDep, site: CurrentSite) -> ProjectPublic:
    return _own(projects.read(session, name, "site", site.id), site.name)


@router.put("/site/projects/{name}/decision")
def decide(
    name: str, answer: ProjectAnswer, session: SessionDep, site: CurrentSite
) -> SiteDecision:
    """This site's decision on a project, as its admin took it at the edge."""
    decided, changed = projects.decide(session, name, site.id, answer)
    if not changed:
        return decided
    said = answer.dataset if answer.approve else clip(answer.reason or "")
    detail = {
        "policy_version": answer.policy_version,
        "scope_sha256": answer.scope_sha256,
        "dataset" if answer.approve else "reason": said or "",
    }
    action = "project.approved" if answer.approve else "project.declined"
    AUDIT.record(session, action, actor=site.actor, project=name, site=site.name, detail=detail)
    return decided


def _own(project: ProjectPublic, site: str) -> ProjectPublic:
    return project.model_copy(update={"sites": [d for d in project.sites if d.site == site]})
