"""Runs one task on the site's own rows and returns only what may leave: typed results."""

from __future__ import annotations

import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from oncofed.analytics.design import design
from oncofed.analytics.site import answer
from oncofed.cdm.frame import check_time_origin, job_table
from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation, StoreError
from oncofed.edge.guard import Guard
from oncofed.edge.ledger import Ledger
from oncofed.edge.policy import cohort_minimums
from oncofed.edge.store import LocalStore
from oncofed.learning import train as local
from oncofed.learning.data import Cohort, DataError, build_cohort, split_cohort
from oncofed.learning.registry import parameter_shapes
from oncofed.learning.steps import clip_update
from oncofed.learning.strategies import build_strategy
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisResult, AnalysisSpec, CoxAnalysis, LogisticAnalysis
from oncofed.wire.errors import BadTensorPayload
from oncofed.wire.messages import (
    Decline,
    EvaluateResult,
    Evaluation,
    Standardization,
    StatsResult,
    TaskAssignment,
    TrainResult,
)
from oncofed.wire.spec import JobSpec

Outcome = Decline | StatsResult | EvaluateResult | AnalysisResult | bytes
"""A decline, a JSON result, or a safetensors update (bytes)."""
KEPT_TABLES = 8
"""Analyses whose cohort tables are kept between Newton rounds (the most recent ones)."""


@dataclass(frozen=True)
class _Split:
    train: Cohort
    held_out: Cohort


def task_seed(spec: JobSpec, round_number: int, site: str) -> int:
    """Seed of one site's local training in one round: reproducible, distinct across sites."""
    return zlib.crc32(f"{spec.seed}:{round_number}:{site}".encode())


