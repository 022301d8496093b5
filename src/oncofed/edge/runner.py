"""Runs one task on the site's own rows and returns only what may leave: typed results."""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from oncofed.cdm.frame import check_time_origin, job_table
from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation, StoreError
from oncofed.edge.policy import check_task
from oncofed.edge.store import LocalStore
from oncofed.learning import train as local
from oncofed.learning.data import Cohort, DataError, build_cohort, split_cohort
from oncofed.learning.registry import parameter_shapes
from oncofed.wire import tensors
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

Outcome = Decline | StatsResult | EvaluateResult | bytes
"""A decline, a JSON result, or a safetensors update (bytes)."""


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

    def run(self, task: TaskAssignment, fetch: Callable[[str], bytes]) -> Outcome:
        """The outcome of ``task``; ``fetch`` downloads a blob by its SHA-256."""
        try:
            check_task(self._policy, task)
            split = self._split(task)
        except (PolicyViolation, DataError, StoreError) as exc:
            return Decline(reason=str(exc))
        started = time.perf_counter()
        if task.kind == "stats":
            return split.train.stats()
        weights = self._global_model(task, fetch)
        scaling = task.standardization
        if scaling is None:
            return Decline(reason="task carries no feature scaling")
        evaluation = self._evaluate(task.spec, weights, split.held_out, scaling)
        if task.kind == "evaluate":
            return EvaluateResult(evaluation=evaluation, compute_seconds=_since(started))
        fit = local.train(
            task.spec,
            weights,
            split.train.design(scaling),
            split.train,
            seed=task_seed(task.spec, task.round, self._site),
            proximal_mu=task.proximal_mu,
        )
        meta = TrainResult(
            task_id=task.task_id,
            n_train=len(split.train),
            train_loss=fit.loss if math.isfinite(fit.loss) else 0.0,
            evaluation=evaluation,
            compute_seconds=_since(started),
        )
        tensors.check_weights(fit.weights, parameter_shapes(task.spec.model, task.spec.n_inputs))
        return tensors.encode(fit.weights, meta)

    def forget(self, job_id: str) -> None:
        self._splits.pop(job_id, None)

    def _split(self, task: TaskAssignment) -> _Split:
        if task.job_id not in self._splits:
            spec, policy = task.spec, self._policy
            table = job_table(spec, self._store.load(spec.dataset))
            self._check_size(len(table["time_origin"]))  # before anything about the rows is said
            check_time_origin(spec, table)
            cohort = build_cohort(spec, table)
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
            self._splits[task.job_id] = split
        return self._splits[task.job_id]

    def _check_size(self, n: int) -> None:
        if n < self._policy.min_cohort_size:
            raise PolicyViolation(
                "the job's cohort at this site is smaller than its minimum cohort size "
                f"(policy min_cohort_size={self._policy.min_cohort_size})"
            )

    @staticmethod
    def _global_model(task: TaskAssignment, fetch: Callable[[str], bytes]) -> tensors.Weights:
        """Download the global model and check it as strictly as the orchestrator checks ours."""
        if task.model_sha256 is None:
            raise BadTensorPayload("task names no global model")
        data = fetch(task.model_sha256)
        if tensors.sha256(data) != task.model_sha256:
            raise BadTensorPayload("global model does not match its SHA-256")
        weights = tensors.decode(data)
        tensors.check_weights(weights, parameter_shapes(task.spec.model, task.spec.n_inputs))
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
