"""Benchmark of many sites: one real orchestrator and N simulated long-polling sites.

Issue 10's scale targets on this machine: 500 sites complete a one-round counts analysis in
under 2 s and a 3-round training job of the ~100k-parameter MLP (bench/run.py's) in under
10 s; the orchestrator's request latency and peak memory are reported beside them.

The orchestrator is a real ``oncofed orchestrator serve`` process on SQLite. The operator
creates the N sites through its API (``POST /sites``) and each is enrolled with the real edge
code (``oncofed.edge.enrol``: an identity key, ``POST /enrol``). The N sites then live in this
one process (asyncio, one keep-alive HTTP/1.1 connection per site, as an edge has; a
minimal client, since httpx would cost this process more CPU than the orchestrator uses) and
speak the edge protocol: they register their identity key and data profile as
an edge does when it starts, long-poll ``/tasks/next``, download the global model of a
training or evaluation task, and post each answer with ``wait``, as ``oncofed edge run``
does: the orchestrator holds the acknowledgement until the site's next task, which comes
with it, so a round costs a site one request (and a download when the model does not come
with its task). An answer's latency is therefore a site's wait from its answer to its next
task of the same job (the end of its round and the opening of the next); the last answers of
a job, held until the next job, are not counted in it. The answers are computed
once by the real TaskRunner on one small local dataset and reused, since the point is the
orchestrator's cost; a training update is the global model each site downloaded plus small
seeded noise, with the TaskRunner's header.
Creating, enrolling and introducing the sites is timed apart: it is not part of the targets.

``python bench/many_sites.py [--sites N] [--repeat N] [--output FILE]``; ``make bench`` runs
it after bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import yaml
from rich.console import Console
from rich.table import Table
from run import (
    JOB_TIMEOUT_S,
    MIB,
    POLL_SECONDS,
    PROJECT,
    ROUND_TIMEOUT_S,
    SAMPLE_PERIOD_S,
    Config,
    Sampler,
    _table,
    _unix,
    _verdict,
    db_query,
    hidden_for,
    loop_seconds,
    machine_info,
    nan_to_none,
    proc_cpu_seconds,
    proc_status_bytes,
    project,
    site_names,
    speed_said,
    training_spec,
    write_site_data,
)

from oncofed.client import load_spec
from oncofed.demo.federation import DATASET, LocalFederation
from oncofed.edge import EdgeHome, LocalStore
from oncofed.edge.config import EdgePolicy
from oncofed.edge.enrol import enrol
from oncofed.edge.importing import Source, import_source
from oncofed.edge.ledger import Ledger
from oncofed.edge.runner import Outcome, TaskRunner
from oncofed.learning.data import standardization
from oncofed.learning.registry import initial_weights
from oncofed.orchestrator import setup as state
from oncofed.privacy.secagg import new_identity, public_bytes
from oncofed.wire import tensors
from oncofed.wire.analysis import AnalysisResult, AnalysisSpec
from oncofed.wire.messages import (
    API_PREFIX,
    SHA256_HEADER,
    EvaluateResult,
    IdentityKey,
    StatsResult,
    TaskAssignment,
    TrainResult,
)
from oncofed.wire.projects import NewProject, ProjectAnswer
from oncofed.wire.spec import JobSpec

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-many-sites.json"

SITES = 500
TRAIN_ROUNDS = 3
TARGET_PARAMETERS = 100_000
TARGETS_S = {"counts": 2.0, "training": 10.0, "small": 10.0}  # submit -> completed, 500 sites
SMALL_HIDDEN = [64, 64]  # bench/peers.py's shared task's MLP (here on 10 features)
TARGET_CPU_PER_ANSWER_S = 0.002  # the orchestrator's CPU per site answer, every job (issue 14)
NOISE_SCALE = 1e-3  # of a training update's seeded noise
SETTLE_S = 1.0  # before each job: every site is back in its long poll
WATCH_PERIOD_S = 0.1  # how often the job's status is read (its end time is the stored one)
RETRY_S = 0.5  # after a transport error or a 5xx, as an edge backs off
SEED = 20261203

JobName = Literal["counts", "training", "small"]
JOBS: tuple[JobName, ...] = ("counts", "training", "small")


# -- the jobs and what every site answers -------------------------------------------------


def counts_spec(sites: int) -> dict[str, Any]:
    """Patients by tumour grade: one analysis round."""
    return {
        "kind": "analysis",
        "name": f"many-sites-counts-{sites}",
        "project": PROJECT,
        "dataset": DATASET,
        "analysis": {"type": "counts", "rows": "grade"},
        "min_sites": sites,
        "round_timeout_s": ROUND_TIMEOUT_S,
    }


def training_job(sites: int) -> dict[str, Any]:
    """bench/run.py's job of the ~100k model: a stats round, 3 train rounds, an evaluation."""
    return training_spec(
        Config(sites, TARGET_PARAMETERS, TRAIN_ROUNDS), hidden_for(TARGET_PARAMETERS)
    )


