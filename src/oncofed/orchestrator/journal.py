"""What the coordinator writes in the audit log (``oncofed.audit``, ``db.AUDIT``): each job
submitted (with the SHA-256 of its spec, the hash the sites pin), each round closed (one entry
for all its sites: who took part, who dropped out, the model it published) and each job ended.

A job's end is noted when its status is set (an attribute event, whichever module ends it) and
recorded with the rounds closed in the same transaction (``closed``), before it commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.orm import Session, object_session

from oncofed.audit import actor, clip, sha256_of
from oncofed.orchestrator.db import AUDIT, Job, Principal, Project, Round, Site, Task
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.spec import JobSpec

ORCHESTRATOR = "orchestrator"
"""The actor of what the orchestrator does by itself (closing rounds, ending jobs)."""
_ENDED = "oncofed.audit.ended"  # Session.info key: ids of the jobs that ended in it
_BY = "oncofed.audit.ended_by"  # Session.info key: job id -> who ended it, when not us
_ANSWERS = (
    select(Task.round_id, Site.name, Task.status)
    .join(Site, Task.site_id == Site.id)
    .where(Task.round_id.in_(bindparam("ids", expanding=True)))
    .order_by(Site.name)
)
"""Each site's status in the rounds ``ids`` (built once: every closing reads it)."""
_WHO = (
    select(Job.id, Principal.name, Project.name)
    .outerjoin(Principal, Job.owner_id == Principal.id)
    .outerjoin(Project, Job.project_id == Project.id)
    .where(Job.id.in_(bindparam("ids", expanding=True)))
)
"""The names of the owner and of the project (None: outside any) of the jobs ``ids``."""
_WHOSE: dict[str, tuple[str | None, str | None]] = {}
"""``_WHO``'s answers, kept: a job's owner and project never change, nor do their names."""


@event.listens_for(Job.status, "set")
def _note_end(job: Job, value: str, old: Any, _initiator: Any) -> None:
    session = object_session(job)
    if session is not None and value != "running" and value != old:
        session.info.setdefault(_ENDED, set()).add(job.id)


def submitted(session: Session, job: Job, spec: JobSpec | AnalysisSpec, sites: list[str]) -> None:
    owner = session.get(Principal, job.owner_id)
    who = actor(owner.role, owner.name) if owner is not None else ORCHESTRATOR
    detail = {
        "job": job.id,
        "name": spec.name,
        "kind": "analysis" if isinstance(spec, AnalysisSpec) else "training",
        "spec_sha256": sha256_of(spec.model_dump(mode="json")),
        "secure": spec.privacy.secure_aggregation,
        "sites": sites,
    }
    AUDIT.record(
        session, "job.submitted", actor=who, project=spec.project, user=_name(owner), detail=detail
    )


def ended_by(session: Session, job: Job, who: str) -> None:
    """Name ``who`` (``researcher:rita``) as the actor of the job's end in this transaction
    (a cancellation), instead of the orchestrator."""
    session.info.setdefault(_BY, {})[job.id] = who


def closed(session: Session, round_ids: Iterable[int]) -> None:
    """One entry per round closed in this transaction, then one per job that ended in it."""
    ids = sorted(round_ids)
    ended: set[str] = session.info.pop(_ENDED, set())
    by: dict[str, str] = session.info.pop(_BY, {})
    if not ids and not ended:
        return
    session.flush()  # the tasks' final statuses
    names: dict[int, list[tuple[str, str]]] = {}
    rows = session.connection().execute(_ANSWERS, {"ids": ids})
    for round_id, site, status in rows:
        names.setdefault(round_id, []).append((site, status))
    rounds = [session.get(Round, round_id) for round_id in ids]
    whose = _whose(session, {rnd.job_id for rnd in rounds if rnd is not None} | ended)
    for rnd in rounds:
        assert rnd is not None  # closed in this transaction
        sites = names.get(rnd.id, [])
        detail = {
            "job": rnd.job_id,
            "round": rnd.number,
            "kind": rnd.kind,
            "secure": rnd.phase is not None,
            "participants": [site for site, status in sites if status == "accepted"],
            "dropouts": [site for site, status in sites if status != "accepted"],
            "model_sha256": rnd.job.model_sha if rnd.kind == "train" else None,
        }
        user, project = whose[rnd.job_id]
        AUDIT.record(
            session, "round.closed", actor=ORCHESTRATOR, project=project, user=user, detail=detail
        )
    for job_id in sorted(ended):
        job = session.get(Job, job_id)
        assert job is not None
        detail = {"job": job.id, "model_sha256": job.model_sha, "error": clip(job.error or "")}
        user, project = whose[job.id]
        AUDIT.record(
            session,
            f"job.{job.status}",
            actor=by.get(job.id, ORCHESTRATOR),
            project=project,
            user=user,
            detail=detail,
        )


def _whose(session: Session, job_ids: set[str]) -> dict[str, tuple[str | None, str | None]]:
    """Each job's owner and project names, read once a job (``_WHOSE``)."""
    if missing := [job_id for job_id in job_ids if job_id not in _WHOSE]:
        if len(_WHOSE) > 10_000:  # a cache, not a record: bound it
            _WHOSE.clear()
        for job_id, user, project in session.execute(_WHO, {"ids": missing}):
            _WHOSE[job_id] = (user, project)
    return {job_id: _WHOSE.get(job_id, (None, None)) for job_id in job_ids}


def _name(principal: Principal | None) -> str | None:
    return principal.name if principal is not None else None
