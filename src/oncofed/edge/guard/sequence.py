"""Which task may come next in a job: its round and kind must fit the spec, rounds strictly
increase (a task run before may only come again unchanged), and the job's budgets hold."""

from __future__ import annotations

from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation
from oncofed.edge.ledger import JobRecord
from oncofed.wire.analysis import CoxAnalysis, LogisticAnalysis
from oncofed.wire.messages import TaskAssignment
from oncofed.wire.spec import JobSpec


def check_round(policy: EdgePolicy, task: TaskAssignment) -> None:
    """The task's round and kind fit its spec: a training job has statistics in round 0,
    training in rounds 1 to ``rounds`` and the evaluation in ``rounds + 1``; a one-round
    analysis only round 0; a regression rounds below both its and the policy's iterations."""
    spec, number = task.spec, task.round
    if isinstance(spec, JobSpec):
        last = spec.rounds
        expected = "stats" if number == 0 else "train" if number <= last else "evaluate"
        if task.kind != expected or number > last + 1:
            raise PolicyViolation(
                f"a {task.kind} task in round {number} does not fit job {spec.name!r}: statistics "
                f"in round 0, training in rounds 1 to {last}, evaluation in round {last + 1}"
            )
        return
    analysis = spec.analysis
    if isinstance(analysis, CoxAnalysis | LogisticAnalysis):
        declared = analysis.max_iterations
        if number >= min(declared, policy.max_iterations):
            raise PolicyViolation(
                f"Newton round {number} of analysis {spec.name!r}: it declares {declared} "
                f"iterations and policy max_iterations is {policy.max_iterations}"
            )
    elif number != 0:
        raise PolicyViolation(
            f"a {analysis.type} analysis has one round (round 0), not round {number}"
        )


def check_next(
    policy: EdgePolicy,
    task: TaskAssignment,
    spec_sha256: str,
    content_sha256: str,
    job: JobRecord | None,
) -> bool:
    """Whether ``task`` may run after what this site ran of its job (``job``; None when it is
    the job's first task here). True when it is a task run before, delivered again unchanged
    (it is run again); PolicyViolation naming the rule otherwise."""
    check_round(policy, task)
    if job is None:
        return False
    if spec_sha256 != job.spec_sha256:
        raise PolicyViolation(
            f"task {task.task_id} carries a spec that differs from the one job {task.job_id} "
            "started with here"
        )
    for done in job.tasks:
        if done.task_id == task.task_id:
            if done.content_sha256 != content_sha256:
                raise PolicyViolation(
                    f"task {task.task_id} was delivered before with different content"
                )
            return True
        if done.round == task.round:
            raise PolicyViolation(
                f"round {task.round} of job {task.job_id} was already run here as task "
                f"{done.task_id}"
            )
    last = max(done.round for done in job.tasks)
    if task.round < last:
        raise PolicyViolation(
            f"round {task.round} of job {task.job_id} comes after round {last} here: rounds "
            "must increase"
        )
    if len(job.tasks) >= policy.max_tasks_per_job:
        raise PolicyViolation(
            f"this site has run {len(job.tasks)} tasks of job {task.job_id}; policy "
            f"max_tasks_per_job is {policy.max_tasks_per_job}"
        )
    return False
