"""What a closed round leads to: the job's next round, its report, its end. Plain and secure
rounds both end here, each with the pooled numbers it produced, so a job advances the same way
whichever way its sites' numbers were added up."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, insert, inspect, select
from sqlalchemy.orm import Session, make_transient_to_detached

from oncofed.learning.data import standardization
from oncofed.learning.strategies import build_strategy
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Job, Round, Site, Task, utcnow, written
from oncofed.orchestrator.errors import BadRequest, Conflict
from oncofed.wire.analysis import REPORTS, SPECS, AnalysisSpec
from oncofed.wire.messages import Standardization, StatsResult, TaskAssignment
from oncofed.wire.spec import JobSpec
from oncofed.wire.stream import TensorFile

log = logging.getLogger("oncofed.orchestrator")
Averages = Callable[[str], Iterator[tuple[int, np.ndarray]]]
"""For one tensor, ``(flat offset, float64 elements)`` of the mean of the sites' models."""


@lru_cache(maxsize=256)
def parse_spec(spec_json: str) -> JobSpec | AnalysisSpec:
    return SPECS.validate_json(spec_json)


@lru_cache(maxsize=256)
def scaling(scaling_json: str | None) -> Standardization | None:
    return Standardization.model_validate_json(scaling_json) if scaling_json else None


@lru_cache(maxsize=256)
def pooled(pooled_json: str | None) -> StatsResult | None:
    return StatsResult.model_validate_json(pooled_json) if pooled_json else None


def announced(job: Job, rnd: Round) -> str:
    """The SHA-256 of what ``rnd`` announces to all its sites (``TaskAssignment.announced``)."""
    params = None
    if rnd.params_json:
        from oncofed.orchestrator import analysis

        params = analysis.announced_params(rnd.params_json)
    task = TaskAssignment(
        task_id="-",
        job_id=job.id,
        round=rnd.number,
        kind=rnd.kind,
        spec=parse_spec(job.spec_json),
        model_sha256=rnd.input_sha,
        standardization=scaling(job.scaling_json),
        pooled=pooled(job.pooled_json),
        params=params,
    )
    return task.announced()


def training(spec: JobSpec | AnalysisSpec) -> JobSpec:
    """``spec`` as the training job it must be (rounds of other kinds never reach here)."""
    if not isinstance(spec, JobSpec):
        raise BadRequest(f"job {spec.name!r} is an analysis: it takes no models or statistics")
    return spec


@dataclass
class Effects:
    """What a change leaves to do: the rounds it answered in, checked for closing once before
    it commits (``answered``, by round id); the rest once it has committed."""

    answered: dict[int, Round] = field(default_factory=dict)
    answering: set[int] = field(default_factory=set)  # the sites whose answers it records
    notify: set[int] = field(default_factory=set)
    handed: dict[int, TaskAssignment] = field(default_factory=dict)  # of the tasks published
    retire: set[str] = field(default_factory=set)  # answers' blobs, done with (BlobStore)
    drop_sums: set[int] = field(default_factory=set)
    opened: dict[int, str] = field(default_factory=dict)  # plain training rounds -> job id
    finished: list[dict[str, Any]] = field(default_factory=list)  # Coordinator._finish's rows
    bodies: list[dict[str, Any]] = field(default_factory=list)  # the updates held (UpdateBody)
    left: dict[str, int | None] = field(default_factory=dict)  # job id -> its open round's
    # tasks still unanswered (None: none), as Progress.open_round or Coordinator._maybe_close
    # left them


_NEW_TASKS = insert(cast(Table, Task.__table__))
_NEW_ROUND = insert(cast(Table, Round.__table__))
_ROUND_COLUMNS = [column.key for column in Round.__table__.columns if column.key != "id"]
_NOT_YET = ("roster_json", "survivors_json", "next_roster_json", "result_json", "closed_at")
"""A new round's columns that a later step sets."""
LEFT = ("declined", "failed")
"""Statuses of a site's task that leave it out of the job's later rounds."""
WITHDRAWN = "cancelled"
"""The status of a task whose job was cancelled before its site answered."""