def small_job(sites: int) -> dict[str, Any]:
    """The training job with the shared task's small MLP (bench/peers.py): what the
    orchestrator spends on an answer when the model costs next to nothing."""
    job = training_spec(Config(sites, 0, TRAIN_ROUNDS), SMALL_HIDDEN)
    return {**job, "name": f"many-sites-small-{sites}"}


def job_dicts(sites: int) -> tuple[dict[str, Any], ...]:
    return counts_spec(sites), training_job(sites), small_job(sites)


def specs(sites: int) -> dict[JobName, AnalysisSpec | JobSpec]:
    counts, training, small = job_dicts(sites)
    return {"counts": load_spec(counts), "training": load_spec(training), "small": load_spec(small)}


@dataclass(frozen=True)
class Answers:
    """What every simulated site sends, computed once by the real TaskRunner."""

    counts: bytes  # AnalysisResult JSON
    stats: bytes  # StatsResult JSON
    evaluate: bytes  # EvaluateResult JSON
    train: TrainResult  # an update's header (its task_id set per task)
    profile: bytes  # DataProfile JSON of the dataset


def with_grade(source: Source, seed: int = SEED) -> Source:
    """bench/run.py's site export with a tumour grade column (I, II, III at random) mapped to
    the data model's ``grade``, for the counts analysis."""
    assert source.mapping is not None  # write_site_data writes one
    path, mapping = Path(source.location), Path(source.mapping)
    header, *rows = path.read_text().splitlines()
    grades = np.random.default_rng(seed).choice(["I", "II", "III"], size=len(rows))
    lines = [f"{header},tgrade", *(f"{row},{g}" for row, g in zip(rows, grades, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    document = yaml.safe_load(mapping.read_text())
    document["fields"]["grade"] = {
        "column": "tgrade",
        "values": {"I": "G1", "II": "G2", "III": "G3"},
    }
    mapping.write_text(yaml.safe_dump(document))
    return source


def template_answers(folder: Path, jobs: dict[JobName, AnalysisSpec | JobSpec]) -> Answers:
    """Import one site's export and answer each kind of task with the real TaskRunner: the
    counts analysis, the stats round, a train round from the initial model (whose header
    carries the evaluation the evaluate round reuses)."""
    source = with_grade(write_site_data(folder / "data", ["template"])["template"])
    store = LocalStore(folder / "datasets")
    import_source(store, DATASET, source, threshold=11)
    ledger = Ledger(folder / "ledger")
    runner = TaskRunner(store, EdgePolicy(), "template", ledger, new_identity())
    counts, training = jobs["counts"], jobs["training"]
    assert isinstance(training, JobSpec)

    def answer(task: TaskAssignment, blob: bytes = b"") -> Outcome:
        outcome = runner.run(task, lambda _sha: blob)
        if not isinstance(outcome, AnalysisResult | StatsResult | bytes):
            raise RuntimeError(f"the template site did not answer its {task.kind} task: {outcome}")
        return outcome

    result = answer(TaskAssignment(task_id="c", job_id="c", round=0, kind="analysis", spec=counts))
    stats = answer(TaskAssignment(task_id="s", job_id="t", round=0, kind="stats", spec=training))
    assert isinstance(stats, StatsResult)
    weights = initial_weights(training.model, training.n_inputs, training.seed)
    model = tensors.encode(weights)
    update = answer(
        TaskAssignment(
            task_id="t",
            job_id="t",
            round=1,
            kind="train",
            spec=training,
            model_sha256=tensors.sha256(model),
            standardization=standardization(stats),
            pooled=stats,
        ),
        model,
    )
    assert isinstance(update, bytes)
    header = tensors.read_meta(update, TrainResult)
    evaluate = EvaluateResult(evaluation=header.evaluation, compute_seconds=header.compute_seconds)
    return Answers(
        counts=_json(result),
        stats=_json(stats),
        evaluate=_json(evaluate),
        train=header,
        profile=store.profile(DATASET).model_dump_json().encode(),
    )


def _json(message: Any) -> bytes:
    return str(message.model_dump_json()).encode()


# -- the orchestrator and the sites' set-up -----------------------------------------------


class BareFederation(LocalFederation):
    """A real orchestrator (SQLite) with no edge processes: the sites are simulated."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, {})

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = state.initialise(self.state_dir)
        self.start_orchestrator()

    def __enter__(self) -> BareFederation:
        super().__enter__()
        return self

    @property
    def pid(self) -> int:
        assert self.orchestrator is not None
        return self.orchestrator.pid


@dataclass(frozen=True)
class Member:
    """One simulated site: its name, index (its noise) and credential."""

    name: str
    index: int
    credential: str
    identity_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


@dataclass
class Step:
    """One step of setting the sites up, over all of them."""

    name: str
    requests: int
    seconds: float
    latencies: list[float] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "requests": self.requests,
            "seconds": self.seconds,
            "p50_s": percentile(self.latencies, 50),
            "p99_s": percentile(self.latencies, 99),
        }


def timed(name: str, calls: Sequence[Callable[[], object]]) -> Step:
    """Make the calls one after the other, as an operator would, timing each."""
    began, latencies = time.perf_counter(), []
    for call in calls:
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return Step(name, len(calls), time.perf_counter() - began, latencies)


async def concurrently(name: str, calls: Sequence[Callable[[], Awaitable[None]]]) -> Step:
    """Make the calls all at once, as edges starting together would, timing each."""
    latencies: list[float] = []

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        start = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(one(call) for call in calls))
    return Step(name, len(calls), time.perf_counter() - began, latencies)


def approve(fed: BareFederation, members: Sequence[Member], study: NewProject) -> Step:
    """The operator declares the project; every site sends its approval, as an edge does
    after ``oncofed edge approve`` (``PUT /site/projects/{name}/decision``)."""
    with fed.client() as client:
        declared = client.create_project(study)
    answer = ProjectAnswer(
        approve=True, scope_sha256=declared.scope_sha256, dataset=DATASET, policy_version="0" * 12
    ).model_dump(mode="json")
    path = f"{fed.url}{API_PREFIX}/site/projects/{study.name}/decision"

    def decide(member: Member) -> None:
        httpx.put(path, json=answer, headers=member.headers, timeout=60).raise_for_status()

    calls = [functools.partial(decide, m) for m in members]
    return timed("approve (PUT /site/projects/.../decision)", calls)


def create_and_enrol(fed: BareFederation, names: Sequence[str]) -> tuple[list[Member], list[Step]]:
    """The operator creates each site (``POST /sites``), and each enrols with the real edge
    code (an identity key, ``POST /enrol``), one after the other."""
    tokens: dict[str, str] = {}

    def create(name: str) -> None:
        tokens[name] = client.add_site(name).enrolment_token

    with fed.client() as client:
        created = timed("create (POST /sites)", [functools.partial(create, n) for n in names])
    homes = {name: EdgeHome(fed.edge_dir(name)) for name in names}
    enrolled = timed(
        "enrol (POST /enrol)",
        [functools.partial(enrol, homes[n], fed.url, tokens[n]) for n in names],
    )
    members = [
        Member(name, i, homes[name].credential(), public_bytes(homes[name].identity()).hex())
        for i, name in enumerate(names)
    ]
    return members, [created, enrolled]


# -- the simulated sites ------------------------------------------------------------------


@dataclass
class Traffic:
    """What the simulated sites saw during one job."""

    posted: int = 0  # answers posted
    answers: list[float] = field(default_factory=list)  # seconds from an answer to its next task
    downloads: list[float] = field(default_factory=list)  # seconds per global model download
    polls: int = 0  # long polls made
    empty_polls: int = 0  # of those, ended with no task (204)
    handed: int = 0  # tasks that came with an ack, saving a poll
    rejected: int = 0  # answers the orchestrator refused (422)
    errors: int = 0  # transport errors and unexpected statuses


@dataclass
class Flat:
    """A global model as one float32 vector, with its tensors' names and shapes."""

    vector: np.ndarray
    shapes: dict[str, tuple[int, ...]]

    def split(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            out[name] = vector[offset : offset + size].reshape(shape)
            offset += size
        return out


@dataclass(frozen=True)
class Reply:
    status_code: int
    content: bytes


class ConnectionLost(Exception):
    """The connection broke, or the answer was not HTTP this client reads."""


class Connection:
    """One site's keep-alive HTTP/1.1 connection to the orchestrator (reopened when it
    breaks). httpx costs this process ~2.7 ms of CPU a request (~20 s in the 500-site training
    job, more than its 10 s target, on the 2 cores the orchestrator needs); this costs a tenth.
    It reads what uvicorn sends here: a status line, headers and a Content-Length body."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        address = httpx.URL(url)
        self._host, self._port = address.host, address.port or 80
        fields = {"Host": f"{self._host}:{self._port}", **headers}
        self._fields = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = f"{method} {API_PREFIX}{path} HTTP/1.1\r\n{self._fields}{extra}"
        try:
            if self._streams is None:
                self._streams = await asyncio.open_connection(self._host, self._port)
            reader, writer = self._streams
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1"))
            writer.write(body)
            await writer.drain()
            status, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
            if "content-length" not in fields and "transfer-encoding" in fields:
                raise ConnectionLost(f"{method} {path}: a body not in one piece")
            content = await reader.readexactly(int(fields.get("content-length", "0")))
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self.close()
            raise ConnectionLost(f"{method} {path}: {exc!r}") from exc
        if fields.get("connection") == "close":
            await self.close()
        return Reply(int(status.split()[1]), content)

    async def close(self) -> None:
        if self._streams is not None:
            writer = self._streams[1]
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Simulation:
    """N simulated sites, each with its own keep-alive connection (as an edge has), sharing
    the answers and a cache of decoded models."""

    def __init__(self, url: str, answers: Answers, members: Sequence[Member]) -> None:
        self.answers, self.members = answers, list(members)
        self._http = [Connection(url, m.headers) for m in self.members]
        self.traffic = Traffic()
        self.started = 0  # site loops that have sent their first poll
        self._models: dict[str, Flat] = {}
        self._noise: np.ndarray | None = None  # seeded; site i adds noise[i : i + parameters]

    async def __aenter__(self) -> Simulation:
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.gather(*(http.close() for http in self._http))

    async def introduce(self) -> list[Step]:
        """What an edge does when it starts: register its identity key (a no-op when its
        enrolment did), then send its dataset's data profile; all sites at once."""
        steps = []
        for name, request in (
            ("identity (PUT /identity)", self._put_identity),
            ("profile (PUT /profiles)", self._put_profile),
        ):
            calls = [functools.partial(request, m) for m in self.members]
            steps.append(await concurrently(name, calls))
        return steps

    async def _put_identity(self, member: Member) -> None:
        body = IdentityKey(key=member.identity_key).model_dump_json()
        await self._put("/identity", member, body.encode())

    async def _put_profile(self, member: Member) -> None:
        await self._put(f"/profiles/{DATASET}", member, self.answers.profile)

    async def _put(self, path: str, member: Member, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        response = await self._request("PUT", path, member, body, headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{member.name}: PUT {path}: HTTP {response.status_code}")

    async def run(self, member: Member) -> None:
        """One site's loop: long-poll, answer, take the next task from the ack or poll."""
        handed: dict[str, Any] | None = None
        first = True
        while True:
            if handed is None:
                if first:
                    self.started, first = self.started + 1, False
                task = await self._poll(member)
            else:
                task, handed = handed, None
                self.traffic.handed += 1
            if task is not None:
                handed = await self._answer(member, task)

    async def _poll(self, member: Member) -> dict[str, Any] | None:
        self.traffic.polls += 1
        response = await self._request("GET", f"/tasks/next?wait={POLL_SECONDS}", member)
        if response.status_code == 200:
            return dict(json.loads(response.content))
        if response.status_code == 204:
            self.traffic.empty_polls += 1
        else:  # refused: an edge would log it and wait
            self.traffic.errors += 1
            await asyncio.sleep(RETRY_S)
        return None

    async def _answer(self, member: Member, task: dict[str, Any]) -> dict[str, Any] | None:
        """Post the site's answer to ``task``; the next task its ack hands over, if any."""
        kind, task_id = task["kind"], task["task_id"]
        model = None
        if kind in ("train", "evaluate"):  # an edge checks the model it is sent
            model = await self._model(member, task)
            if model is None:
                return None
        if model is not None and kind == "train":
            path, kind_header = f"/tasks/{task_id}/update", "application/octet-stream"
            body = self._update(member, task_id, model)
        else:
            path, kind_header = f"/tasks/{task_id}/result", "application/json"
            body = {
                "analysis": self.answers.counts,
                "stats": self.answers.stats,
                "evaluate": self.answers.evaluate,
            }[kind]
        headers = {"Content-Type": kind_header, SHA256_HEADER: tensors.sha256(body)}
        traffic, began = self.traffic, time.perf_counter()  # the job's, whenever the ack comes
        traffic.posted += 1
        response = await self._request("POST", f"{path}?wait={POLL_SECONDS}", member, body, headers)
        if response.status_code not in (200, 422):
            traffic.errors += 1
            return None
        ack = json.loads(response.content)
        traffic.rejected += ack["status"] == "rejected"
        handed = ack.get("next_task")
        if handed is not None and handed["job_id"] == task["job_id"]:
            traffic.answers.append(time.perf_counter() - began)
        return handed

    async def _model(self, member: Member, task: dict[str, Any]) -> Flat | None:
        """The global model as an edge takes it: handed with the task when small, else
        downloaded (decoded once per model: the orchestrator's cost is the sending)."""
        sha = task["model_sha256"]
        if task.get("model") is None:
            began = time.perf_counter()
            response = await self._request("GET", f"/blobs/{sha}", member)
            if response.status_code != 200:
                self.traffic.errors += 1
                return None
            self.traffic.downloads.append(time.perf_counter() - began)
            data = response.content
        else:
            data = base64.b64decode(task["model"]) if sha not in self._models else b""
        if sha not in self._models:
            weights = tensors.decode(data)
            vector = np.concatenate([weights[k].ravel() for k in weights])
            self._models[sha] = Flat(vector, {k: tuple(v.shape) for k, v in weights.items()})
        return self._models[sha]

    def _update(self, member: Member, task_id: str, model: Flat) -> bytes:
        """The global model plus this site's seeded noise, with the TaskRunner's header."""
        size = model.vector.size
        if self._noise is None or self._noise.size < size + len(self.members):
            rng = np.random.default_rng(SEED)
            noise = rng.normal(scale=NOISE_SCALE, size=size + len(self.members))
            self._noise = noise.astype(np.float32)
        vector = model.vector + self._noise[member.index : member.index + size]
        header = self.answers.train.model_copy(update={"task_id": task_id})
        return tensors.encode(model.split(vector), header)

    async def _request(
        self,
        method: str,
        path: str,
        member: Member,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request of the site's, retried after transport errors and 5xx as an edge
        would, for at most a job's timeout (then the run stops with what went wrong)."""
        give_up = time.monotonic() + JOB_TIMEOUT_S
        while True:
            try:
                response = await self._http[member.index].request(method, path, body, headers)
            except ConnectionLost as exc:
                failure = str(exc)
            else:
                if response.status_code < 500:
                    return response
                failure = f"{method} {path}: HTTP {response.status_code}"
            self.traffic.errors += 1
            if time.monotonic() > give_up:
                raise RuntimeError(f"{member.name}: failing for {JOB_TIMEOUT_S:.0f}s: {failure}")
            await asyncio.sleep(RETRY_S)


# -- one job ------------------------------------------------------------------------------


@dataclass
class JobFigures:
    """One job run by the simulated sites. Times in seconds."""

    job: JobName
    sites: int
    status: str
    error: str | None
    wall_s: float  # submit -> the job's finished_at
    submit_s: float  # submit -> the orchestrator's answer to it
    rounds: list[dict[str, Any]]  # number, kind, wall_s (opened -> closed)
    accepted: int  # tasks accepted in the job's last round
    posted: int  # answers posted
    answers: int  # of those, acknowledged with the site's next task of the job
    answer_p50_s: float
    answer_p99_s: float
    downloads: int
    download_p50_s: float
    download_p99_s: float
    polls: int
    empty_polls: int
    handed: int
    rejected: int
    errors: int
    orchestrator_cpu_s: float
    orchestrator_peak_bytes: int  # highest RSS sampled during the job
    simulator_cpu_s: float

    @property
    def target_s(self) -> float:
        return TARGETS_S[self.job]

    @property
    def cpu_per_answer_s(self) -> float:
        """The orchestrator's CPU per site answer: its poll or hand-out, the global model's
        download, the answer's authentication, acceptance and share of the round's close."""
        return self.orchestrator_cpu_s / self.posted if self.posted else math.nan

    @property
    def passed(self) -> bool:
        return (
            self.status == "completed"
            and self.wall_s < self.target_s
            and self.cpu_per_answer_s < TARGET_CPU_PER_ANSWER_S
        )


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


async def run_job(
    fed: BareFederation,
    sim: Simulation,
    sampler: Sampler,
    job: JobName,
    spec: AnalysisSpec | JobSpec,
) -> JobFigures:
    """Submit the job once every site is back in its long poll; follow it in the database
    (costing the orchestrator nothing) until it ends."""
    while sim.started < len(sim.members):
        await asyncio.sleep(WATCH_PERIOD_S)
    await asyncio.sleep(SETTLE_S)
    sim.traffic = Traffic()
    cpu, own_cpu, began = proc_cpu_seconds(fed.pid) or 0.0, time.process_time(), time.time()
    async with httpx.AsyncClient(
        base_url=fed.url + API_PREFIX, timeout=JOB_TIMEOUT_S
    ) as researcher:
        response = await researcher.post(
            "/jobs",
            json=spec.model_dump(mode="json"),
            headers={"Authorization": f"Bearer {fed.token}"},
        )
    response.raise_for_status()
    submitted, job_id = time.time(), response.json()["id"]
    give_up = time.monotonic() + JOB_TIMEOUT_S
    while True:
        rows = await asyncio.to_thread(
            db_query, fed, "SELECT status, error, finished_at FROM job WHERE id = ?", job_id
        )
        status, error, finished_at = rows[0]
        if status != "running":
            break
        if time.monotonic() > give_up:
            status, error, finished_at = "timeout", f"running after {JOB_TIMEOUT_S:.0f}s", None
            break
        await asyncio.sleep(WATCH_PERIOD_S)
    ended = _unix(finished_at) or time.time()
    orchestrator_cpu = (proc_cpu_seconds(fed.pid) or 0.0) - cpu
    simulator_cpu = time.process_time() - own_cpu
    traffic, samples = sim.traffic, sampler.samples
    return JobFigures(
        job=job,
        sites=len(sim.members),
        status=status,
        error=error,
        wall_s=ended - began,
        submit_s=submitted - began,
        rounds=await asyncio.to_thread(round_walls, fed, job_id),
        accepted=(await asyncio.to_thread(last_round_accepted, fed, job_id)),
        posted=traffic.posted,
        answers=len(traffic.answers),
        answer_p50_s=percentile(traffic.answers, 50),
        answer_p99_s=percentile(traffic.answers, 99),
        downloads=len(traffic.downloads),
        download_p50_s=percentile(traffic.downloads, 50),
        download_p99_s=percentile(traffic.downloads, 99),
        polls=traffic.polls,
        empty_polls=traffic.empty_polls,
        handed=traffic.handed,
        rejected=traffic.rejected,
        errors=traffic.errors,
        orchestrator_cpu_s=orchestrator_cpu,
        orchestrator_peak_bytes=max(
            (s.orchestrator_rss for s in samples if began <= s.at <= ended + SAMPLE_PERIOD_S),
            default=0,
        ),
        simulator_cpu_s=simulator_cpu,
    )


def round_walls(fed: BareFederation, job_id: str) -> list[dict[str, Any]]:
    rows = db_query(
        fed,
        "SELECT number, kind, opened_at, closed_at FROM round WHERE job_id = ? ORDER BY number",
        job_id,
    )
    return [
        {
            "number": number,
            "kind": kind,
            "wall_s": (_unix(closed) or math.nan) - (_unix(opened) or math.nan),
        }
        for number, kind, opened, closed in rows
    ]


def last_round_accepted(fed: BareFederation, job_id: str) -> int:
    rows = db_query(
        fed,
        "SELECT count(*) FROM task t JOIN round r ON t.round_id = r.id WHERE r.job_id = ? "
        "AND t.status = 'accepted' AND r.number = "
        "(SELECT max(number) FROM round WHERE job_id = ?)",
        job_id,
        job_id,
    )
    return int(rows[0][0])


# -- a whole run --------------------------------------------------------------------------


@dataclass
class Run:
    """Setting up N sites, then each job ``repeat`` times on the same federation."""

    sites: int
    setup: list[Step]
    jobs: list[JobFigures]
    orchestrator_vmhwm_bytes: int  # the orchestrator's peak over its whole life


async def simulate(
    root: Path,
    sites: int,
    jobs: Sequence[JobName] = JOBS,
    repeat: int = 1,
    console: Console | None = None,
) -> Run:
    """Start an orchestrator, set up ``sites`` simulated sites, run the jobs, stop."""
    console = console or Console(quiet=True)
    job_specs = specs(sites)
    answers = template_answers(root / "template", job_specs)
    with BareFederation(root / "fed") as fed:
        console.log(f"orchestrator up (pid {fed.pid}, {fed.url}); setting up {sites} sites")
        members, setup = create_and_enrol(fed, site_names(sites))
        setup.append(approve(fed, members, project(*job_dicts(sites))))
        async with Simulation(fed.url, answers, members) as sim:
            setup += await sim.introduce()
            for step in setup:
                console.log(f"  {step.name}: {step.seconds:.1f}s")
            loops = [asyncio.create_task(sim.run(m)) for m in members]
            sampler = Sampler(fed.pid, [os.getpid()], SAMPLE_PERIOD_S)
            sampler.start()
            figures = []
            try:
                for n in range(repeat):
                    for job in jobs:
                        done = await run_job(fed, sim, sampler, job, job_specs[job])
                        console.log(
                            f"  {job} #{n + 1}: {done.status} in {done.wall_s:.2f}s"
                            + (f": {done.error}" if done.error else "")
                        )
                        figures.append(done)
            finally:
                sampler.stop()
                for loop in loops:
                    loop.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
        vmhwm = proc_status_bytes(fed.pid, "VmHWM") or 0
    return Run(sites, setup, figures, vmhwm)


# -- report -------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds:.2f}"


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def by_job(run: Run) -> dict[JobName, list[JobFigures]]:
    grouped: dict[JobName, list[JobFigures]] = {}
    for figures in run.jobs:
        grouped.setdefault(figures.job, []).append(figures)
    return grouped


def median(runs: Sequence[JobFigures], name: str) -> float:
    return statistics.median(getattr(r, name) for r in runs)


def targets_table(run: Run) -> Table:
    """Each figure beside its target (medians of the runs; latencies: the highest run's)."""
    table = _table(f"{run.sites} simulated sites: targets", "figure", "target", "measured", "")
    labels = {
        "counts": "counts analysis",
        "training": f"training {TRAIN_ROUNDS}x100k",
        "small": f"training {TRAIN_ROUNDS}x5k",
    }
    peak = max((f.orchestrator_peak_bytes for f in run.jobs), default=0)
    for job, runs in by_job(run).items():
        completed = all(r.status == "completed" for r in runs)
        wall = median(runs, "wall_s")
        target = TARGETS_S[job]
        measured = f"{wall:.2f} s" if completed else f"{runs[0].status} ({wall:.0f} s)"
        ok = completed and wall < target if run.sites >= SITES else None
        table.add_row(f"{labels[job]}: submit -> done", f"< {target:.0f} s", measured, _verdict(ok))
        p50, p99 = median(runs, "answer_p50_s"), max(r.answer_p99_s for r in runs)
        latency = f"{_ms(p50)}/{_ms(p99)} ms"
        table.add_row(f"{labels[job]}: answer->next p50/p99", "reported", latency, "")
        cpu = median(runs, "cpu_per_answer_s")
        table.add_row(
            f"{labels[job]}: orch. CPU/answer",
            f"< {TARGET_CPU_PER_ANSWER_S * 1000:.0f} ms",
            f"{cpu * 1000:.2f} ms",
            _verdict(completed and cpu < TARGET_CPU_PER_ANSWER_S),
        )
    table.add_row("orchestrator peak RSS", "reported", f"{peak / MIB:.0f} MiB", "")
    return table


def jobs_table(run: Run) -> Table:
    table = _table(
        "per job (medians of the runs; seconds, model p99 in ms)",
        "job", "s", "submit", "posted", "model p99", "polls", "empty", "handed", "orch. CPU",
        "sim. CPU",
    )  # fmt: skip
    for job, runs in by_job(run).items():
        table.add_row(
            job,
            _s(median(runs, "wall_s")),
            _s(median(runs, "submit_s")),
            f"{median(runs, 'posted'):.0f}",
            _ms(max(r.download_p99_s for r in runs)),
            f"{median(runs, 'polls'):.0f}",
            f"{median(runs, 'empty_polls'):.0f}",
            f"{median(runs, 'handed'):.0f}",
            f"{median(runs, 'orchestrator_cpu_s'):.1f}",
            f"{median(runs, 'simulator_cpu_s'):.1f}",
        )
    return table


def setup_table(run: Run) -> Table:
    table = _table("setting the sites up (not part of the targets)", "step", "requests", "s",
                   "p50 ms", "p99 ms")  # fmt: skip
    for step in run.setup:
        table.add_row(
            step.name,
            str(step.requests),
            f"{step.seconds:.1f}",
            _ms(percentile(step.latencies, 50)),
            _ms(percentile(step.latencies, 99)),
        )
    return table


NOTES = (
    "s: from just before the job's POST to the finished_at the orchestrator stored; submit: "
    "until the POST was answered. answer->next p50/p99: a site's POST of its result or update "
    "(with wait, as an edge posts) until its ack came back with the site's next task of the "
    "job, over every such answer (a job's last answers, held until the next job, are not "
    "counted). posted: the answers posted; orch. CPU/answer is orch. CPU over them. model "
    "p99: a site's download of the global model. handed: tasks that came with an ack, saving "
    "a poll. orch. CPU: the orchestrator's user+system seconds during the job; sim. CPU: this "
    "process's, which shares the machine's cores with the orchestrator. Peak RSS: the highest "
    "orchestrator RSS sampled every 50 ms during the jobs."
)


def write_results(path: Path, run: Run, total_s: float, loops: Sequence[float]) -> None:
    """The results file (``loops``: ``loop_seconds`` before the simulation and after it)."""
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_seconds": round(total_s, 1),
        "machine": {**machine_info(), "loop_10m_cpu_s": list(loops)},
        "sites": run.sites,
        "targets_s": TARGETS_S,
        "setup": [step.to_json() for step in run.setup],
        "target_cpu_per_answer_s": TARGET_CPU_PER_ANSWER_S,
        "jobs": [
            asdict(f)
            | {"target_s": f.target_s, "cpu_per_answer_s": f.cpu_per_answer_s, "passed": f.passed}
            for f in run.jobs
        ],
        "orchestrator_vmhwm_bytes": run.orchestrator_vmhwm_bytes,
        "definitions": {"notes": NOTES},
    }
    path.write_text(json.dumps(nan_to_none(document), indent=2, allow_nan=False) + "\n")


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark a real orchestrator with many simulated long-polling sites."
    )
    parser.add_argument("--sites", type=int, default=SITES, help="Simulated sites.")
    parser.add_argument(
        "--job", action="append", choices=JOBS, help="Run only this job (repeatable)."
    )
    parser.add_argument("--repeat", type=int, default=1, help="Run each job N times.")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file.")
    parser.add_argument("--keep", action="store_true", help="Keep the working directory.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    loops = [loop_seconds()]  # this machine's speed, before and after
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="oncofed-many-sites-"))
    try:
        run = asyncio.run(simulate(workdir, args.sites, args.job or JOBS, args.repeat, console))
    finally:
        if args.keep:
            console.log(f"working directory kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - began
    loops.append(loop_seconds())
    write_results(args.output, run, total, loops)
    console.print(targets_table(run))
    console.print(jobs_table(run))
    console.print(setup_table(run))
    console.print(NOTES, style="dim")
    console.print(speed_said(loops, "before the simulation and after it"))
    console.print(f"total {total:.0f}s; results in {args.output}")
    return 0 if all(f.status == "completed" for f in run.jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
