"""Researchers submit jobs, follow them and download the resulting model.

A researcher sees the jobs of the projects they are a member of, a site admin the jobs their
site was asked to take part in (and no model), the operator every job."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import ColumnElement, exists, or_, select, true
from sqlalchemy.orm import Session, selectinload

from oncofed.orchestrator import projects
from oncofed.orchestrator.db import AUDIT, Job, Round, Task
from oncofed.orchestrator.deps import (
    Caller,
    CoordinatorDep,
    CurrentPrincipal,
    CurrentResearcher,
    SessionDep,
    SessionsDep,
    SettingsDep,
)
from oncofed.orchestrator.errors import BadRequest, Conflict, Forbidden, NotFound
from oncofed.orchestrator.quotas import QuotasDep
from oncofed.orchestrator.views import job_public
from oncofed.wire.analysis import AnySpec
from oncofed.wire.messages import JobCreated, JobPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])
PAGE, MAX_PAGE = 100, 1000
"""Jobs listed per request by default, and at most."""
_LOAD = selectinload(Job.rounds).selectinload(Round.tasks).selectinload(Task.site)


@router.post("", status_code=201)
def submit(
    spec: AnySpec,
    request: Request,
    caller: CurrentResearcher,
    session: SessionDep,
    coordinator: CoordinatorDep,
    quotas: QuotasDep,
    settings: SettingsDep,
) -> JobCreated:
    """Submit a job in one of the caller's projects: it runs at the sites that approved the
    project and were seen within ``site_seen_window_s`` (those of ``spec.sites`` when given,
    seen or not: the answer names those that were not), if it is within the project's
    scope."""
    if spec.project is None:
        raise BadRequest("a job names its project (`project:`): it runs where that is approved")
    project_id, approved = projects.for_job(session, spec.project, caller.id, caller.role, spec)
    request.app.state.sightings.flush(request.app.state.sessions)  # up to this request
    window = timedelta(seconds=settings.site_seen_window_s)
    with quotas.admit(spec, caller):
        return coordinator.submit(spec, caller.id, project_id, approved, window)


@router.get("")
def list_jobs(
    session: SessionDep,
    caller: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[JobPublic]:
    """Jobs in the order they were submitted, ``limit`` at a time from ``offset`` (a page
    shorter than ``limit`` is the last)."""
    jobs = session.scalars(
        select(Job)
        .options(_LOAD)
        .where(_visible(caller))
        .order_by(Job.created_at, Job.id)
        .offset(offset)
        .limit(limit)
    )
    return [job_public(job) for job in jobs]


@router.get("/{job_id}")
def get_job(job_id: str, session: SessionDep, caller: CurrentPrincipal) -> JobPublic:
    job = _job(session, job_id, caller)
    if job.status != "running":  # its results (while it runs, watches poll it: not recorded)
        AUDIT.record(
            session,
            "result.read",
            actor=caller.actor,
            project=job.project.name if job.project else None,
            user=caller.name,
            detail={"job": job.id, "status": job.status},
        )
    return job_public(job)


@router.get("/{job_id}/model", response_class=FileResponse)
def get_model(
    job_id: str, session: SessionDep, caller: CurrentPrincipal, coordinator: CoordinatorDep
) -> FileResponse:
    """The latest global model (the final one once the job has completed), as safetensors."""
    job = _job(session, job_id, caller)
    if caller.role == "site_admin":
        raise Forbidden("a job's model goes to its researchers, not to site admins")
    if job.model_sha is None:
        raise Conflict(f"job {job_id} has no model yet")
    AUDIT.record(
        session,
        "model.downloaded",
        actor=caller.actor,
        project=job.project.name if job.project else None,
        user=caller.name,
        detail={"job": job.id, "model_sha256": job.model_sha},
    )
    return FileResponse(
        coordinator.blobs.path(job.model_sha),
        media_type="application/octet-stream",
        filename=f"{job.name}.safetensors",
    )


@router.post("/{job_id}/cancel")
def cancel(
    job_id: str, sessions: SessionsDep, caller: CurrentResearcher, coordinator: CoordinatorDep
) -> JobPublic:
    """Cancel a running job (the operator, or a researcher who may read it): its open tasks
    are withdrawn, its rounds in progress abandoned, and it ends ``cancelled``; the audit log
    names who cancelled it."""
    with sessions() as session:
        _job(session, job_id, caller)  # one the caller may not read is not there
    coordinator.cancel(job_id, caller.actor)
    with sessions() as session:
        return job_public(_job(session, job_id, caller))


def _visible(caller: Caller) -> ColumnElement[bool]:
    """The jobs ``caller`` may see."""
    if caller.role == "researcher":  # a member of its project (its owner, if it has none)
        return or_(
            projects.visible("researcher", caller.id, Job.project_id), Job.owner_id == caller.id
        )
    if caller.role == "site_admin":
        asked = select(Task.id).join(Round).where(Round.job_id == Job.id)
        return exists(asked.where(Task.site_id == caller.site_id))
    return true()


def _job(session: Session, job_id: str, caller: Caller) -> Job:
    """The job, when ``caller`` may see it: one they may not see is as absent as one that
    never was."""
    job = session.scalar(select(Job).options(_LOAD).where(Job.id == job_id, _visible(caller)))
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job
