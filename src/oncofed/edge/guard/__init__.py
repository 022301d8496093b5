"""The edge enforces what it is actually asked to do, not what a job declares: every task is
checked against the site's policy and against what this site ran before (its ledger), before
any data is touched; the inputs a task brings (scaling, global model, Newton coefficients) are
checked before they meet the site's rows. Each refusal is a ``PolicyViolation`` naming the
rule; the site declines the task."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

from oncofed.analytics.design import Design
from oncofed.analytics.private import declared_ranges
from oncofed.edge.config import EdgePolicy
from oncofed.edge.derived import PerSpec
from oncofed.edge.errors import PolicyViolation
from oncofed.edge.guard.models import check_model
from oncofed.edge.guard.params import check_params, params_sha256
from oncofed.edge.guard.scaling import announced, check_own
from oncofed.edge.guard.sequence import check_next
from oncofed.edge.ledger import JobRecord, Ledger, TaskRecord
from oncofed.edge.policy import check_task
from oncofed.wire.analysis import AnalysisSpec, CoxAnalysis
from oncofed.wire.messages import StatsResult, TaskAssignment
from oncofed.wire.spec import JobSpec
from oncofed.wire.tensors import Weights


def content_sha256(message: BaseModel) -> str:
    """SHA-256 of a message's canonical JSON (sorted keys, no spaces); a task's global model
    handed with it is left out (its ``model_sha256``, which it must match, stands for it)."""
    if isinstance(message, TaskAssignment):
        return task_hashes(message)[1]
    return _sha256(_canonical(message.model_dump(mode="json")))


def task_hashes(task: TaskAssignment) -> tuple[str, str]:
    """``content_sha256`` of the task's spec and of the task. The task's canonical JSON is
    put together from its spec's, made once for all the tasks that share the spec (a job's:
    ``SPECS_SEEN``), and its other fields', the keys sorting before ``spec`` and those after
    in a dump each: the same text as one dump of it all."""
    spec = _SPEC_TEXTS(task.spec, None)
    fields = task.model_dump(mode="json", exclude={"model", "spec"})
    before = _canonical({key: value for key, value in fields.items() if key < "spec"})
    after = _canonical({key: value for key, value in fields.items() if key > "spec"})
    parts = [before[1:-1], f'"spec":{spec}', after[1:-1]]
    text = "{" + ",".join(part for part in parts if part) + "}"
    return _sha256(spec), _sha256(text)


def _canonical(content: object) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_SPEC_TEXTS: PerSpec[None, str] = PerSpec(lambda spec, _: _canonical(spec.model_dump(mode="json")))
"""Specs' canonical JSON."""


class Guard:
    """One site's checks of every task, with its ledger as memory."""

    def __init__(self, policy: EdgePolicy, ledger: Ledger) -> None:
        self._policy, self._ledger = policy, ledger

    def admit(self, task: TaskAssignment) -> None:
        """Check what the task declares and where it falls in its job, then record it as run:
        the policy (``check_task``), the round, kind and budgets (``sequence``), the pinned
        spec and, for training and evaluation, the announced scaling (pinned by the job's
        first such task)."""
        check_task(self._policy, task)
        spec_sha, content = task_hashes(task)
        job = self._ledger.job(task.job_id)
        again = check_next(self._policy, task, spec_sha, content, job)
        spec = task.spec
        scaling = None
        if isinstance(spec, JobSpec) and task.kind in ("train", "evaluate"):
            pinned = None if job is None or job.pooled is None else (job.pooled, job.scaling)
            if pinned is None:
                scaling = announced(task, spec)  # checked, then pinned
            elif pinned != (task.pooled, task.standardization):  # the pinned were checked
                announced(task, spec)  # what is wrong with the task's own, if anything
                raise PolicyViolation(
                    "the pooled totals or standardisation differ from those this job's earlier "
                    "tasks carried"
                )
        if not again:
            record = TaskRecord(task.task_id, task.kind, task.round, content)
            self._ledger.record_task(task.job_id, spec_sha, record)
        if scaling is not None:
            self._ledger.pin_scaling(task.job_id, *scaling)

    def check_stats(self, task: TaskAssignment, own: StatsResult) -> None:
        """The task's pooled totals are realisable with this site's own (``scaling.check_own``)."""
        assert task.pooled is not None  # checked by admit
        check_own(task.pooled, own)

    def check_model(
        self, task: TaskAssignment, spec: JobSpec, weights: Weights, data: bytes
    ) -> None:
        """Check the task's global model (``models.check_model``), then keep it (``data``) as
        the last model this site saw."""
        assert task.model_sha256 is not None  # the runner fetched it by this hash
        last = self._ledger.last_model(task.job_id)
        check_model(spec, task.round, weights, last, self._policy.max_model_travel)
        self._ledger.save_model(task.job_id, task.round, task.model_sha256, data)

    def check_params(self, task: TaskAssignment, data: Design) -> None:
        """Check a Newton round's coefficients (``params.check_params``; under differential
        privacy their form only), then keep them."""
        if task.params is None:
            raise PolicyViolation("a regression task must carry its coefficients")
        job = self._job(task)
        spec, secure = task.spec, task.secure is not None
        risk_sets = (
            secure
            and isinstance(spec, AnalysisSpec)
            and isinstance(spec.analysis, CoxAnalysis)
            and not spec.analysis.stratified
        )
        check_params(
            self._policy,
            task.round,
            task.params,
            job.params,
            data,
            secure=secure,
            risk_sets=risk_sets,
            ranges=declared_ranges(spec),
        )
        self._ledger.save_params(task.job_id, task.round, task.params)

    def answered(self, task: TaskAssignment, outcome: str) -> None:
        """Note how an admitted task was answered (``update``, ``result``, ``secure``,
        ``declined`` or ``failed``); once the evaluation has its answer, its model files go."""
        self._ledger.answered(task.job_id, task.task_id, outcome)
        if task.kind == "evaluate" and outcome in ("result", "secure"):
            self._ledger.drop_model(task.job_id)

    def _job(self, task: TaskAssignment) -> JobRecord:
        job = self._ledger.job(task.job_id)
        assert job is not None  # admit recorded the task
        return job


__all__ = ["Guard", "content_sha256", "params_sha256", "task_hashes"]
