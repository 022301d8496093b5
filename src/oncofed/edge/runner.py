"""Runs one task on the site's own rows and returns only what may leave: typed results."""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from oncofed.analytics.design import design
from oncofed.analytics.private import add_noise, mechanism, private_analysis
from oncofed.analytics.secure import secure_values
from oncofed.analytics.site import answer, left_out_causes, own_fit
from oncofed.cdm.frame import JobRows, check_time_origin, job_rows
from oncofed.edge.budget import Budget, Charge
from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation, StoreError
from oncofed.edge.guard import Guard, content_sha256
from oncofed.edge.ledger import Ledger, TaskRecord
from oncofed.edge.policy import cohort_minimums
from oncofed.edge.releases import Releases
from oncofed.edge.store import LocalStore
from oncofed.learning import secure as learning
from oncofed.learning.data import (
    Cohort,
    DataError,
    build_cohort,
    check_stats_columns,
    split_cohort,
)
from oncofed.learning.plugins import declared
from oncofed.learning.registry import parameter_shapes
from oncofed.learning.steps import clip_update
from oncofed.learning.strategies import build_strategy
from oncofed.privacy import accounting
from oncofed.privacy.noise import share_variance
from oncofed.wire import tensors
from oncofed.wire.analysis import (
    AnalysisResult,
    AnalysisSpec,
    CoxAnalysis,
    LogisticAnalysis,
    OwnEstimate,
)
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
from oncofed.wire.secagg import ClearPart
from oncofed.wire.spec import JobSpec

if TYPE_CHECKING:
    from oncofed.learning import private
    from oncofed.learning import train as local
else:  # torch, imported by the first training or evaluation (``oncofed.edge.compute``)
    from oncofed.edge.compute import LazyModule

    local = LazyModule("oncofed.learning.train")
    private = LazyModule("oncofed.learning.private")


@dataclass(frozen=True)
class Contribution:
    """A site's answer to a secure round: its exact numbers by segment of the round's layout
    (masked before they leave), and what it also sends in the clear about itself."""

    values: dict[str, np.ndarray]
    clear: ClearPart


Outcome = Decline | StatsResult | EvaluateResult | AnalysisResult | bytes | Contribution
"""A decline, a JSON result, a safetensors update (bytes), or a secure round's contribution."""
KEPT_TABLES = 8
"""Analyses whose cohort tables are kept between Newton rounds (the most recent ones)."""
REHEARSAL = "rehearsal"
"""The job and task ``warm_up`` records in a transaction rolled back."""


@dataclass(frozen=True)
class _Split:
    train: Cohort
    held_out: Cohort


_rows_turn = threading.Lock()


def rows_in_turn(store: LocalStore, spec: JobSpec | AnalysisSpec) -> JobRows:
    """``job_rows`` of the spec's dataset, in turn with every other site of the process.

    Arrow lets go of the GIL around each of its small operations. When the sites of one edge
    process all read a job's rows at once (its first round), each of those operations handed
    the interpreter to another thread and took it back later, from caches the others had
    filled. At 200 sites in two processes, reading a job's rows took 6.0 ms of CPU a site at
    once, and 3.0 ms in turn. A large site's reading makes the others of its process wait;
    such a site is better in a process of its own."""
    with _rows_turn:
        return job_rows(spec, store.columns(spec.dataset))


def task_seed(spec: JobSpec, round_number: int, site: str) -> int:
    """Seed of one site's local training in one round: reproducible, distinct across sites."""
    return zlib.crc32(f"{spec.seed}:{round_number}:{site}".encode())


