"""Public views of jobs: database rows in, pydantic schemas out (rows never leave the API)."""

from __future__ import annotations

import json

from oncofed.learning.metrics import weighted_mean
from oncofed.orchestrator.db import Job, Round, Task
from oncofed.orchestrator.participation import participation
from oncofed.orchestrator.progress import parse_spec
from oncofed.wire.analysis import REPORTS, AnalysisResult
from oncofed.wire.messages import (
    EvaluateResult,
    JobPublic,
    PooledRound,
    RoundPublic,
    SiteRound,
    StatsResult,
    TrainResult,
)
from oncofed.wire.secagg import MaskedHeader


def _site_round(kind: str, task: Task) -> SiteRound:
    view = SiteRound(
        status=task.status, detail=task.detail or "", bytes_received=task.bytes_received
    )
    if task.round.phase is not None:
        return _secure_site(view, task)
    if task.status != "accepted" or not task.result_json:
        return view
    if kind == "analysis":
        seconds = AnalysisResult.model_validate_json(task.result_json).compute_seconds
        return view.model_copy(update={"compute_seconds": seconds})
    if kind == "stats":
        return view.model_copy(
            update={"n_train": StatsResult.model_validate_json(task.result_json).n}
        )
    if kind == "train":
        train = TrainResult.model_validate_json(task.result_json)
        evaluation, seconds = train.evaluation, train.compute_seconds
        extra = {"n_train": train.n_train, "train_loss": train.train_loss}
    else:
        result = EvaluateResult.model_validate_json(task.result_json)
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
    clear = MaskedHeader.model_validate_json(task.result_json).clear
    return view.model_copy(update={"compute_seconds": float(clear.compute_seconds)})


def round_public(rnd: Round) -> RoundPublic:
    if rnd.result_json:  # a secure round: only the pooled numbers are known
        pooled = PooledRound.model_validate_json(rnd.result_json)
        sites = {task.site.name: _site_round(rnd.kind, task) for task in rnd.tasks}
        return _round(rnd, sites, pooled.train_loss, pooled.metrics)
    sites = {task.site.name: _site_round(rnd.kind, task) for task in rnd.tasks}
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
        train_loss=loss,
        metrics=metrics,
    )


def job_public(job: Job) -> JobPublic:
    report = REPORTS.validate_json(job.report_json) if job.report_json else None
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
        participation=participation(job, report),
    )
