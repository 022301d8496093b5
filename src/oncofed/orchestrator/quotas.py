"""Quotas checked when a job is submitted: model size, and per researcher, running jobs and
stored bytes.

- ``max_model_parameters`` bounds every training job, whoever submits it: a model's initial
  weights are made in memory and every round writes one to disk, so it bounds the
  orchestrator's memory and disk per job.
- ``max_running_jobs_per_researcher`` and ``max_stored_bytes_per_researcher`` are a
  researcher's share. The operator is exempt: they run the orchestrator, own its disk and set
  these limits (the benchmarks and the demo submit as the operator).

Stored bytes are projected from the specs, not measured on disk: a training job keeps its
initial model and one model per training round, and per training round its strategy's state
(FedAdam: two moments, each the model's size; the old ones stay too). A running job is counted
for every round it declares, so a job cannot pass while small and grow past the quota
afterwards; a finished one for the training rounds it opened. Updates are not counted: they are
let go when their round closes (deleted, or kept as spares to write the next uploads into, at
most ``blobs.SPARE_BYTES``), and their size per site is bounded by the model. Analyses
store no blobs. Blobs are never deleted, so the quota counts every job the researcher ever
submitted; a job refused by a quota stores nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import numpy as np
from fastapi import Depends, Request
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from oncofed.learning.registry import parameter_count
from oncofed.learning.strategies import build_strategy
from oncofed.orchestrator.db import Job, Round
from oncofed.orchestrator.deps import Caller
from oncofed.orchestrator.errors import QuotaExceeded
from oncofed.orchestrator.progress import parse_spec
from oncofed.orchestrator.settings import Settings
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.spec import JobSpec
from oncofed.wire.tensors import DTYPE

QUOTA_ROLE = "researcher"
"""The role the per-researcher quotas apply to."""


def model_bytes(spec: JobSpec) -> int:
    return parameter_count(spec.model, spec.n_inputs) * np.dtype(DTYPE).itemsize


def stored_bytes(spec: JobSpec | AnalysisSpec, train_rounds: int | None = None) -> int:
    """Bytes a job keeps in the blob store after ``train_rounds`` training rounds (all it
    declares when None): its initial model, then per round a model and the strategy's state."""
    if isinstance(spec, AnalysisSpec):
        return 0
    rounds = spec.rounds if train_rounds is None else train_rounds
    per_round = 1 + len(build_strategy(spec.strategy).state_keys)
    return model_bytes(spec) * (1 + rounds * per_round)


def usage(session: Session, owner_id: int) -> tuple[int, int]:
    """The owner's running jobs, and the bytes all their jobs keep (``stored_bytes``)."""
    trained = func.count(case((Round.kind == "train", Round.id)))
    rows = session.execute(
        select(Job.spec_json, Job.status, trained)
        .outerjoin(Round, Round.job_id == Job.id)
        .where(Job.owner_id == owner_id)
        .group_by(Job.id, Job.spec_json, Job.status)
    )
    running = stored = 0
    for spec_json, status, train_rounds in rows:
        live = status == "running"
        running += live
        stored += stored_bytes(parse_spec(spec_json), None if live else int(train_rounds))
    return running, stored


class Quotas:
    """Checks a submission against the quotas, holding the researcher's lock while the job
    is stored (``admit``): two submissions at once cannot both take the last place."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self._guard = threading.Lock()
        self._locks: dict[int, threading.Lock] = {}  # one per researcher who submitted

    @contextmanager
    def admit(self, spec: JobSpec | AnalysisSpec, caller: Caller) -> Iterator[None]:
        """Raise ``QuotaExceeded`` if the job goes beyond a quota; else submit it inside."""
        self.check_model(spec)
        if caller.role != QUOTA_ROLE:
            yield
            return
        with self._guard:
            lock = self._locks.setdefault(caller.id, threading.Lock())
        with lock:
            with self.sessions() as session:
                running, stored = usage(session, caller.id)
            self.check_share(spec, running, stored)
            yield

    def check_model(self, spec: JobSpec | AnalysisSpec) -> None:
        if isinstance(spec, AnalysisSpec):
            return
        count, limit = (
            parameter_count(spec.model, spec.n_inputs),
            self.settings.max_model_parameters,
        )
        if count > limit:
            raise QuotaExceeded(
                f"quota exceeded: the model has {count:,} parameters and the limit is "
                f"{limit:,} (setting max_model_parameters)"
            )

    def check_share(self, spec: JobSpec | AnalysisSpec, running: int, stored: int) -> None:
        """Refuse the job when ``running`` jobs and ``stored`` bytes leave it no room."""
        limit = self.settings.max_running_jobs_per_researcher
        if running >= limit:
            raise QuotaExceeded(
                f"quota exceeded: {running} of your jobs are running and the limit is {limit} "
                "(setting max_running_jobs_per_researcher); wait for one to finish"
            )
        needed, room = stored_bytes(spec), self.settings.max_stored_bytes_per_researcher
        if stored + needed > room:
            raise QuotaExceeded(
                f"quota exceeded: this job would keep {needed:,} bytes of models, your jobs "
                f"keep {stored:,} and the limit is {room:,} bytes "
                "(setting max_stored_bytes_per_researcher)"
            )


async def get_quotas(request: Request) -> Quotas:
    quotas: Quotas = request.app.state.quotas
    return quotas


QuotasDep = Annotated[Quotas, Depends(get_quotas)]
