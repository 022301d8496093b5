"""The site's own check of what a task declares, before any data is touched (what it is
actually asked to do, against what this site ran before, is ``oncofed.edge.guard``'s)."""

from __future__ import annotations

from dataclasses import dataclass

from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation
from oncofed.edge.ledger import SAFE_ID
from oncofed.learning import plugins
from oncofed.learning.plugins import PluginError, canonical
from oncofed.learning.registry import architecture, parameter_count
from oncofed.learning.strategies import build_strategy
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import TaskAssignment
from oncofed.wire.spec import JobSpec


@dataclass(frozen=True)
class Minimums:
    """Fewest patients in a job's cohort (and training rows), and fewest held-out rows, with
    the policy fields they come from."""

    cohort: int
    held_out: int
    cohort_rule: str
    held_out_rule: str


def cohort_minimums(policy: EdgePolicy, spec: JobSpec | AnalysisSpec) -> Minimums:
    """The policy's minimums for ``spec``: ``min_cohort_size_secure`` for both under secure
    aggregation (no one sees this site's own numbers), else ``min_cohort_size`` and
    ``min_eval_size``."""
    if spec.privacy.secure_aggregation:
        secure = policy.min_cohort_size_secure
        return Minimums(secure, secure, "min_cohort_size_secure", "min_cohort_size_secure")
    return Minimums(
        policy.min_cohort_size, policy.min_eval_size, "min_cohort_size", "min_eval_size"
    )


def check_task(policy: EdgePolicy, task: TaskAssignment) -> None:
    """Raise ``PolicyViolation`` naming the rule when the task is not allowed here."""
    spec = task.spec
    if not (SAFE_ID.match(task.task_id) and SAFE_ID.match(task.job_id)):
        raise PolicyViolation("task and job ids must be 1 to 64 letters, digits, '_' or '-'")
    if task.kind not in policy.allowed_tasks:
        raise PolicyViolation(
            f"task kind {task.kind!r} is not allowed here: policy {policy.quote('allowed_tasks')}"
        )
    if (task.kind == "analysis") != (spec.kind == "analysis"):
        raise PolicyViolation(f"a {task.kind!r} task cannot carry a {spec.kind!r} job")
    if policy.allowed_datasets is not None and spec.dataset not in policy.allowed_datasets:
        raise PolicyViolation(
            f"dataset {spec.dataset!r} is not open to federated jobs here: policy "
            f"{policy.quote('allowed_datasets')}"
        )
    if policy.require_secure_aggregation and not spec.privacy.secure_aggregation:
        raise PolicyViolation(
            "this site takes part only in securely aggregated jobs "
            "(policy require_secure_aggregation)"
        )
    if spec.privacy.secure_aggregation != (task.secure is not None):
        raise PolicyViolation(
            "a securely aggregated job's tasks come as secure rounds, and only its tasks do: "
            "this site sends no plain result for one"
        )
    if isinstance(spec, JobSpec):
        _check_training(policy, spec)


def _check_training(policy: EdgePolicy, spec: JobSpec) -> None:
    if spec.model.type not in policy.allowed_models:
        raise PolicyViolation(
            f"model type {spec.model.type!r} is not allowed here: policy "
            f"{policy.quote('allowed_models')}"
        )
    _check_plugin(policy, spec)
    n_params = parameter_count(spec.model, spec.n_inputs)
    if n_params > policy.max_parameters:
        raise PolicyViolation(
            f"model has {n_params:,} parameters; policy {policy.quote('max_parameters')}"
        )
    if spec.rounds > policy.max_rounds:
        raise PolicyViolation(f"{spec.rounds} rounds; policy {policy.quote('max_rounds')}")
    if spec.local.epochs > policy.max_local_epochs:
        raise PolicyViolation(
            f"{spec.local.epochs} local epochs; policy {policy.quote('max_local_epochs')}"
        )
    if spec.local.clip_norm > policy.max_clip_norm:
        raise PolicyViolation(
            f"update clip norm {spec.local.clip_norm:g}; policy {policy.quote('max_clip_norm')}"
        )
    step = build_strategy(spec.strategy).max_step(spec.local.clip_norm)
    if step.norm == "l2" and spec.rounds * step.size > policy.max_model_travel:
        raise PolicyViolation(
            f"{spec.rounds} rounds of updates clipped to {spec.local.clip_norm:g} could move the "
            f"model {spec.rounds * step.size:g} from its start; policy "
            f"{policy.quote('max_model_travel')}; declare fewer rounds or a smaller clip_norm"
        )


def _check_plugin(policy: EdgePolicy, spec: JobSpec) -> None:
    """A plugin's model type runs here only from a distribution the policy pins (name,
    version, SHA-256 of its installed files), unchanged since: its code is imported by this
    check, once it passed, and never because a task names it."""
    name = spec.model.type
    plugin = plugins.declared().get(name)
    if plugin is None:
        return  # a built-in
    said = f"model type {name!r} comes from the plugin {plugin.distribution} {plugin.version}"
    pins = [p for p in policy.plugins if canonical(p.name) == canonical(plugin.distribution)]
    if not pins:
        raise PolicyViolation(
            f"{said}, which this site has not allowlisted: policy {policy.quote('plugins')}"
        )
    pin = next((p for p in pins if p.version == plugin.version), pins[0])
    try:
        plugins.load(name, pin)
        architecture(spec.model, spec.n_inputs)  # the layers it declares meet the contract
    except PluginError as exc:
        raise PolicyViolation(f"{said}: {exc}; policy {policy.quote('plugins')}") from exc
