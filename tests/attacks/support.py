"""A malicious orchestrator of our own, a real edge agent for it to attack, and the scorers.

``MaliciousOrchestrator`` is a small FastAPI app speaking the real wire protocol (the routes
of ``oncofed.orchestrator.routes.edge``), served by uvicorn on 127.0.0.1 in a thread. It hands
out exactly the tasks an attack writes (kind, round, spec, model blob, scaling, parameters) and
gives the attack every byte the edge sends back. ``RunningEdge`` is a real ``oncofed.edge.Agent``
in a thread, with its own edge directory, policy file and a real import of GBSG2 rows.

Attacks see only what an orchestrator sees: the answers of ``MaliciousOrchestrator.ask``. The
scorers (``true_design_rows``, ``true_training_rows``, ``score``) read the site's store, which
only a test may do.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import queue
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel

from oncofed.analytics.design import design
from oncofed.cdm.frame import job_table
from oncofed.demo.data import mapping_file, site_tables
from oncofed.edge import Agent, EdgeConfig, EdgeHome, EdgePolicy, LocalStore
from oncofed.edge.config import POLICY
from oncofed.edge.importing import Source, import_source
from oncofed.learning.data import build_cohort, split_cohort
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisParams, AnalysisResult, AnalysisSpec, LogisticAnalysis
from oncofed.wire.messages import (
    API_PREFIX,
    SHA256_HEADER,
    Decline,
    ResultAck,
    Standardization,
    StatsResult,
    TaskAssignment,
    TrainResult,
)
from oncofed.wire.profile import DataProfile
from oncofed.wire.spec import JobSpec
from tests.support import approve_here

log = logging.getLogger("oncofed.attacks")
M = TypeVar("M", bound=BaseModel)
Endpoint = Literal["result", "update", "decline"]
Row = tuple[float, ...]
"""One patient as an attack recovers it (and as the scorer knows it): the values of the
attacked design's columns, in the attack's column order."""

SITE = "north"
DATASET = "gbsg2"
GBSG2_COLUMNS = [
    "age_at_diagnosis",
    "tumour_size_mm",
    "nodes_positive",
    "biomarker.PR.value",
    "biomarker.ER.value",
    "treatment.endocrine",
]
"""GBSG2's numeric columns in the data model, the binary endocrine therapy among them."""
CREDENTIAL = "attack-edge-credential"
STUDY = "attacked-study"
"""The project every attack's jobs belong to; the site approved it (``RunningEdge.approve``)."""
PLANTED_TREATMENT = "chemotherapy"
PLANTED_GROUP = (7, 2)
"""Patients given the planted treatment at the site, and recurrences among them."""


# -- the site's data ---------------------------------------------------------------------


def write_site_export(out: Path) -> Source:
    """The demo's north hospital (247 real GBSG2 patients) as its CSV export with the demo's
    mapping, plus one planted column: chemotherapy for a group of 7 patients, 2 of whom
    recurred (the small group the log1p bypass reads)."""
    table = site_tables()["north"].copy()
    group, events = PLANTED_GROUP
    recurred = table.index[table["cens"] == 1][:events]
    censored = table.index[table["cens"] == 0][: group - events]
    table["chemo"] = "no"
    table.loc[recurred.union(censored), "chemo"] = "yes"
    csv = out / f"{SITE}.csv"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv, index=False)
    mapping = mapping_file("gbsg2.yaml", out)
    rules = yaml.safe_load(mapping.read_text())
    rules["treatments"].append(
        {"type": PLANTED_TREATMENT, "column": "chemo", "received": ["yes"],
         "not_received": ["no"], "intent": "adjuvant", "start_day": 0}
    )  # fmt: skip
    mapping.write_text(yaml.safe_dump(rules, sort_keys=False))
    return Source("csv", str(csv), mapping)


def import_site(root: Path) -> Path:
    """Import the north export the way ``oncofed edge import`` does (de-identification guard,
    validation, pseudonyms in a random order, profile); returns the datasets folder."""
    datasets = root / "datasets"
    import_source(LocalStore(datasets), DATASET, write_site_export(root / "export"), threshold=11)
    return datasets


# -- the malicious orchestrator ----------------------------------------------------------


class Declined(Exception):
    """The edge declined a task; the message is its reason."""


