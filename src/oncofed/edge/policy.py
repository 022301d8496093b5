"""The site's own check of every task, before any data is touched."""

from __future__ import annotations

from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation
from oncofed.learning.registry import parameter_count
from oncofed.wire.messages import TaskAssignment
from oncofed.wire.spec import JobSpec


def check_task(policy: EdgePolicy, task: TaskAssignment) -> None:
    """Raise ``PolicyViolation`` naming the rule when the task is not allowed here."""
    spec = task.spec
    if task.kind not in policy.allowed_tasks:
        raise PolicyViolation(f"task kind {task.kind!r} is not allowed by this site's policy")
    if (task.kind == "analysis") != (spec.kind == "analysis"):
        raise PolicyViolation(f"a {task.kind!r} task cannot carry a {spec.kind!r} job")
    if policy.allowed_datasets is not None and spec.dataset not in policy.allowed_datasets:
        raise PolicyViolation(f"dataset {spec.dataset!r} is not open to federated jobs here")
    if spec.kind == "train":
        _check_training(policy, spec)


def _check_training(policy: EdgePolicy, spec: JobSpec) -> None:
    if spec.model.type not in policy.allowed_models:
        raise PolicyViolation(
            f"model type {spec.model.type!r} is not allowed by this site's policy"
        )
    n_params = parameter_count(spec.model, spec.n_inputs)
    if n_params > policy.max_parameters:
        raise PolicyViolation(
            f"model has {n_params:,} parameters; policy max_parameters is {policy.max_parameters:,}"
        )
    if spec.rounds > policy.max_rounds:
        raise PolicyViolation(f"{spec.rounds} rounds; policy max_rounds is {policy.max_rounds}")
    if spec.local.epochs > policy.max_local_epochs:
        raise PolicyViolation(
            f"{spec.local.epochs} local epochs; policy max_local_epochs is "
            f"{policy.max_local_epochs}"
        )