def check_not_withdrawn(task: Task) -> None:
    """``Conflict`` naming why, for a task its job's cancellation withdrew."""
    if task.status == WITHDRAWN:
        raise Conflict(f"task {task.id} was withdrawn: {task.detail}")


_OUT_OF_SERVICE = select(Site.id).where(
    Site.disabled_at.is_not(None) | Site.removed_at.is_not(None)
)


def _out_of_service(session: Session) -> set[int]:
    """The sites the operator disabled or removed: new rounds give them no task. Read on the
    connection, so the session does not flush first: the operator's changes commit in their
    own transactions, and what this one changed is written with the new round, at once."""
    return set(session.connection().scalars(_OUT_OF_SERVICE))


def statuses(tasks: Iterable[Task], shown: int = 10) -> str:
    """Each site's status and why, for a failure's message: ``north: declined (reason)``; the
    first ``shown`` sites, then how many more (the job's participation lists them all)."""
    named = [f"{t.site.name}: {t.status} ({t.detail})" for t in tasks]
    more = f"; and {len(named) - shown} more sites" if len(named) > shown else ""
    return "; ".join(named[:shown]) + more


def end(job: Job, status: str, error: str | None) -> None:
    job.status, job.error, job.finished_at = status, error, utcnow()
    if error:
        log.warning("job %s %s: %s", job.id, status, error)


