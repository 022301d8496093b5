"""CPU of one edge task, in process: one ``Agent`` fed training tasks by a scripted orchestrator.

The task is ``bench/peers.py``'s at 50 sites: a 30-64-64-1 MLP, FedAvg, one local epoch of SGD
(batch 32) over a site of 13 patients (10 training rows, 3 held out), the global model handed
with each task (``TaskAssignment.model``), the policy of the benchmark's sites. The agent runs
its real loop (``Agent.run``: poll, parse, policy, guard, ledger, training, held-out
evaluation, egress log, signed audit entry, post) against an ``httpx.MockTransport`` whose
answers are built before the clock starts (each task's JSON; the post's ``ResultAck``). Each
job is a statistics round then ``--rounds`` training rounds, each round's global model a little
further from the initial one (so that the edge writes a model file every round, as it does in a
federation). Torch uses one thread, as ``oncofed edge run`` does by default.

A task's CPU is the process's user and system time between two polls (``getrusage``), counted
over the training tasks, and apart over each job's statistics task (its first at the site: the
job's cohort is built and its release recorded); each repetition runs ``--jobs`` jobs in a fresh
edge directory after one job of warm-up, and the figures are the medians over ``--reps``. Then
``--profile`` runs the same under cProfile, timed by the process's CPU, and prints its top 30
entries by tottime and by cumtime.

``python bench/edge_task.py [--reps 5] [--jobs 6] [--rounds 20] [--profile] [--output FILE]``
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import logging
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from stamp import write_figures

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers

from peers import FEATURES, PUBLIC_DATA_POLICY, oncofed_spec

from oncofed._files import write_private
from oncofed.edge import Agent, EdgeConfig, EdgeHome
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights
from oncofed.wire import tensors
from oncofed.wire.messages import StatsResult, TaskAssignment
from oncofed.wire.spec import JobSpec
from tests.support import approval_block, save_columns

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-edge-task.json"
PATIENTS = 13
DATASET = "data"
SPEC = JobSpec.model_validate(oncofed_spec("mlp", 50, 20) | {"dataset": DATASET})


def make_home(root: Path, spec: JobSpec) -> EdgeHome:
    """An edge directory with one site's rows (``PATIENTS``, 30 features and a label) and the
    benchmark sites' policy, approving the job's project."""
    home = EdgeHome(root)
    config = EdgeConfig.model_validate({"orchestrator": "http://orch.test", "site": "a"})
    home.create(config, "c")
    rng = np.random.default_rng(1)
    columns: dict[str, np.ndarray] = {name: rng.normal(size=PATIENTS) for name in FEATURES}
    columns["y"] = np.arange(PATIENTS) % 2
    save_columns(home.datasets, DATASET, columns)
    policy = yaml.safe_load(home.policy_file.read_text()) or {}
    text = yaml.safe_dump(policy | PUBLIC_DATA_POLICY, sort_keys=False)
    write_private(home.policy_file, text + "\n" + approval_block(spec, dataset=DATASET))
    return home


class Orchestrator:
    """Hands out ``tasks`` (their JSON, built beforehand) one per poll, answers every post with
    an acceptance, and notes the process's CPU at each poll and the kind of task it hands."""

    def __init__(self, tasks: list[tuple[str, bytes]]) -> None:
        self.tasks = iter(tasks)
        self.polls: list[tuple[str, resource.struct_rusage]] = []
        self.posts: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/identity":
            key = {"key": "ab" * 32}
            return httpx.Response(204) if request.method == "PUT" else httpx.Response(200, json=key)
        if request.method == "PUT":  # the dataset's data quality report
            return httpx.Response(204)
        if request.url.path == "/v1/tasks/next":
            kind, body = next(self.tasks, ("", b""))
            self.polls.append((kind, resource.getrusage(resource.RUSAGE_SELF)))
            return httpx.Response(200, content=body) if body else httpx.Response(204)
        self.posts.append(request.content)
        task_id = request.url.path.split("/")[3]
        return httpx.Response(200, json={"task_id": task_id, "status": "accepted"})


def job_tasks(job: str, spec: JobSpec, pooled: StatsResult | None) -> Iterator[tuple[str, bytes]]:
    """A job's statistics task, then (given the pooled totals) its training tasks, each round's
    global model moved a little from the last (round 1's is the initial model)."""
    yield "stats", _task(job, 0, "stats", spec).model_dump_json().encode()
    if pooled is None:
        return
    initial = initial_weights(spec.model, spec.n_inputs, spec.seed)
    rng = np.random.default_rng(0)
    scaling = standardization(pooled)
    for number in range(1, spec.rounds + 1):
        moved = {
            k: (w + 1e-3 * (number - 1) * rng.normal(size=w.shape)) for k, w in initial.items()
        }
        model = tensors.encode({k: w.astype(np.float32) for k, w in moved.items()})
        task = _task(
            job, number, "train", spec, model_sha256=tensors.sha256(model), model=model,
            pooled=pooled, standardization=scaling,
        )  # fmt: skip
        yield "train", task.model_dump_json().encode()


