"""Public views of jobs: database rows in, pydantic schemas out (rows never leave the API)."""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from oncofed.learning.metrics import (
    MEAN_NOTE,
    SITE_MEAN,
    UNSCORED_NOTE,
    pool_evaluations,
    weighted_mean,
)
from oncofed.orchestrator.db import Job, Round, Task
from oncofed.orchestrator.participation import participation
from oncofed.orchestrator.progress import parse_spec, scaling, training
from oncofed.wire.analysis import REPORTS, AnalysisReport, AnalysisResult
from oncofed.wire.base import Evaluation
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
_POOLED: dict[tuple[int, tuple[tuple[str, int], ...]], PooledRound] = {}
"""The pooled held-out figures of plain rounds, by round and the answers in them (an answer
never changes once accepted): pooling score histograms takes milliseconds a round, and a
listing shows every round of every job."""
_POOLED_KEPT = 4096
_POOLED_LOCK = threading.Lock()


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


def _site_round(kind: str, task: Task) -> tuple[SiteRound, Evaluation | None]:
    """A site's part in a round, with its held-out figures as it sent them (none under
    secure aggregation, or before it answered)."""
    view = SiteRound(
        status=task.status, detail=task.detail or "", bytes_received=task.bytes_received
    )
    if task.round.phase is not None:
        return _secure_site(view, task), None
    if task.status != "accepted" or not task.result_json:
        return view, None
    unreadable = view.model_copy(update={"detail": UNREADABLE})
    if kind == "analysis":
        answer = _stored(AnalysisResult, task.result_json)
        if answer is None:
            return unreadable, None
        return view.model_copy(update={"compute_seconds": answer.compute_seconds}), None
    if kind == "stats":
        stats = _stored(StatsResult, task.result_json)
        if stats is None:
            return unreadable, None
        return view.model_copy(update={"n_train": stats.n}), None
    if kind == "train":
        train = _stored(TrainResult, task.result_json)
        if train is None:
            return unreadable, None
        evaluation, seconds = train.evaluation, train.compute_seconds
        extra: dict[str, object] = {"n_train": train.n_train, "train_loss": train.train_loss}
    else:
        result = _stored(EvaluateResult, task.result_json)
        if result is None:
            return unreadable, None
        evaluation, seconds, extra = result.evaluation, result.compute_seconds, {}
    if evaluation is not None:  # None in a training round the job does not score
        extra |= {"n_eval": evaluation.n_eval, "metrics": evaluation.metrics}
    return view.model_copy(update={**extra, "compute_seconds": seconds}), evaluation


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
    parts = {task.site.name: _site_round(rnd.kind, task) for task in rnd.tasks}
    sites = {name: view for name, (view, _) in parts.items()}
    if rnd.result_json:  # a secure round: only the pooled numbers are known
        pooled = _stored(PooledRound, rnd.result_json) or PooledRound(sites=0)
        if "c_index" in pooled.metrics:  # stored before it was named for what it is
            mean = pooled.metrics.pop("c_index")
            pooled.metrics[SITE_MEAN] = mean
            pooled.notes.append(MEAN_NOTE)
        return _round(rnd, sites, pooled.train_loss, pooled)
    evaluations = {name: e for name, (_, e) in parts.items() if e is not None}
    loss = weighted_mean(
        [(s.train_loss, s.n_train or 0) for s in sites.values() if s.train_loss is not None]
    )
    if not evaluations:
        return _round(rnd, sites, loss, PooledRound(sites=0))
    answers = sorted((t.id, hash(t.result_json)) for t in rnd.tasks if t.status == "accepted")
    key = (rnd.id, tuple(answers))
    with _POOLED_LOCK:
        view = _POOLED.get(key)
    if view is None:
        survival = training(parse_spec(rnd.job.spec_json)).outcome.type == "survival"
        held_out = pool_evaluations(evaluations, survival)
        view = PooledRound(
            sites=len(evaluations),
            metrics=held_out.metrics,
            metric_rows=held_out.rows,
            notes=held_out.notes,
        )
        with _POOLED_LOCK:
            _POOLED[key] = view
            while len(_POOLED) > _POOLED_KEPT:
                _POOLED.pop(next(iter(_POOLED)))
    return _round(rnd, sites, loss, view)


def _unscored(rnd: Round) -> list[str]:
    """Why a training round shows no metrics, when its job does not score it."""
    if rnd.kind != "train":
        return []
    evaluation = training(parse_spec(rnd.job.spec_json)).evaluation
    if evaluation.scores(rnd.number):
        return []
    return [UNSCORED_NOTE.format(number=rnd.number, every=evaluation.every)]


def _round(
    rnd: Round, sites: dict[str, SiteRound], loss: float | None, pooled: PooledRound
) -> RoundPublic:
    metrics = {k: v for k, v in pooled.metrics.items() if _finite(v) is not None}
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
        metrics=metrics,
        metric_rows={k: v for k, v in pooled.metric_rows.items() if k in metrics},
        notes=[*pooled.notes, *_unscored(rnd)],
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