@dataclass(frozen=True)
class Answer:
    """What the edge posted for one task: a JSON result, a safetensors update or a decline."""

    task: TaskAssignment
    endpoint: Endpoint
    body: bytes

    def _accepted(self) -> None:
        if self.endpoint == "decline":
            raise Declined(Decline.model_validate_json(self.body).reason)

    def json(self, model: type[M]) -> M:
        """The JSON result as ``model``; ``Declined`` when the edge declined."""
        self._accepted()
        return model.model_validate_json(self.body)

    def stats(self) -> StatsResult:
        return self.json(StatsResult)

    def analysis(self) -> AnalysisResult:
        return self.json(AnalysisResult)

    def update(self) -> tuple[tensors.Weights, TrainResult]:
        """The returned model and its header; ``Declined`` when the edge declined."""
        self._accepted()
        return tensors.decode(self.body), tensors.read_meta(self.body, TrainResult)


class Orchestrator(Protocol):
    """What an attack may use: hand out a task (with its model blob) and read the answer."""

    def ask(self, task: TaskAssignment, model: bytes | None = None) -> Answer: ...


class MaliciousOrchestrator:
    """The orchestrator's side of the edge API, every decision left to the attack.

    ``ask`` queues one task (and publishes its model blob), then waits for the edge's answer;
    ``answers`` keeps every answer in order."""

    def __init__(self, credential: str = CREDENTIAL, timeout: float = 60.0) -> None:
        self._credential, self._timeout = credential, timeout
        self.before_ask: Callable[[TaskAssignment], None] | None = None
        """Called with each task before it is handed out (the site approving its project)."""
        self._tasks: queue.Queue[TaskAssignment] = queue.Queue()
        self._posted: queue.Queue[Answer] = queue.Queue()
        self._handed: dict[str, TaskAssignment] = {}
        self._blobs: dict[str, bytes] = {}
        self._closing = threading.Event()
        self.answers: list[Answer] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._app(), log_level="warning", lifespan="off", ws="none", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],))

    def __enter__(self) -> MaliciousOrchestrator:
        self._thread.start()
        give_up = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > give_up or not self._thread.is_alive():
                raise RuntimeError("the malicious orchestrator did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._closing.set()
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def ask(self, task: TaskAssignment, model: bytes | None = None) -> Answer:
        """Hand ``task`` to the edge (serving ``model`` as its blob) and return its answer."""
        if self.before_ask is not None:
            self.before_ask(task)
        if model is not None:
            self._blobs[tensors.sha256(model)] = model
        self._handed[task.task_id] = task
        self._tasks.put(task)
        answer = self._posted.get(timeout=self._timeout)
        if answer.task.task_id != task.task_id:
            raise RuntimeError(f"answer for task {answer.task.task_id}, not {task.task_id}")
        return answer

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def authenticate(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.headers.get("Authorization") != f"Bearer {self._credential}":
                return Response(status_code=401)
            return await call_next(request)

        @app.get(API_PREFIX + "/tasks/next")
        def next_task(wait: float = 25.0) -> Response:
            """Long poll, at most a second at a time so that the test can end promptly."""
            if self._closing.is_set():
                return Response(status_code=204)
            try:
                task = self._tasks.get(timeout=min(wait, 1.0))
            except queue.Empty:
                return Response(status_code=204)
            return Response(task.model_dump_json(), media_type="application/json")

        @app.get(API_PREFIX + "/blobs/{sha}")
        def blob(sha: str) -> Response:
            if sha not in self._blobs:
                return Response(status_code=404)
            return Response(self._blobs[sha], media_type="application/octet-stream")

        @app.post(API_PREFIX + "/tasks/{task_id}/result")
        async def result(task_id: str, request: Request) -> Response:
            return self._received(task_id, "result", await request.body(), request)

        @app.post(API_PREFIX + "/tasks/{task_id}/update")
        async def update(task_id: str, request: Request) -> Response:
            return self._received(task_id, "update", await request.body(), request)

        @app.post(API_PREFIX + "/tasks/{task_id}/decline")
        async def decline(task_id: str, request: Request) -> Response:
            return self._received(task_id, "decline", await request.body(), request)

        @app.put(API_PREFIX + "/profiles/{dataset}", status_code=204)
        async def profile(dataset: str, request: Request) -> Response:
            DataProfile.model_validate_json(await request.body())  # as the real one checks
            return Response(status_code=204)

        return app

    def _received(
        self, task_id: str, endpoint: Endpoint, body: bytes, request: Request
    ) -> Response:
        """Keep what the edge posted for ``task_id`` and hand it to the waiting attack."""
        if request.headers.get(SHA256_HEADER) != tensors.sha256(body):
            return Response(status_code=400)
        posted = Answer(self._handed[task_id], endpoint, body)
        self.answers.append(posted)
        self._posted.put(posted)
        status = "declined" if endpoint == "decline" else "accepted"
        ack = ResultAck(task_id=task_id, status=status)
        return Response(ack.model_dump_json(), media_type="application/json")


LR = 10.0
"""The largest learning rate a spec may declare: the largest update, the least rounding."""


def sgd_job(
    name: str, features: list[Any], model: dict[str, Any], rounds: int, clip_norm: float
) -> JobSpec:
    """A training job an orchestrator may write: one full-batch SGD step per round at the
    largest learning rate, predicting recurrence, 5% held out."""
    return JobSpec.model_validate(
        {
            "name": name,
            "dataset": DATASET,
            "features": features,
            "outcome": {"type": "binary", "label": "rfs_event"},
            "model": model,
            "rounds": rounds,
            "local": {"epochs": 1, "batch_size": 1_000_000, "lr": LR, "optimizer": "sgd",
                      "clip_norm": clip_norm},
            "evaluation": {"holdout": 0.05},
        }
    )  # fmt: skip


def make_task(
    job_id: str,
    kind: str,
    round_number: int,
    spec: JobSpec | AnalysisSpec,
    *,
    model: bytes | None = None,
    scaling: Standardization | None = None,
    pooled: StatsResult | None = None,
    params: AnalysisParams | None = None,
) -> TaskAssignment:
    """Task ``{job_id}-{round_number}`` as an orchestrator writes it (``model`` by its hash),
    in the ``STUDY`` project when the spec names none."""
    spec = spec if spec.project else spec.model_copy(update={"project": STUDY})
    return TaskAssignment.model_validate(
        {"task_id": f"{job_id}-{round_number}", "job_id": job_id, "round": round_number,
         "kind": kind, "spec": spec, "standardization": scaling, "pooled": pooled,
         "params": params, "model_sha256": None if model is None else tensors.sha256(model)}
    )  # fmt: skip


# -- the attacked edge -------------------------------------------------------------------


class RunningEdge:
    """A real edge of site ``north``: its directory (config, credential, ``policy``) with a copy
    of the imported datasets, and ``oncofed.edge.Agent`` polling ``orchestrator`` in a thread."""

    def __init__(self, root: Path, datasets: Path, orchestrator: str, policy: EdgePolicy) -> None:
        self.home = EdgeHome(root)
        config = EdgeConfig.model_validate({"orchestrator": orchestrator, "site": SITE})
        self.home.create(config, CREDENTIAL)
        written = policy.model_dump(exclude={"projects"})  # decided below (``approve``)
        (root / POLICY).write_text(yaml.safe_dump(written, sort_keys=False))
        self._specs: list[JobSpec | AnalysisSpec] = []
        shutil.copytree(datasets, self.home.datasets, dirs_exist_ok=True)
        self._stop = threading.Event()
        self._agent = Agent(self.home, poll_seconds=1.0, backoff=(0.01, 0.5))
        self._thread = threading.Thread(target=self._agent.run, args=(self._stop,))

    def __enter__(self) -> RunningEdge:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._agent.close()

    def store(self) -> LocalStore:
        return LocalStore(self.home.datasets)

    def approve(self, task: TaskAssignment) -> None:
        """The site's admin approved the project the attack abuses, for every job it sends
        (the threat: a hostile orchestrator within an approved study): the policy's approval
        widened to admit ``task``'s spec when it does not yet."""
        self._specs.append(task.spec)
        decision = self.home.policy().projects.get(STUDY)
        if decision is None or decision.scope is None or decision.scope.admits(task.spec):
            approve_here(self.home.policy_file, *self._specs, dataset=DATASET)


@contextlib.contextmanager
def attacked_edge(
    root: Path, datasets: Path, policy: EdgePolicy
) -> Iterator[tuple[MaliciousOrchestrator, RunningEdge]]:
    """The malicious orchestrator and a real edge with ``policy`` connected to it."""
    with (
        MaliciousOrchestrator() as orchestrator,
        RunningEdge(root, datasets, orchestrator.url, policy) as edge,
    ):
        orchestrator.before_ask = edge.approve
        yield orchestrator, edge


# -- switching one defence off -----------------------------------------------------------

DEFENCES: dict[str, tuple[str, ...]] = {
    # Part B (on main), edge/guard/sequence.py: a task's round and kind fit what its spec
    # declares (training rounds 1 to ``rounds``, Newton rounds below the iterations).
    "task budget": ("oncofed.edge.guard.sequence:check_round",),
    # Part B (on main), edge/guard/models.py as bound in edge/guard/__init__.py: the round-1
    # model is the one the spec and seed give, and each later one within the strategy's
    # clipped step per round elapsed since the last model the site saw.
    "model step": ("oncofed.edge.guard:check_model",),
    # Part C (on main), analytics/design.py, also bound in analytics/site.py: small groups in
    # a regression's discrete design columns, whatever transform produced them.
    "design columns": (
        "oncofed.analytics.design:check_cells",
        "oncofed.analytics.site:check_cells",
    ),
}
"""Where each defence a naive configuration switches off lives, as ``module:function``. A
hook whose module does not exist yet is a defence that has not landed: nothing to switch
off. A module that exists without the hook fails the test: the defence moved; update this
table."""


def disable(monkeypatch: pytest.MonkeyPatch, defence: str) -> list[str]:
    """Replace the hooks of ``defence`` (a key of ``DEFENCES``) with no-ops; returns those
    replaced (none while the defence has not landed)."""
    replaced = []
    for hook in DEFENCES[defence]:
        module_name, name = hook.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        if not hasattr(module, name):
            raise AttributeError(
                f"defence {defence!r}: {module_name} exists but has no {name}; update "
                "DEFENCES in tests/attacks/support.py"
            )
        monkeypatch.setattr(module, name, _no_op)
        replaced.append(hook)
    return replaced


def _no_op(*_: object, **__: object) -> None:
    return None


# -- what an attack returns and how it is scored -----------------------------------------


@dataclass
class Recovery:
    """What an attack recovered, and what it cost."""

    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    tasks: int = 0
    """Tasks the edge answered (declines included)."""
    seconds: float = 0.0
    stopped: str | None = None
    """Why the attack ended early: the reason of the edge's decline."""
    declined: list[str] = field(default_factory=list)
    """The reasons of the declines an attack went on past."""


@dataclass(frozen=True)
class Score:
    exact: int
    """Recovered rows equal to a true row (each true row counted once)."""
    wrong: int
    """Recovered rows equal to no true row left."""
    total: int
    """True rows."""


def score(recovered: Sequence[Row], truth: Sequence[Row]) -> Score:
    """Match recovered rows to true rows exactly, as multisets."""
    left = Counter(truth)
    exact = 0
    for row in recovered:
        if left[row] > 0:
            left[row] -= 1
            exact += 1
    return Score(exact, len(recovered) - exact, len(truth))


def true_design_rows(store: LocalStore, spec: AnalysisSpec, *, label: bool = False) -> list[Row]:
    """The site's complete cases of a regression, intercept left out (then the label, with
    ``label``): what an attack on ``spec`` tries to recover."""
    assert isinstance(spec.analysis, LogisticAnalysis)
    data = design(spec.analysis, job_table(spec, store.load(spec.dataset)))
    rows = np.hstack([data.x[:, 1:], data.label[:, None]]) if label else data.x[:, 1:]
    return [tuple(map(float, row)) for row in rows]


def true_training_rows(store: LocalStore, spec: JobSpec) -> list[Row]:
    """The site's training rows of ``spec``: raw numeric features, dummies, then the label."""
    train, _ = split_cohort(spec, build_cohort(spec, job_table(spec, store.load(spec.dataset))))
    rows = np.hstack([train.numeric, train.dummies, train.label[:, None]])
    return [tuple(map(float, row)) for row in rows]


def played(
    name: str,
    root: Path,
    datasets: Path,
    policy: EdgePolicy,
    attack: Callable[[MaliciousOrchestrator], Recovery],
    truth: Callable[[LocalStore], list[Row]],
) -> tuple[Recovery, Score]:
    """Play ``attack`` against a real edge with ``policy``; score what it recovered against
    ``truth`` (read from the site's store) and report it."""
    with attacked_edge(root, datasets, policy) as (orchestrator, edge):
        recovery = attack(orchestrator)
        rows = truth(edge.store())
    result = score(recovery.rows, rows)
    report(name, recovery, result)
    return recovery, result


def assert_rows_recovered(recovery: Recovery, result: Score) -> None:
    """The attack ran to its end and recovered at least 90% of the rows, at most 1% wrong (an
    attack reading rows off cells can merge two patients who share one, depending on the
    order the import gave the site's rows: trap weights once gave 234 exact and 1 wrong)."""
    assert recovery.stopped is None, recovery.stopped
    assert result.exact >= 0.9 * result.total and result.wrong <= 0.01 * result.total, result


def report(name: str, recovery: Recovery, result: Score) -> None:
    """Log one attack's figures (``pytest -o log_cli=true --log-cli-level=INFO`` shows them)."""
    log.info(
        "%s: %d of %d rows exact, %d wrong, %d tasks, %.1f s%s%s",
        name, result.exact, result.total, result.wrong, recovery.tasks, recovery.seconds,
        f", {len(recovery.declined)} declined" if recovery.declined else "",
        f", stopped: {recovery.stopped}" if recovery.stopped else "",
    )  # fmt: skip
