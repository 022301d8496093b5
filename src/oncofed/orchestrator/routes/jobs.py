"""Researchers submit jobs, follow them and download the resulting model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from oncofed.orchestrator.db import Job, Round, Task
from oncofed.orchestrator.deps import CoordinatorDep, CurrentResearcher, SessionDep
from oncofed.orchestrator.errors import Conflict, NotFound
from oncofed.orchestrator.views import job_public
from oncofed.wire.analysis import AnySpec
from oncofed.wire.messages import JobCreated, JobPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])
PAGE, MAX_PAGE = 100, 1000
"""Jobs listed per request by default, and at most."""
_LOAD = selectinload(Job.rounds).selectinload(Round.tasks).selectinload(Task.site)


@router.post("", status_code=201)
def submit(spec: AnySpec, caller: CurrentResearcher, coordinator: CoordinatorDep) -> JobCreated:
    return coordinator.submit(spec, caller.id)


@router.get("")
def list_jobs(
    session: SessionDep,
    _: CurrentResearcher,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[JobPublic]:
    """Jobs in the order they were submitted, ``limit`` at a time from ``offset`` (a page
    shorter than ``limit`` is the last)."""
    jobs = session.scalars(
        select(Job).options(_LOAD).order_by(Job.created_at, Job.id).offset(offset).limit(limit)
    )
    return [job_public(job) for job in jobs]


@router.get("/{job_id}")
def get_job(job_id: str, session: SessionDep, _: CurrentResearcher) -> JobPublic:
    return job_public(_job(session, job_id))


@router.get("/{job_id}/model", response_class=FileResponse)
def get_model(
    job_id: str, session: SessionDep, _: CurrentResearcher, coordinator: CoordinatorDep
) -> FileResponse:
    """The latest global model (the final one once the job has completed), as safetensors."""
    job = _job(session, job_id)
    if job.model_sha is None:
        raise Conflict(f"job {job_id} has no model yet")
    return FileResponse(
        coordinator.blobs.path(job.model_sha),
        media_type="application/octet-stream",
        filename=f"{job.name}.safetensors",
    )


def _job(session: SessionDep, job_id: str) -> Job:
    job = session.scalar(select(Job).options(_LOAD).where(Job.id == job_id))
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job