def _task(job: str, number: int, kind: str, spec: JobSpec, **fields: Any) -> TaskAssignment:
    return TaskAssignment.model_validate(
        {"task_id": f"{job}-{number}", "job_id": job, "round": number, "kind": kind,
         "spec": spec, **fields}
    )  # fmt: skip


def pooled_totals(root: Path) -> StatsResult:
    """The site's own statistics answer, as the pooled totals of a one-site federation."""
    home = make_home(root, SPEC)
    orchestrator = Orchestrator(list(job_tasks("stats", SPEC, None)))
    with _agent(home, orchestrator) as agent:
        agent.run(max_tasks=1)
    return StatsResult.model_validate_json(orchestrator.posts[-1])


def _agent(home: EdgeHome, orchestrator: Orchestrator) -> Agent:
    return _Closing(home, transport=httpx.MockTransport(orchestrator))


class _Closing(Agent):
    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def run_jobs(root: Path, pooled: StatsResult, jobs: int, profile: cProfile.Profile | None) -> Any:
    """One warm-up job, then ``jobs`` measured: the user and system CPU (ms) of each training
    task, the CPU (ms) of each job's statistics task (its first here: the job's cohort built
    and recorded), and what the orchestrator received."""
    home = make_home(root, SPEC)
    tasks = [t for j in range(jobs + 1) for t in job_tasks(f"job{j}", SPEC, pooled)]
    orchestrator = Orchestrator(tasks)
    per_job = SPEC.rounds + 1
    with _agent(home, orchestrator) as agent:
        agent.run(max_tasks=per_job)  # warm-up: torch, the dataset, SQLAlchemy's caches
        if profile is not None:
            profile.enable()
        agent.run(max_tasks=per_job * jobs)
        if profile is not None:
            profile.disable()
    polls = orchestrator.polls[per_job:]
    user, system, stats = [], [], []
    for (kind, before), (_, after) in itertools.pairwise(polls):
        spent_user = (after.ru_utime - before.ru_utime) * 1e3
        spent_system = (after.ru_stime - before.ru_stime) * 1e3
        if kind == "train":
            user.append(spent_user)
            system.append(spent_system)
        elif kind == "stats":
            stats.append(spent_user + spent_system)
    return user, system, stats, orchestrator.posts


def measure(reps: int, jobs: int) -> dict[str, Any]:
    """The median over ``reps`` of the mean CPU per training task (ms, user and system), of
    the median task's (less sensitive to another process taking the cores) and of the median
    statistics task's."""
    users, systems, typical, firsts = [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        pooled = pooled_totals(Path(scratch) / "stats")
        for rep in range(reps):
            user, system, stats, posts = run_jobs(Path(scratch) / f"rep{rep}", pooled, jobs, None)
            updates = sum(1 for body in posts if body[:8] != b'{"reason')
            if updates < len(user):
                raise RuntimeError(f"only {updates} of {len(user)} tasks were answered")
            users.append(statistics.fmean(user))
            systems.append(statistics.fmean(system))
            typical.append(statistics.median(u + s for u, s in zip(user, system, strict=True)))
            firsts.append(statistics.median(stats))
            print(
                f"rep {rep}: training {users[-1]:.2f} + {systems[-1]:.2f} ms (user + sys, "
                f"mean), statistics {firsts[-1]:.2f} ms (median)"
            )
    user_ms, sys_ms = statistics.median(users), statistics.median(systems)
    return {
        "tasks_per_rep": jobs * SPEC.rounds,
        "user_ms": round(user_ms, 3),
        "sys_ms": round(sys_ms, 3),
        "cpu_ms": round(user_ms + sys_ms, 3),
        "median_task_cpu_ms": round(statistics.median(typical), 3),
        "stats_task_cpu_ms": round(statistics.median(firsts), 3),
        "reps_user_ms": [round(u, 3) for u in users],
        "reps_sys_ms": [round(s, 3) for s in systems],
    }


def print_profile(jobs: int) -> None:
    profile = cProfile.Profile(time.process_time)  # CPU, as the figures: no fsync's wait
    with tempfile.TemporaryDirectory() as scratch:
        pooled = pooled_totals(Path(scratch) / "stats")
        run_jobs(Path(scratch) / "profiled", pooled, jobs, profile)
    for order in ("tottime", "cumtime"):
        print(f"\n-- top 30 by {order} ({jobs} jobs of {SPEC.rounds} training rounds) --")
        pstats.Stats(profile).strip_dirs().sort_stats(order).print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    global SPEC
    SPEC = SPEC.model_copy(update={"rounds": args.rounds})
    # as ``oncofed edge run`` logs to a file or journal: INFO, plain lines, httpx quiet
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    figures = measure(args.reps, args.jobs)
    print(json.dumps(figures, indent=2))
    write_figures(args.output, figures)
    if args.profile:
        print_profile(args.jobs)


if __name__ == "__main__":
    main()
