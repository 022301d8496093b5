"""Public views of jobs: database rows in, pydantic schemas out (rows never leave the API)."""

from __future__ import annotations

import json
import logging
import math
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from oncofed.learning.metrics import weighted_mean
from oncofed.orchestrator.db import Job, Round, Task
from oncofed.orchestrator.participation import participation
from oncofed.orchestrator.progress import parse_spec, scaling
from oncofed.wire.analysis import REPORTS, AnalysisReport, AnalysisResult
from oncofed.wire.messages import (
    EvaluateResult,
    JobPublic,
    Participation,
    PooledRound,
    RoundPublic,
    SiteRound,
    StatsResult,
    TrainResult,
)
from oncofed.wire.secagg import MaskedHeader

log = logging.getLogger("oncofed.orchestrator")
M = TypeVar("M", bound=BaseModel)
UNREADABLE = "its stored result is out of today's bounds: not shown"


def _stored(model: type[M], text: str) -> M | None:
    """A stored result, or None when it no longer validates (stored before today's bounds):
    one bad row must not break a listing."""
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        log.warning("a stored %s does not validate: %s", model.__name__, exc.error_count())
        return None


def _finite(value: float | None) -> float | None:
    """``value`` when it is a finite number (a mean of huge values can overflow)."""
    return value if value is not None and math.isfinite(value) else None


def _site_round(kind: str, task: Task) -> SiteRound:
    view = SiteRound(
        status=task.status, detail=task.detail or "", bytes_received=task.bytes_received
    )
    if task.round.phase is not None:
        return _secure_site(view, task)
    if task.status != "accepted" or not task.result_json:
        return view
    unreadable = view.model_copy(update={"detail": UNREADABLE})
    if kind == "analysis":
        answer = _stored(AnalysisResult, task.result_json)
        if answer is None:
            return unreadable
        return view.model_copy(update={"compute_seconds": answer.compute_seconds})
    if kind == "stats":
        stats = _stored(StatsResult, task.result_json)
        return unreadable if stats is None else view.model_copy(update={"n_train": stats.n})
    if kind == "train":
        train = _stored(TrainResult, task.result_json)
        if train is None:
            return unreadable
        evaluation, seconds = train.evaluation, train.compute_seconds
        extra = {"n_train": train.n_train, "train_loss": train.train_loss}
    else:
        result = _stored(EvaluateResult, task.result_json)
        if result is None:
            return unreadable
        evaluation, seconds, extra = result.evaluation, result.compute_seconds, {}
    return view.model_copy(
        update={
            **extra,
            "n_eval": evaluation.n_eval,
            "metrics": evaluation.metrics,
            "compute_seconds": seconds,
        }
    )


def _secure_site(view: SiteRound, task: Task) -> SiteRound:
    """A site of a secure round: where it is, and its compute time (whole seconds). Its own
    rows and metrics are in the sums only: the round's figures are pooled."""
    if not task.result_json:
        return view
    header = _stored(MaskedHeader, task.result_json)
    if header is None:
        return view.model_copy(update={"detail": UNREADABLE})
    return view.model_copy(update={"compute_seconds": float(header.clear.compute_seconds)})


def round_public(rnd: Round) -> RoundPublic:
    sites = {task.site.name: _site_round(rnd.kind, task) for task in rnd.tasks}
    if rnd.result_json:  # a secure round: only the pooled numbers are known
        pooled = _stored(PooledRound, rnd.result_json) or PooledRound(sites=0)
        return _round(rnd, sites, pooled.train_loss, pooled.metrics)
    names = sorted({m for s in sites.values() for m in s.metrics})
    metrics = {
        name: weighted_mean(
            [(s.metrics[name], s.n_eval or 0) for s in sites.values() if name in s.metrics]
        )
        for name in names
    }
    loss = weighted_mean(
        [(s.train_loss, s.n_train or 0) for s in sites.values() if s.train_loss is not None]
    )
    return _round(rnd, sites, loss, {k: v for k, v in metrics.items() if v is not None})


def _round(
    rnd: Round, sites: dict[str, SiteRound], loss: float | None, metrics: dict[str, float]
) -> RoundPublic:
    return RoundPublic(
        number=rnd.number,
        kind=rnd.kind,
        status=rnd.status,
        secure=rnd.phase is not None,
        phase=rnd.phase if rnd.status == "open" else None,
        announced_sha256=rnd.announced_sha,
        opened_at=rnd.opened_at,
        closed_at=rnd.closed_at,
        sites=sites,
        train_loss=_finite(loss),
        metrics={k: v for k, v in metrics.items() if _finite(v) is not None},
    )


def job_public(job: Job) -> JobPublic:
    report = None
    if job.report_json:
        try:
            report = REPORTS.validate_json(job.report_json)
        except ValidationError as exc:
            log.warning("job %s: its stored report does not validate: %s", job.id, exc)
    return JobPublic(
        id=job.id,
        name=job.name,
        status=job.status,
        error=job.error,
        spec=parse_spec(job.spec_json),
        created_at=job.created_at,
        finished_at=job.finished_at,
        sites=json.loads(job.sites_json),
        rounds=[round_public(r) for r in job.rounds],
        model_sha256=job.model_sha,
        report=report,
        participation=_participation(job, report),
        standardization=scaling(job.scaling_json),
    )


def _participation(job: Job, report: AnalysisReport | None) -> Participation:
    """The job's participation; empty when a stored result no longer validates."""
    try:
        return participation(job, report)
    except ValidationError as exc:
        log.warning("job %s: a stored result does not validate: %s", job.id, exc.error_count())
        return Participation()