class TaskRunner:
    """Checks every task (``Guard``: policy, ledger, inputs), builds the cohort once per job,
    then computes stats, trains or evaluates."""

    def __init__(
        self,
        store: LocalStore,
        policy: EdgePolicy,
        site: str,
        ledger: Ledger,
        identity: Ed25519PrivateKey,
    ) -> None:
        self._store, self._policy, self._site, self._ledger = store, policy, site, ledger
        self._guard = Guard(policy, ledger)
        self._releases = Releases(policy, ledger)
        self._budget = Budget(ledger, identity, site)
        self._noises: dict[str, tuple[float, float, int]] = {}
        self._splits: dict[str, _Split] = {}
        self._tables: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._rows: dict[str, JobRows] = {}  # a job's rows, from its release check to its cohort

    def warm_up(self) -> None:
        """Pay before the first task what it would pay: the site's datasets read (the last one
        stays in memory, its variables computed: ``Columns.warm``), the ledger's statements of
        a job's first task compiled (in a ``Ledger.rehearsal``: nothing is written) and, where
        the policy lets the site train, the installed model plugins listed (metadata only) and
        torch made ready (``_torch_ready``). An edge whose policy allows no training never
        imports torch."""
        kept = None
        for name in self._store.names():
            with contextlib.suppress(StoreError):  # a damaged one is declined when asked for
                kept = self._store.columns(name)
        if kept is not None:
            kept.warm()
            self._releases.digest(kept.pseudonyms)
        with self._ledger.rehearsal(), contextlib.suppress(PolicyViolation):
            self._ledger.record_task(REHEARSAL, "0" * 64, TaskRecord(REHEARSAL, "stats", 0, ""))
            self._releases.rehearse(REHEARSAL)
            self._ledger.answered(REHEARSAL, REHEARSAL, "result")
        if self._trains:
            declared()
            _torch_ready()

    @property
    def _trains(self) -> bool:
        return bool({"train", "evaluate"} & set(self._policy.allowed_tasks))

    def run(self, task: TaskAssignment, fetch: Callable[[str], bytes]) -> Outcome:
        """The outcome of ``task``; ``fetch`` downloads a blob by its SHA-256. The task is
        recorded in the ledger once admitted, with how it was answered."""
        try:
            self._guard.admit(task)
        except PolicyViolation as exc:
            return Decline(reason=str(exc))
        outcome: Outcome | None = None
        try:
            outcome = self._released(task, fetch)
            return outcome
        finally:
            self._guard.answered(task, _label(outcome))

    def _released(self, task: TaskAssignment, fetch: Callable[[str], bytes]) -> Outcome:
        """``_answer``, once a job's first exact release here passed the cohort check
        (``Releases.first``: its cohort recorded before anything is computed); the record is
        withdrawn when that first task releases nothing (declined or failed)."""
        try:
            first = self._releases.first(task, functools.partial(self._read_rows, task))
        except (PolicyViolation, DataError, StoreError) as exc:
            self._rows.pop(task.job_id, None)
            return Decline(reason=str(exc))
        outcome: Outcome | None = None
        try:
            outcome = self._answer(task, fetch)
            return outcome
        finally:
            self._rows.pop(task.job_id, None)  # for this task's cohort only
            if first and (outcome is None or isinstance(outcome, Decline)):
                self._releases.withdraw(task.job_id)

    def _answer(self, task: TaskAssignment, fetch: Callable[[str], bytes]) -> Outcome:
        """The plain result, or under secure aggregation (``task.secure``) the contribution."""
        spec, secure = task.spec, task.secure is not None
        policy = self._policy
        started = time.perf_counter()
        try:
            self._check_privacy(spec)
            if isinstance(spec, AnalysisSpec):
                table = self._table(task.job_id, spec)
                if isinstance(spec.analysis, CoxAnalysis | LogisticAnalysis):
                    self._guard.check_params(task, design(spec.analysis, table))
                if secure:
                    return self._analysis_contribution(task, spec, table, started)
                part = answer(
                    spec,
                    table,
                    task.params,
                    policy.small_cell_threshold,
                    policy.min_patients_per_covariate,
                    cohort_minimums(policy, spec).cohort,
                    policy.discrete_levels,
                )
                cohort = len(table["time_origin"])
                return AnalysisResult(part=part, compute_seconds=_since(started), cohort=cohort)
            split = self._split(task.job_id, spec)
            stats = split.train.stats()
            if task.kind == "stats" and spec.privacy.differential_privacy is not None:
                self._plan_private(task, spec, len(split.train))
            if task.kind == "stats":
                if secure:
                    return Contribution(learning.stats_values(stats), self._clear(started))
                names = spec.numeric_names
                threshold, levels = policy.small_cell_threshold, policy.discrete_levels
                check_stats_columns(split.train.numeric, names, threshold, levels)
                return stats
            self._guard.check_stats(task, stats)
            weights = self._global_model(task, spec, fetch)
        except (PolicyViolation, DataError, StoreError) as exc:
            return Decline(reason=str(exc))
        scaling = task.standardization
        assert scaling is not None  # the guard admits no training task without it
        held_out = functools.partial(self._evaluate, spec, weights, split.held_out, scaling)
        if task.kind == "evaluate":
            evaluated = held_out()
            if secure:
                values = learning.evaluation_values(spec, evaluated)
                return Contribution(values, self._clear(started))
            return EvaluateResult(evaluation=evaluated, compute_seconds=_since(started))
        evaluation = held_out() if spec.evaluation.scores(task.round) else None
        x, spent = split.train.design(scaling), None
        if spec.privacy.differential_privacy is None:
            fit = local.train(
                spec,
                weights,
                x,
                split.train,
                seed=task_seed(spec, task.round, self._site),
                proximal_mu=build_strategy(spec.strategy).proximal_mu,  # the spec's, not the task's
            )
        else:
            try:
                fit, spent = self._train_private(task, spec, weights, x, split.train)
            except PolicyViolation as exc:
                return Decline(reason=str(exc))
        meta = TrainResult(
            task_id=task.task_id,
            n_train=len(split.train),
            train_loss=_loss(fit.loss) if spent is None else None,
            evaluation=evaluation,
            compute_seconds=_since(started),
            epsilon=spent,
        )
        update = clip_update(weights, fit.weights, spec.local.clip_norm)
        tensors.check_weights(update, parameter_shapes(spec.model, spec.n_inputs))
        if secure:
            delta = {k: update[k].astype(np.float64) - weights[k] for k in update}
            loss = meta.train_loss or 0.0  # under DP: no loss, in a segment that stays unread
            values = learning.update_values(spec, delta, meta.n_train, loss, evaluation)
            return Contribution(values, self._clear(started, epsilon=_coarse(spent)))
        return tensors.encode(update, meta)

    def _analysis_contribution(
        self,
        task: TaskAssignment,
        spec: AnalysisSpec,
        table: dict[str, np.ndarray],
        started: float,
    ) -> Contribution:
        """A secure analysis round: the site's exact numbers (under differential privacy with
        its share of the noise, ``_private_analysis``); beside a Newton loop's first round, in
        the clear, its own model fitted here or why it keeps it (``_own_fit``)."""
        policy = self._policy
        threshold, levels = policy.small_cell_threshold, policy.discrete_levels
        values = secure_values(spec, table, task.params, threshold, levels)
        if spec.privacy.differential_privacy is not None:
            values, noise, spent = self._private_analysis(task, spec, values)
            clear = self._clear(started, epsilon=_coarse(spent))
            return Contribution(values, clear.model_copy(update={"noise": noise}))
        first = task.round == 0 and isinstance(spec.analysis, CoxAnalysis | LogisticAnalysis)
        own = self._own_fit(spec, table) if first else None
        return Contribution(values, self._clear(started, own))

    def _private_analysis(
        self, task: TaskAssignment, spec: AnalysisSpec, values: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], float, float]:
        """Charge a differentially private analysis round to the budget (``PolicyViolation``
        when it, or before the first round the whole job, would exceed it; or past the job's
        rounds), then add this site's share of its Skellam noise (a secret seed: the same
        share if the task runs again); with the share's variance per number and what the job
        spent here."""
        dp = spec.privacy.differential_privacy
        assert dp is not None
        rule = mechanism(spec)
        if task.round >= rule.rounds:
            raise PolicyViolation(
                f"round {task.round + 1} of a differentially private analysis of "
                f"{rule.rounds} rounds: this site answers no more"
            )
        variance = rule.variance(dp.epsilon, dp.delta)
        limits, project = self._policy.privacy_budget, spec.project or ""
        if task.round == 0 and rule.rounds > 1:  # the whole loop must fit before it starts
            self._budget.check(task.job_id, project, rule.rounds * rule.round_rdp(variance), limits)
        charge = Charge(
            task.task_id, task.job_id, project, "analysis", task.round, rule.round_rdp(variance)
        )
        self._budget.charge(charge, limits)
        seed = self._budget.noise_seed(task.task_id, content_sha256(task))
        share = share_variance(variance, self._policy.noise_split)
        noisy = add_noise(values, rule, share, np.random.default_rng(seed))
        return noisy, share * rule.unit**2, self._budget.job_epsilon(task.job_id, dp.delta)

    def _own_fit(self, spec: AnalysisSpec, table: dict[str, np.ndarray]) -> OwnEstimate:
        """This site's own regression fitted on its rows (``analytics.site.own_fit``), when its
        policy shares site estimates and every per-site rule of a plain round is met; else
        why it keeps it."""
        policy = self._policy
        if not policy.share_site_estimates:
            return OwnEstimate(withheld="this site does not share its own estimates")
        try:
            return own_fit(
                spec, table, policy.small_cell_threshold, policy.min_patients_per_covariate,
                policy.min_cohort_size, policy.discrete_levels,
            )  # fmt: skip
        except DataError as exc:
            return OwnEstimate(withheld=str(exc))
        except ValidationError as exc:  # a fit beyond what a site may send (wire bounds)
            return OwnEstimate(withheld=f"its fit is out of bounds: {exc.errors()[0]['msg']}")

    def _clear(
        self, started: float, own: OwnEstimate | None = None, epsilon: float | None = None
    ) -> ClearPart:
        """What a secure round's answer says in the clear: the site's threshold, its compute
        time in whole seconds, beside a Newton loop's first round its own fit, and what a
        differentially private job spent here."""
        seconds = round(_since(started))
        threshold = self._policy.small_cell_threshold
        return ClearPart(threshold=threshold, compute_seconds=seconds, own=own, epsilon=epsilon)

    def _check_privacy(self, spec: JobSpec | AnalysisSpec) -> None:
        """Decline an exact release where the policy demands differential privacy, and a job
        whose delta is above the one the site's budget is measured at."""
        policy, dp = self._policy, spec.privacy.differential_privacy
        if dp is None:
            if policy.require_differential_privacy:
                raise PolicyViolation(
                    "this site runs only differentially private jobs "
                    f"({policy.quote('require_differential_privacy')})"
                )
            return
        if dp.delta > policy.privacy_budget.delta:
            raise PolicyViolation(
                f"the job's delta {dp.delta:g} is above the {policy.privacy_budget.delta:g} "
                "this site's privacy budget is measured at (privacy_budget.delta)"
            )

    def _noise(self, job_id: str, spec: JobSpec, n: int) -> tuple[float, float, int]:
        """DP-SGD at this site for a job: its noise multiplier, calibrated so that the job's
        declared rounds cost its epsilon here, the sample rate and the steps of one round
        (kept for the job: calibrating takes a good part of a second)."""
        if job_id not in self._noises:
            dp = spec.privacy.differential_privacy
            assert dp is not None
            rate, steps = private.dpsgd_schedule(n, spec.local.batch_size, spec.local.epochs)
            sigma = accounting.calibrate_dpsgd(dp.epsilon, dp.delta, rate, steps * spec.rounds)
            self._noises[job_id] = sigma, rate, steps
        return self._noises[job_id]

    def _plan_private(self, task: TaskAssignment, spec: JobSpec, n: int) -> None:
        """Before a differentially private job's first round: decline it when its rounds
        would take the project or the site past its budget."""
        sigma, rate, steps = self._noise(task.job_id, spec, n)
        planned = accounting.dpsgd_rdp(rate, sigma, steps * spec.rounds)
        limits = self._policy.privacy_budget
        self._budget.check(task.job_id, spec.project or "", planned, limits)

    def _train_private(
        self,
        task: TaskAssignment,
        spec: JobSpec,
        weights: tensors.Weights,
        x: np.ndarray,
        train: Cohort,
    ) -> tuple[local.LocalFit, float]:
        """One round of DP-SGD, charged to the budget before it runs (``PolicyViolation``
        when it would exceed it); with what the job has spent here since its first round."""
        dp = spec.privacy.differential_privacy
        assert dp is not None
        sigma, rate, steps = self._noise(task.job_id, spec, len(train))
        charge = Charge(
            task.task_id, task.job_id, spec.project or "", "train", task.round,
            accounting.dpsgd_rdp(rate, sigma, steps),
        )  # fmt: skip
        self._budget.charge(charge, self._policy.privacy_budget)
        fit = private.train_private(
            spec, weights, x, train,
            seed=self._budget.noise_seed(task.task_id, content_sha256(task)),
            noise_multiplier=sigma, max_grad_norm=dp.max_grad_norm,
        )  # fmt: skip
        return fit, self._budget.job_epsilon(task.job_id, dp.delta)

    def forget(self, job_id: str) -> None:
        self._splits.pop(job_id, None)
        self._tables.pop(job_id, None)
        self._noises.pop(job_id, None)

    def _read_rows(self, task: TaskAssignment) -> JobRows:
        """The job's rows, read once for its first task: its release check, then its cohort."""
        rows = self._rows[task.job_id] = rows_in_turn(self._store, task.spec)
        return rows

    def _cohort(self, job_id: str, spec: JobSpec | AnalysisSpec) -> dict[str, np.ndarray]:
        """The job's cohort here, refused below the minimum size before anything else about
        its rows is said; not a differentially private analysis's, whose noise covers a small
        or empty cohort (a refusal would tell its size exactly, and uncharged)."""
        rows = self._rows.pop(job_id, None)
        if rows is None:  # not this job's first task here, or a private analysis
            rows = rows_in_turn(self._store, spec)
        table = rows.table
        if not private_analysis(spec):
            self._check_size(spec, len(table["time_origin"]))
        check_time_origin(spec, table)
        return table

    def _table(self, job_id: str, spec: AnalysisSpec) -> dict[str, np.ndarray]:
        if job_id not in self._tables:
            self._tables[job_id] = self._cohort(job_id, spec)
            while len(self._tables) > KEPT_TABLES:
                self._tables.popitem(last=False)
        self._tables.move_to_end(job_id)
        return self._tables[job_id]

    def _split(self, job_id: str, spec: JobSpec) -> _Split:
        if job_id not in self._splits:
            minimums = cohort_minimums(self._policy, spec)
            table = self._cohort(job_id, spec)
            cohort = build_cohort(spec, table)

            def left_out() -> str:  # only for a refusal: its passes cost a job's first task
                causes = left_out_causes(spec.features, spec.outcome, table)
                return f"; left out: those {causes}" if causes else ""

            if len(cohort) < minimums.cohort:
                raise PolicyViolation(
                    "the patients with complete data and an outcome at this site are fewer "
                    f"than its minimum cohort size (policy {minimums.cohort_rule}="
                    f"{minimums.cohort}){left_out()}"
                )
            split = _Split(*split_cohort(spec, cohort))
            if len(split.train) < minimums.cohort:
                raise PolicyViolation(
                    "the training rows at this site are fewer than its minimum cohort size "
                    f"(policy {minimums.cohort_rule}={minimums.cohort}){left_out()}"
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

    def _evaluate(
        self, spec: JobSpec, weights: tensors.Weights, held_out: Cohort, scaling: Standardization
    ) -> Evaluation:
        """The held-out figures: a binary model's score histogram in the finest cells with no
        small count of a label under the policy's ``small_cell_threshold``; under secure
        aggregation on the finest grid (the rule applies to the sum over sites)."""
        secure = spec.privacy.secure_aggregation
        threshold = None if secure else self._policy.small_cell_threshold
        x = held_out.design(scaling)
        return local.held_out_evaluation(spec, weights, x, held_out, threshold)


_warming = threading.Lock()
_warmed = False


def _torch_ready() -> None:
    """Import torch and take one training step, once per process (the other sites' agents
    wait for it): a training job's first round then costs what its later ones do, and its
    statistics round shares no CPU with torch's imports."""
    global _warmed
    with _warming:
        if not _warmed:
            local.warm_up()
            _warmed = True


def _label(outcome: Outcome | None) -> str:
    """How a task was answered, for the ledger (None: it failed)."""
    if outcome is None:
        return "failed"
    if isinstance(outcome, Decline):
        return "declined"
    if isinstance(outcome, Contribution):
        return "secure"
    return "update" if isinstance(outcome, bytes) else "result"


def _coarse(epsilon: float | None) -> float | None:
    """A secure round's epsilon, rounded up to a tenth: the exact figure follows from the noise
    the site calibrated to its number of rows, which secure aggregation keeps from everyone."""
    return None if epsilon is None else math.ceil(epsilon * 10) / 10


def _loss(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _since(started: float) -> float:
    return time.perf_counter() - started
