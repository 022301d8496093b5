"""Runs one task on the site's own rows and returns only what may leave: typed results."""

from __future__ import annotations

import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from oncofed.analytics.site import answer
from oncofed.cdm.frame import check_time_origin, job_table
from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation, StoreError
from oncofed.edge.policy import check_task
from oncofed.edge.store import LocalStore
from oncofed.learning import train as local
from oncofed.learning.data import Cohort, DataError, build_cohort, split_cohort
from oncofed.learning.registry import parameter_shapes
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisResult, AnalysisSpec
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
    """Checks policy, builds the cohort once per job, then computes stats, trains or evaluates."""

    def __init__(self, store: LocalStore, policy: EdgePolicy, site: str) -> None:
        self._store, self._policy, self._site = store, policy, site
        self._splits: dict[str, _Split] = {}
        self._tables: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()

    def run(self, task: TaskAssignment, fetch: Callable[[str], bytes]) -> Outcome:
        """The outcome of ``task``; ``fetch`` downloads a blob by its SHA-256."""
        spec = task.spec
        started = time.perf_counter()
        try:
            check_task(self._policy, task)
            if isinstance(spec, AnalysisSpec):
                part = answer(
                    spec,
                    self._table(task.job_id, spec),
                    task.params,
                    self._policy.small_cell_threshold,
                    self._policy.min_patients_per_covariate,
                    self._policy.min_cohort_size,
                    self._policy.discrete_levels,
                )
                return AnalysisResult(part=part, compute_seconds=_since(started))
            split = self._split(task.job_id, spec)
        except (PolicyViolation, DataError, StoreError) as exc:
            return Decline(reason=str(exc))
        if task.kind == "stats":
            return split.train.stats()
        weights = self._global_model(task, spec, fetch)
        scaling = task.standardization
        if scaling is None:
            return Decline(reason="task carries no feature scaling")
        evaluation = self._evaluate(spec, weights, split.held_out, scaling)
        if task.kind == "evaluate":
            return EvaluateResult(evaluation=evaluation, compute_seconds=_since(started))
        fit = local.train(
            spec,
            weights,
            split.train.design(scaling),
            split.train,
            seed=task_seed(spec, task.round, self._site),
            proximal_mu=task.proximal_mu,
        )
        meta = TrainResult(
            task_id=task.task_id,
            n_train=len(split.train),
            train_loss=fit.loss if math.isfinite(fit.loss) else 0.0,
            evaluation=evaluation,
            compute_seconds=_since(started),
        )
        tensors.check_weights(fit.weights, parameter_shapes(spec.model, spec.n_inputs))
        return tensors.encode(fit.weights, meta)

    def forget(self, job_id: str) -> None:
        self._splits.pop(job_id, None)
        self._tables.pop(job_id, None)

    def _cohort(self, spec: JobSpec | AnalysisSpec) -> dict[str, np.ndarray]:
        """The job's cohort here, refused below the minimum size before anything else about
        its rows is said."""
        table = job_table(spec, self._store.load(spec.dataset))
        self._check_size(len(table["time_origin"]))
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
            policy = self._policy
            cohort = build_cohort(spec, self._cohort(spec))
            self._check_size(len(cohort))
            split = _Split(*split_cohort(spec, cohort))
            if len(split.train) < policy.min_cohort_size:
                raise PolicyViolation(
                    "the training rows at this site are fewer than its minimum cohort size "
                    f"(policy min_cohort_size={policy.min_cohort_size})"
                )
            if len(split.held_out) < policy.min_eval_size:
                raise PolicyViolation(
                    "the held-out rows at this site are fewer than its minimum evaluation size "
                    f"(policy min_eval_size={policy.min_eval_size})"
                )
            self._splits[job_id] = split
        return self._splits[job_id]

    def _check_size(self, n: int) -> None:
        if n < self._policy.min_cohort_size:
            raise PolicyViolation(
                "the job's cohort at this site is smaller than its minimum cohort size "
                f"(policy min_cohort_size={self._policy.min_cohort_size})"
            )

    @staticmethod
    def _global_model(
        task: TaskAssignment, spec: JobSpec, fetch: Callable[[str], bytes]
    ) -> tensors.Weights:
        """Download the global model and check it as strictly as the orchestrator checks ours."""
        if task.model_sha256 is None:
            raise BadTensorPayload("task names no global model")
        data = fetch(task.model_sha256)
        if tensors.sha256(data) != task.model_sha256:
            raise BadTensorPayload("global model does not match its SHA-256")
        weights = tensors.decode(data)
        tensors.check_weights(weights, parameter_shapes(spec.model, spec.n_inputs))
        return weights

    @staticmethod
    def _evaluate(
        spec: JobSpec, weights: tensors.Weights, held_out: Cohort, scaling: Standardization
    ) -> Evaluation:
        metrics = local.evaluate(spec, weights, held_out.design(scaling), held_out)
        return Evaluation(
            n_eval=len(held_out), metrics={k: v for k, v in metrics.items() if math.isfinite(v)}
        )


def _since(started: float) -> float:
    return time.perf_counter() - started
