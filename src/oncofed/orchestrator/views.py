"""Public views of jobs: database rows in, pydantic schemas out (rows never leave the API)."""

from __future__ import annotations

import json

from oncofed.learning.metrics import weighted_mean
from oncofed.orchestrator.db import Job, Round, Task
from oncofed.orchestrator.progress import parse_spec
from oncofed.wire.analysis import REPORTS, AnalysisResult
from oncofed.wire.messages import (
    EvaluateResult,
    JobPublic,
    RoundPublic,
    SiteRound,
    StatsResult,
    TrainResult,
)


def _site_round(kind: str, task: Task) -> SiteRound:
    view = SiteRound(
        status=task.status, detail=task.detail or "", bytes_received=task.bytes_received
    )
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


def round_public(rnd: Round) -> RoundPublic:
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
    return RoundPublic(
        number=rnd.number,
        kind=rnd.kind,
        status=rnd.status,
        opened_at=rnd.opened_at,
        closed_at=rnd.closed_at,
        sites=sites,
        train_loss=loss,
        metrics={k: v for k, v in metrics.items() if v is not None},
    )


def job_public(job: Job) -> JobPublic:
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
        report=REPORTS.validate_json(job.report_json) if job.report_json else None,
    )
