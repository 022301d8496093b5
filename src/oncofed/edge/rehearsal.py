"""Statistics tasks played through a scratch site before an edge process first polls
(``rehearse``, called once by ``oncofed edge run``).

A process's first statistics task cost about 1.5 ms of CPU more than its later ones, spread
over every step (the task read, the guard, the release check, the delivery), and each site's
ledger rehearsal (``TaskRunner.warm_up``) did not pay it: it is the process's first run of
that code, not the site's. Played before, by an agent of a scratch site, it cost the first
real task about 0.5 ms more (``DEVELOPERS.md``, "Thirty-first pass"). The scratch site lives
in a temporary directory (its own rows, policy, key, ledger and egress log) and its
orchestrator is a function of this process (``httpx.MockTransport``): nothing leaves the
process, and nothing is written in a real site's directory. It only computes statistics, so
it never imports torch.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import yaml

from oncofed._files import write_private
from oncofed.cdm.tables import CdmData
from oncofed.edge import approvals
from oncofed.edge.config import EdgeConfig, EdgeHome, EdgePolicy
from oncofed.edge.store import LocalStore
from oncofed.wire.messages import TaskAssignment
from oncofed.wire.profile import DataProfile
from oncofed.wire.projects import ProjectPublic, covering
from oncofed.wire.spec import JobSpec

log = logging.getLogger(__name__)

TASKS = 3
"""Statistics tasks played: a process's task cost fell over its first three, then stayed."""
PATIENTS = 80
NAME = "rehearsal"
REQUESTS = 8
"""Requests the scratch orchestrator answers beyond a site's start and its tasks' polls and
answers; past them it stops the agent (a task that never counts must not loop forever)."""


def spec() -> JobSpec:
    """The rehearsal's job: statistics of two numeric variables of the scratch site."""
    return JobSpec.model_validate(
        {
            "name": NAME,
            "project": NAME,
            "dataset": NAME,
            "features": ["ext.a", "ext.b"],
            "outcome": {"type": "binary", "label": "ext.y"},
            "model": {"type": "logistic"},
            "rounds": 1,
        }
    )


def rehearse(tasks: int = TASKS) -> int:
    """Play ``tasks`` statistics tasks through a scratch site (see the module docstring);
    how many it answered with statistics. A failure is logged as a warning, never raised: the
    first real task then pays what the rehearsal would have."""
    try:
        with tempfile.TemporaryDirectory(prefix="oncofed-rehearsal-") as scratch:
            return _play(Path(scratch), tasks)
    except Exception as exc:  # one line, not a traceback: the edge starts all the same
        log.warning("the statistics rehearsal failed (%s): the first task pays for its code", exc)
        return 0
    finally:  # its garbage gone before ``oncofed edge run`` freezes what the process holds
        gc.collect()


def _play(root: Path, tasks: int) -> int:
    from oncofed.edge.agent import Agent  # its own imports are the edge's, paid once

    home = scratch_site(root)
    orchestrator = _Orchestrator(spec(), tasks)
    transport = httpx.MockTransport(orchestrator)
    agent = Agent(home, poll_seconds=0.0, backoff=(0.0, 0.0), transport=transport)
    try:
        agent.run(orchestrator.stop, max_tasks=tasks)
    finally:
        agent.close()
    return orchestrator.results


def scratch_site(root: Path) -> EdgeHome:
    """An enrolled edge directory under ``root`` with ``PATIENTS`` patients of random
    numbers (``ext.a``, ``ext.b``, a 0/1 ``ext.y``) and a policy that runs statistics tasks
    of the rehearsal's project alone."""
    home = EdgeHome(root)
    home.create(EdgeConfig(orchestrator="http://rehearsal.invalid", site=NAME), NAME)
    rng = np.random.default_rng(0)
    ids = pa.array([f"{i:032x}" for i in range(PATIENTS)])
    extension = {"a": rng.normal(size=PATIENTS), "b": rng.normal(size=PATIENTS)}
    data = CdmData(
        {
            "patient": pa.table({"patient_id": ids}),
            "outcome": pa.table({"patient_id": ids, "time_origin": ["diagnosis"] * PATIENTS}),
        },
        pa.table({"patient_id": ids, **extension, "y": np.arange(PATIENTS) % 2}),
    )
    profile = DataProfile(
        dataset=NAME,
        source_format="csv",
        imported_at=datetime.now(UTC),
        threshold=11,
        rows_read=PATIENTS,
        patients=PATIENTS,
    )
    LocalStore(home.datasets).save(NAME, data, profile)
    policy = EdgePolicy(allowed_tasks=["stats"]).model_dump(exclude={"projects"})
    write_private(home.policy_file, yaml.safe_dump(policy, sort_keys=False))
    scope = covering([spec()])
    project = ProjectPublic(
        name=NAME, title=NAME, purpose=NAME, principal_investigator=NAME, owner=NAME,
        members=[NAME], scope=scope, scope_sha256=scope.sha256(), created=datetime.now(UTC),
        sites=[],
    )  # fmt: skip
    approvals.decide(home.policy_file, project, dataset=NAME)
    return home


class _Orchestrator:
    """Hands out ``tasks`` statistics tasks of ``job``, one per poll, acknowledges every
    answer and counts the statistics results; it stops the agent (``stop``) once it has no
    task left to give, or after ``REQUESTS`` requests more than the tasks take."""

    def __init__(self, job: JobSpec, tasks: int) -> None:
        self._job, self._left = job, tasks
        self._requests = 3 * tasks + REQUESTS  # a poll, an answer, a spare each; the start
        self.stop = threading.Event()
        self.results = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self._requests -= 1
        if self._requests <= 0:
            self.stop.set()
        path = request.url.path
        if path.endswith("/tasks/next"):
            if self._left <= 0:
                self.stop.set()
                return httpx.Response(204)
            self._left -= 1
            name = f"{NAME}-{self._left}"
            task = TaskAssignment(task_id=name, job_id=name, round=0, kind="stats", spec=self._job)
            return httpx.Response(200, content=task.model_dump_json())
        if path.endswith("/identity") and request.method == "GET":
            return httpx.Response(200, json={"key": "ab" * 32})
        if request.method != "POST" or "/tasks/" not in path:
            return httpx.Response(204)  # the site's identity, profiles and decisions
        task_id = path.split("/tasks/")[1].split("/")[0]
        self.results += path.endswith("/result")
        return httpx.Response(200, json={"task_id": task_id, "status": "accepted"})
