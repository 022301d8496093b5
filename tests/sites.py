"""Sites played in one process against the real coordinator: each with the real task runner,
ledger and secure sessions, calling the coordinator's entry points where an edge would call
the API over HTTP (bodies go through the blob store's spool, as uploads do)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines.datasets import load_gbsg2

from oncofed.demo.data import mapping_file
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.importing import Source, import_source
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import Outcome, TaskRunner
from oncofed.edge.secure import Post, SecureSessions
from oncofed.orchestrator import identity
from oncofed.orchestrator.db import Job
from oncofed.orchestrator.views import job_public
from oncofed.privacy.secagg import new_identity, public_bytes
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisResult, AnalysisSpec
from oncofed.wire.messages import (
    Decline,
    EvaluateResult,
    JobPublic,
    ResultAck,
    StatsResult,
    TaskAssignment,
)
from oncofed.wire.secagg import KeyAdvert, ShareBundle, UnmaskShares
from oncofed.wire.spec import JobSpec
from tests.support import State


def sixty_each(root: Path, names: Iterable[str]) -> dict[str, LocalStore]:
    """Sites of 60 GBSG2 patients each (a seeded draw), each imported from its CSV export."""
    raw = load_gbsg2()
    order = np.random.default_rng(8).permutation(len(raw))
    tables = {name: raw.iloc[np.sort(order[60 * i : 60 * (i + 1)])] for i, name in enumerate(names)}
    return import_gbsg2(root, tables)


def import_gbsg2(root: Path, tables: Mapping[str, pd.DataFrame]) -> dict[str, LocalStore]:
    """Each site's GBSG2 rows exported as the demo's CSV and imported into its own store."""
    mapping = mapping_file("gbsg2.yaml", root)
    stores = {}
    for site, table in tables.items():
        table.to_csv(root / f"{site}.csv", index=False)
        stores[site] = LocalStore(root / site)
        source = Source("csv", str(root / f"{site}.csv"), mapping)
        import_source(stores[site], "gbsg2", source, threshold=11)
    return stores


class Site:
    """One site: its store, policy, ledger, identity key and secure sessions."""

    def __init__(
        self, state: State, name: str, store: LocalStore, policy: EdgePolicy, root: Path
    ) -> None:
        self.state, self.name = state, name
        self.ledger = Ledger(root / name)
        key = self.identity = new_identity()
        self.runner = TaskRunner(store, policy, name, self.ledger, key)
        self.secure = SecureSessions(
            name, key, self.ledger, policy, lambda: self.state.coordinator.public_key
        )
        with state.sessions.begin() as session:
            identity.register_identity(session, self.id, public_bytes(key).hex())
        self.answered = 0

    @property
    def id(self) -> int:
        return self.state.sites[self.name]

    def act(self) -> bool:
        """Take this site's next task or phase, if any, and answer it; True when it did."""
        coordinator = self.state.coordinator
        task = coordinator.next_task(self.id)
        if task is None:
            return False
        if task.secure is not None:
            outcome: Outcome | Post = self.secure.step(
                task, task.secure, lambda: self.runner.run(task, self.fetch)
            )
        else:
            outcome = self.runner.run(task, self.fetch)
        self.deliver(task, outcome)
        self.answered += 1
        return True

    def fetch(self, sha: str) -> bytes:
        return self.state.coordinator.blob_for_site(self.id, sha).read_bytes()

    def deliver(self, task: TaskAssignment, outcome: Outcome | Post) -> ResultAck:
        coordinator, site, task_id = self.state.coordinator, self.id, task.task_id
        if isinstance(outcome, Decline):
            return coordinator.decline(site, task_id, outcome.reason, failed=outcome.failed)
        if isinstance(outcome, Post) and outcome.phase != "masked":
            messages = {"keys": KeyAdvert, "shares": ShareBundle, "unmask": UnmaskShares}
            message = messages[outcome.phase].model_validate_json(outcome.body)
            return coordinator.secure_post(site, task_id, message)
        if isinstance(outcome, bytes):  # as the route hands over an update of known length
            return coordinator.accept_update(site, task_id, outcome, tensors.sha256(outcome))
        if isinstance(outcome, Post):
            with coordinator.blobs.spool() as (handle, path):
                handle.write(outcome.body)
            return coordinator.accept_masked(site, task_id, path, tensors.sha256(outcome.body))
        assert isinstance(outcome, StatsResult | EvaluateResult | AnalysisResult)
        return coordinator.accept_result(site, task_id, outcome)

    def close(self) -> None:
        self.ledger.close()