class Progress:
    """Opens rounds and moves jobs on from closed ones."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def open_round(
        self,
        session: Session,
        effects: Effects,
        job: Job,
        number: int,
        kind: str,
        input_sha: str | None,
        site_ids: list[int],
        params_json: str | None = None,
    ) -> Round:
        spec = parse_spec(job.spec_json)
        out = _out_of_service(session)
        site_ids = [site_id for site_id in site_ids if site_id not in out]
        now = utcnow()
        rnd = Round(
            job_id=job.id,
            number=number,
            kind=kind,
            status="open",
            input_sha=input_sha,
            params_json=params_json,
            phase="keys" if spec.privacy.secure_aggregation else None,
            deadline=now + timedelta(seconds=spec.round_timeout_s),
            opened_at=now,
            **dict.fromkeys(_NOT_YET),
        )
        rnd.announced_sha = announced(job, rnd)
        # inserted by a statement, and the object joins the session as read: no unit of work.
        # Only what it holds: a column set nowhere above gets its default from the statement
        # and is read when asked (``make_transient_to_detached`` leaves it expired).
        held = inspect(rnd).dict
        values = {column: held[column] for column in _ROUND_COLUMNS if column in held}
        inserted = session.connection().execute(_NEW_ROUND, values).inserted_primary_key
        assert inserted is not None  # one row inserted
        rnd.id = inserted[0]
        make_transient_to_detached(rnd)  # every column as written; ``tasks``, ``job`` as asked
        session.add(rnd)
        if "rounds" in job.__dict__:  # a list read before, which lacks it
            session.expire(job, ["rounds"])
        if site_ids:  # in one statement, not by the unit of work (``_NEW_TASKS``)
            tasks = [
                {"id": uuid.uuid4().hex, "round_id": rnd.id, "site_id": site, "status": "pending"}
                for site in site_ids
            ]
            session.connection().execute(_NEW_TASKS, tasks)
        if kind == "train" and rnd.phase is None:  # its running sum starts empty
            effects.opened[rnd.id] = job.id
        effects.left[job.id] = len(site_ids) or None  # every task of it unanswered
        effects.notify.update(site_ids)
        return rnd

    def too_few(self, job: Job, rnd: Round, accepted: list[Task]) -> bool:
        """End the job as failed when fewer sites than its ``min_sites`` answered."""
        spec = parse_spec(job.spec_json)
        if len(accepted) >= spec.min_sites:
            return False
        missing = statuses(t for t in rnd.tasks if t not in accepted)
        end(
            job,
            "failed",
            f"round {rnd.number} ({rnd.kind}): {len(accepted)} sites "
            f"reported, min_sites is {spec.min_sites}. {missing}",
        )
        return True

    def after_stats(
        self, session: Session, effects: Effects, job: Job, pooled: StatsResult, active: list[int]
    ) -> None:
        """The pooled standardisation, announced with the totals it comes from; then round 1."""
        try:
            scaling = standardization(pooled)
        except ValueError as exc:  # no rows, or sums too large to pool
            end(job, "failed", f"pooling the feature statistics failed: {exc}")
            return
        totals = pooled.model_dump_json()
        written(session, job, scaling_json=scaling.model_dump_json(), pooled_json=totals)
        self.open_round(session, effects, job, 1, "train", job.model_sha, active)

    def after_train(
        self,
        session: Session,
        effects: Effects,
        job: Job,
        rnd: Round,
        shapes: Mapping[str, tuple[int, ...]],
        averages: Averages,
        active: list[int],
    ) -> None:
        """The next global model, then the next round (training, or the final evaluation); the
        job ends failed when aggregation fails."""
        try:
            model_sha, state_sha = self.advance_model(job, shapes, averages)
        except (ArithmeticError, ValueError) as exc:
            end(job, "failed", f"aggregation failed: {exc}")
            return
        written(session, job, model_sha=model_sha, state_sha=state_sha)
        kind = "train" if rnd.number < training(parse_spec(job.spec_json)).rounds else "evaluate"
        self.open_round(session, effects, job, rnd.number + 1, kind, job.model_sha, active)

    def after_analysis(
        self,
        session: Session,
        effects: Effects,
        job: Job,
        rnd: Round,
        outcome: object,
        site_ids: list[int],
    ) -> None:
        """The report, the next Newton round (with ``site_ids``), or a failure."""
        from oncofed.orchestrator import analysis
        from oncofed.orchestrator.participation import left_out

        if isinstance(outcome, analysis.Finished):
            report = outcome.report.model_copy(update={"excluded": left_out(job)})
            job.report_json = REPORTS.dump_json(report).decode()
            end(job, "completed", None)
        elif isinstance(outcome, analysis.Failed):
            end(job, "failed", outcome.error)
        elif isinstance(outcome, analysis.NextRound):
            job.state_json = outcome.state.to_json()
            number = rnd.number + 1
            self.open_round(
                session, effects, job, number, "analysis", None, site_ids, job.state_json
            )
        else:
            raise TypeError(f"not an analysis outcome: {outcome!r}")

    def advance_model(
        self, job: Job, shapes: Mapping[str, tuple[int, ...]], averages: Averages
    ) -> tuple[str, str | None]:
        """Apply the strategy chunk by chunk: current model, mean and state are read in pieces
        and the next model and state are written the same way (memory stays O(chunk)); the
        next model's SHA-256 and the next state's (None for a strategy without one)."""
        strategy = build_strategy(training(parse_spec(job.spec_json)).strategy)
        keys = strategy.state_keys
        state_shapes = {f"{k}/{name}": shape for name, shape in shapes.items() for k in keys}
        assert job.model_sha is not None  # set at submission
        with ExitStack() as stack:
            current = stack.enter_context(TensorFile(self.blobs.path(job.model_sha)))
            state = (
                stack.enter_context(TensorFile(self.blobs.path(job.state_sha)))
                if job.state_sha
                else None
            )
            model_out = stack.enter_context(self.blobs.write_tensors(shapes))
            state_out = (
                stack.enter_context(self.blobs.write_tensors(state_shapes)) if keys else None
            )
            for name in shapes:
                for offset, average in averages(name):
                    n = average.size
                    piece = {
                        k: state.read(f"{k}/{name}", offset, n) if state else np.zeros(n)
                        for k in keys
                    }
                    new, new_state = strategy.update(current.read(name, offset, n), average, piece)
                    if not np.isfinite(new).all():
                        raise ValueError(f"{name}: the next global model is not finite")
                    model_out.write(name, offset, new)
                    for k in keys:
                        assert state_out is not None
                        state_out.write(f"{k}/{name}", offset, new_state[k])
        return model_out.sha256, state_out.sha256 if state_out else None