class TaskRunner:
    """Checks every task (``Guard``: policy, ledger, inputs), builds the cohort once per job,
    then computes stats, trains or evaluates."""

    def __init__(self, store: LocalStore, policy: EdgePolicy, site: str, ledger: Ledger) -> None:
        self._store, self._policy, self._site = store, policy, site
        self._guard = Guard(policy, ledger)
        self._splits: dict[str, _Split] = {}
        self._tables: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()

    def run(self, task: TaskAssignment, fetch: Callable[[str], bytes]) -> Outcome:
        """The outcome of ``task``; ``fetch`` downloads a blob by its SHA-256. The task is
        recorded in the ledger once admitted, with how it was answered."""
        try:
            self._guard.admit(task)
        except PolicyViolation as exc:
            return Decline(reason=str(exc))
        outcome: Outcome | None = None
        try:
            outcome = self._answer(task, fetch)
            return outcome
        finally:
            self._guard.answered(task, _label(outcome))

    def _answer(self, task: TaskAssignment, fetch: Callable[[str], bytes]) -> Outcome:
        spec = task.spec
        started = time.perf_counter()
        try:
            if isinstance(spec, AnalysisSpec):
                table = self._table(task.job_id, spec)
                if isinstance(spec.analysis, CoxAnalysis | LogisticAnalysis):
                    self._guard.check_params(task, design(spec.analysis, table))
                part = answer(
                    spec,
                    table,
                    task.params,
                    self._policy.small_cell_threshold,
                    self._policy.min_patients_per_covariate,
                    cohort_minimums(self._policy, spec).cohort,
                    self._policy.discrete_levels,
                )
                return AnalysisResult(part=part, compute_seconds=_since(started))
            split = self._split(task.job_id, spec)
            if task.kind == "stats":
                return split.train.stats()
            self._guard.check_stats(task, split.train.stats())
            weights = self._global_model(task, spec, fetch)
        except (PolicyViolation, DataError, StoreError) as exc:
            return Decline(reason=str(exc))
        scaling = task.standardization
        assert scaling is not None  # the guard admits no training task without it
        evaluation = self._evaluate(spec, weights, split.held_out, scaling)
        if task.kind == "evaluate":
            return EvaluateResult(evaluation=evaluation, compute_seconds=_since(started))
        fit = local.train(
            spec,
            weights,
            split.train.design(scaling),
            split.train,
            seed=task_seed(spec, task.round, self._site),
            proximal_mu=build_strategy(spec.strategy).proximal_mu,  # the spec's, not the task's
        )
        meta = TrainResult(
            task_id=task.task_id,
            n_train=len(split.train),
            train_loss=fit.loss if math.isfinite(fit.loss) else 0.0,
            evaluation=evaluation,
            compute_seconds=_since(started),
        )
        update = clip_update(weights, fit.weights, spec.local.clip_norm)
        tensors.check_weights(update, parameter_shapes(spec.model, spec.n_inputs))
        return tensors.encode(update, meta)

    def forget(self, job_id: str) -> None:
        self._splits.pop(job_id, None)
        self._tables.pop(job_id, None)

    def _cohort(self, spec: JobSpec | AnalysisSpec) -> dict[str, np.ndarray]:
        """The job's cohort here, refused below the minimum size before anything else about
        its rows is said."""
        table = job_table(spec, self._store.load(spec.dataset))
        self._check_size(spec, len(table["time_origin"]))
        check_time_origin(spec, table)
        return table

    def _table(self, job_id: str, spec: AnalysisSpec) -> dict[str, np.ndarray]:
        if job_id not in self._tables:
            self._tables[job_id] = self._cohort(spec)
            while len(self._tables) > KEPT_TABLES:
                self._tables.popitem(last=False)
        self._tables.move_to_end(job_id)
        return self._tables[job_id]

    def _split(self, job_id: str, spec: JobSpec) -> _Split:
        if job_id not in self._splits:
            minimums = cohort_minimums(self._policy, spec)
            cohort = build_cohort(spec, self._cohort(spec))
            self._check_size(spec, len(cohort))
            split = _Split(*split_cohort(spec, cohort))
            if len(split.train) < minimums.cohort:
                raise PolicyViolation(
                    "the training rows at this site are fewer than its minimum cohort size "
                    f"(policy {minimums.cohort_rule}={minimums.cohort})"
                )
            if len(split.held_out) < minimums.held_out:
                raise PolicyViolation(
                    "the held-out rows at this site are fewer than its minimum evaluation size "
                    f"(policy {minimums.held_out_rule}={minimums.held_out})"
                )
            self._splits[job_id] = split
        return self._splits[job_id]

    def _check_size(self, spec: JobSpec | AnalysisSpec, n: int) -> None:
        minimums = cohort_minimums(self._policy, spec)
        if n < minimums.cohort:
            raise PolicyViolation(
                "the job's cohort at this site is smaller than its minimum cohort size "
                f"(policy {minimums.cohort_rule}={minimums.cohort})"
            )

    def _global_model(
        self, task: TaskAssignment, spec: JobSpec, fetch: Callable[[str], bytes]
    ) -> tensors.Weights:
        """Download the global model, check it as strictly as the orchestrator checks ours,
        and against the job's last model here (``Guard.check_model``)."""
        if task.model_sha256 is None:
            raise BadTensorPayload("task names no global model")
        data = fetch(task.model_sha256)
        if tensors.sha256(data) != task.model_sha256:
            raise BadTensorPayload("global model does not match its SHA-256")
        weights = tensors.decode(data)
        tensors.check_weights(weights, parameter_shapes(spec.model, spec.n_inputs))
        self._guard.check_model(task, spec, weights, data)
        return weights

    @staticmethod
    def _evaluate(
        spec: JobSpec, weights: tensors.Weights, held_out: Cohort, scaling: Standardization
    ) -> Evaluation:
        metrics = local.evaluate(spec, weights, held_out.design(scaling), held_out)
        return Evaluation(
            n_eval=len(held_out), metrics={k: v for k, v in metrics.items() if math.isfinite(v)}
        )


def _label(outcome: Outcome | None) -> str:
    """How a task was answered, for the ledger (None: it failed)."""
    if outcome is None:
        return "failed"
    if isinstance(outcome, Decline):
        return "declined"
    return "update" if isinstance(outcome, bytes) else "result"


def _since(started: float) -> float:
    return time.perf_counter() - started