Watch = Callable[[Site, TaskAssignment, Outcome | Post, ResultAck], None]
"""Sees each answer a site gave: the site, the task, what it sent and the orchestrator's ack."""


class Mortal(Site):
    """A site whose process the test can kill, restart, and whose answers it can watch: once
    it posted in the secure phase ``kill_after`` (e.g. "shares") it never answers again;
    ``watch`` runs after each answer (to restart the coordinator at a chosen point, say)."""

    def __init__(
        self, state: State, name: str, store: LocalStore, policy: EdgePolicy, root: Path
    ) -> None:
        super().__init__(state, name, store, policy, root)
        self.store, self.policy = store, policy
        self.kill_after: str | None = None
        self.killed = False
        self.watch: Watch | None = None

    def restart(self) -> None:
        """The edge process restarts: what it held in memory (cohort tables, the secrets of
        its secure rounds) is gone; its ledger and identity key remain."""
        self.runner = TaskRunner(self.store, self.policy, self.name, self.ledger, self.identity)
        self.secure = SecureSessions(
            self.name,
            self.identity,
            self.ledger,
            self.policy,
            lambda: self.state.coordinator.public_key,
        )

    def act(self) -> bool:
        return not self.killed and super().act()

    def deliver(self, task: TaskAssignment, outcome: Outcome | Post) -> ResultAck:
        ack = super().deliver(task, outcome)
        if isinstance(outcome, Post) and outcome.phase == self.kill_after:
            self.killed = True
        if self.watch is not None:
            self.watch(self, task, outcome, ack)
        return ack


def sites(
    state: State,
    stores: Mapping[str, LocalStore],
    stack: ExitStack,
    root: Path,
    policy: EdgePolicy | None = None,
) -> dict[str, Site]:
    """A ``Site`` per store (every name enrolled in ``state``), closed with ``stack``."""
    played = {}
    for name, store in stores.items():
        played[name] = Site(state, name, store, policy or EdgePolicy(), root)
        stack.callback(played[name].close)
    return played


def mortals(
    state: State,
    stores: Mapping[str, LocalStore],
    stack: ExitStack,
    root: Path,
    policy: EdgePolicy | None = None,
) -> dict[str, Mortal]:
    """As ``sites``, each a ``Mortal``."""
    played = {}
    for name, store in stores.items():
        played[name] = Mortal(state, name, store, policy or EdgePolicy(), root)
        stack.callback(played[name].close)
    return played


def enrol(state: State, names: Iterable[str]) -> None:
    """Enrol further sites in ``state`` (the fixture enrols alpha and beta)."""
    with state.sessions.begin() as session:
        for name in names:
            created = identity.create_site(session, name)
            enrolled = identity.enrol(session, created.enrolment_token)
            state.sites[name] = identity.authenticate_site(session, enrolled.credential).id
            state.credentials[name] = enrolled.credential


def job(state: State, job_id: str) -> JobPublic:
    with state.sessions() as session:
        row = session.get(Job, job_id)
        assert row is not None
        return job_public(row)


def play(
    state: State,
    played: Mapping[str, Site],
    spec: JobSpec | AnalysisSpec,
    *,
    between: Callable[[int], None] | None = None,
    limit: int = 2000,
) -> JobPublic:
    """Submit ``spec`` and let the sites answer until the job ends; ``between(pass)`` runs
    before each pass over the sites (to restart the coordinator, expire rounds, or stop a
    site)."""
    job_id = state.coordinator.submit(spec, state.admin_id).id
    return drive(state, played, job_id, between=between, limit=limit)


def drive(
    state: State,
    played: Mapping[str, Site],
    job_id: str,
    *,
    between: Callable[[int], None] | None = None,
    until: Callable[[JobPublic], bool] | None = None,
    limit: int = 2000,
) -> JobPublic:
    """As ``play``, for a job already submitted: the sites answer until it ends, or until
    ``until(job)`` holds before a pass (say, once its round reached a phase)."""
    for sweep in range(limit):
        if between is not None:
            between(sweep)
        public = job(state, job_id)
        if public.status != "running" or (until is not None and until(public)):
            return public
        if not any([site.act() for site in played.values()]):
            state.coordinator.expire()
    raise AssertionError(f"the job did not end in {limit} passes")
