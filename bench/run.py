"""Benchmark of a whole federation on this machine.

For 4 and 32 sites on 127.0.0.1, training an MLP of ~100k and of ~10M parameters, and fitting a
stratified Cox model by federated Newton, in the clear and (100k and Cox) under secure
aggregation, it measures: seconds per round, orchestration overhead per round (round wall time
minus the edges' work on the critical path; also minus the slowest site's compute alone),
bytes on the wire per round (uploads, global-model downloads, Newton coefficients and secure
messages), the orchestrator's CPU per round and peak memory (VmHWM), where a round's time goes
(phase by phase in a secure round), and secure rounds against plain ones. Every configuration
gets a fresh federation.

``make bench`` runs it; figures are printed and written to ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from oncofed.client import load_spec
from oncofed.demo.federation import DATASET, LocalFederation
from oncofed.edge import EdgeHome, LocalStore
from oncofed.edge.enrol import enrol
from oncofed.edge.importing import Source, import_source
from oncofed.learning.registry import parameter_count
from oncofed.orchestrator import analysis
from oncofed.orchestrator import setup as state
from oncofed.privacy.secagg import inbox_for
from oncofed.wire.messages import JobPublic, RoundPublic
from oncofed.wire.projects import NewProject, covering
from oncofed.wire.secagg import (
    KEY_BYTES,
    SEALED_BYTES,
    SHARE_BYTES,
    SIGNATURE_BYTES,
    Roster,
    RoundContext,
    SecureStep,
    ShareBundle,
    Survivors,
)
from oncofed.wire.spec import ModelSpec

HERE = Path(__file__).resolve().parent
HOST_SCRIPT = HERE / "edge_host.py"
RESULTS = HERE / "results.json"

N_FEATURES = 10
PROJECT = "bench"
"""The project every benchmark job belongs to (see ``project``)."""
ROWS_PER_SITE = 200
SEED = 20240611
MIB = 1 << 20
FLOAT32 = 4

# Targets printed beside the figures.
OVERHEAD_TARGET_S = 0.050  # 4 sites, ~100k parameters
MEMORY_TARGET_BASE = 200 * MIB  # 32 sites, ~10M parameters: 2 x model bytes + 200 MiB

# Edge memory model, measured with this bench on this machine (2 CPUs, 24 GiB): an edge process
# (`oncofed edge run`, which imports torch and matplotlib) or a bench/edge_host.py process of 8
# agent threads peaks at ~540 MiB with the 100k model; a training task of the 10M model adds
# ~10 model sizes (download, decoded copy, module weights, gradients, Adam moments, weights
# copy, update bytes). 12 copies leaves a margin.
EDGE_PROCESS_BASE_BYTES = 550 * MIB
EDGE_HOST_BASE_BYTES = 550 * MIB
EDGE_TASK_MODEL_COPIES = 12
EDGE_MEMORY_SHARE = 0.5  # of the machine's RAM the edges may use
EDGE_HOSTS = 4  # processes in "hosted" mode
POLL_SECONDS = 10.0
JOB_TIMEOUT_S = 480.0
ROUND_TIMEOUT_S = 900.0
SAMPLE_PERIOD_S = 0.05

EdgeMode = Literal["auto", "process", "hosted"]
T = TypeVar("T")
Workload = Literal["mlp", "cox"]

# The Cox workload: a stratified Cox model of synthetic survival data on a few covariates.
COX_COVARIATES = 4
COX_PATIENTS_PER_SITE = 150
COX_MAX_ITERATIONS = 20


# -- configurations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One benchmark configuration: an MLP training job of ``rounds`` train rounds, or a Cox
    analysis (federated Newton, one round per iteration; ``target_parameters`` unused)."""

    sites: int
    target_parameters: int
    rounds: int
    workload: Workload = "mlp"
    secure: bool = False

    @property
    def plain_label(self) -> str:
        """The label of this configuration without secure aggregation."""
        if self.workload == "cox":
            return f"{self.sites}xcox"
        size = "100k" if self.target_parameters < 1_000_000 else "10M"
        return f"{self.sites}x{size}"

    @property
    def label(self) -> str:
        return self.plain_label + ("-secure" if self.secure else "")

    @property
    def round_kind(self) -> str:
        """The kind of the rounds measured."""
        return "analysis" if self.workload == "cox" else "train"

    @property
    def timed_edges(self) -> bool:
        """Whether its edges must be hosted (timed per task and phase) under ``--edge-mode auto``:
        secure rounds' compute_seconds are whole seconds, and plain Cox runs as its secure twin."""
        return self.secure or self.workload == "cox"


CONFIGS = (
    Config(4, 100_000, 20),
    Config(4, 10_000_000, 3),
    Config(32, 100_000, 6),
    Config(32, 10_000_000, 3),
    Config(4, 100_000, 6, secure=True),
    Config(32, 100_000, 4, secure=True),
    Config(4, 0, COX_MAX_ITERATIONS, "cox"),
    Config(4, 0, COX_MAX_ITERATIONS, "cox", secure=True),
    Config(32, 0, COX_MAX_ITERATIONS, "cox"),
    Config(32, 0, COX_MAX_ITERATIONS, "cox", secure=True),
)


def mlp_spec(hidden: list[int]) -> ModelSpec:
    return ModelSpec(type="mlp", hidden=hidden)


def hidden_for(target: int) -> list[int]:
    """Two equal hidden widths whose MLP parameter count is closest to ``target``."""
    # n inputs, hidden [h, h], one output: (n + 1)h + (h + 1)h + h + 1 = h^2 + (n + 3)h + 1
    guess = round((-(N_FEATURES + 3) + math.sqrt((N_FEATURES + 3) ** 2 + 4 * target)) / 2)
    best = min(
        range(max(1, guess - 3), guess + 4),
        key=lambda h: abs(parameter_count(mlp_spec([h, h]), N_FEATURES) - target),
    )
    return [best, best]


def site_names(n: int) -> list[str]:
    return [f"site-{i:02d}" for i in range(n)]


def write_site_data(folder: Path, sites: Sequence[str], seed: int = SEED) -> dict[str, Source]:
    """One CSV per site: 10 numeric features x0..x9 and a binary label y (fixed seed), with
    the mapping file that imports them as extension features of the data model."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(size=N_FEATURES)
    folder.mkdir(parents=True, exist_ok=True)
    columns = [*(f"x{i}" for i in range(N_FEATURES)), "y"]
    mapping = folder / "mapping.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "fields": {"time_origin": {"constant": "diagnosis"}},
                "extensions": {name: {"column": name} for name in columns},
            }
        )
    )
    sources: dict[str, Source] = {}
    for site in sites:
        shift = rng.normal(scale=0.3, size=N_FEATURES)  # sites differ a little
        x = rng.normal(loc=shift, size=(ROWS_PER_SITE, N_FEATURES))
        p = 1.0 / (1.0 + np.exp(-(x @ beta) / math.sqrt(N_FEATURES)))
        y = (rng.random(ROWS_PER_SITE) < p).astype(np.int64)
        path = folder / f"{site}.csv"
        table = np.column_stack([x, y])
        fmt = ["%.6f"] * N_FEATURES + ["%d"]
        np.savetxt(path, table, delimiter=",", header=",".join(columns), comments="", fmt=fmt)
        sources[site] = Source("csv", str(path), mapping)
    return sources


def write_survival_data(folder: Path, sites: Sequence[str], seed: int = SEED) -> dict[str, Source]:
    """One CSV per site: ``COX_COVARIATES`` continuous covariates z0.. (extension features) and a
    right-censored recurrence-free survival time from a proportional hazards model (fixed
    seed), with the mapping file that imports them."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(scale=0.5, size=COX_COVARIATES)
    folder.mkdir(parents=True, exist_ok=True)
    covariates = [f"z{i}" for i in range(COX_COVARIATES)]
    mapping = folder / "mapping.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "fields": {
                    "time_origin": {"constant": "diagnosis"},
                    "vital_status": {"constant": "alive"},
                    "last_followup_day": "days",
                    "rfs_days": "days",
                    "rfs_event": "event",
                },
                "extensions": {name: {"column": name} for name in covariates},
            }
        )
    )
    sources: dict[str, Source] = {}
    n = COX_PATIENTS_PER_SITE
    for site in sites:
        z = rng.normal(loc=rng.normal(scale=0.3, size=COX_COVARIATES), size=(n, COX_COVARIATES))
        event_days = rng.exponential(1500.0 * np.exp(-(z @ beta)))
        censor_days = rng.uniform(200.0, 4000.0, size=n)
        days = np.maximum(1, np.round(np.minimum(event_days, censor_days))).astype(np.int64)
        event = (event_days <= censor_days).astype(np.int64)
        path = folder / f"{site}.csv"
        table = np.column_stack([z, days, event])
        fmt = ["%.6f"] * COX_COVARIATES + ["%d", "%d"]
        header = ",".join([*covariates, "days", "event"])
        np.savetxt(path, table, delimiter=",", header=header, comments="", fmt=fmt)
        sources[site] = Source("csv", str(path), mapping)
    return sources


def project(*specs: dict[str, Any]) -> NewProject:
    """The benchmark's project, declared for exactly its jobs; every site approves it."""
    return NewProject(
        name=PROJECT,
        title="Benchmark",
        purpose="Measure the federation's speed.",
        principal_investigator="The operator",
        scope=covering(load_spec(spec) for spec in specs),
    )


def job_spec(config: Config, hidden: list[int]) -> dict[str, Any]:
    """The configuration's job: see ``training_spec`` and ``cox_spec``."""
    spec = cox_spec(config) if config.workload == "cox" else training_spec(config, hidden)
    return spec | {"privacy": {"secure_aggregation": config.secure}}


def cox_spec(config: Config) -> dict[str, Any]:
    """A Cox model stratified by site (Efron ties: exactly the pooled stratified fit)."""
    return {
        "kind": "analysis",
        "name": f"bench-{config.label}",
        "project": PROJECT,
        "dataset": DATASET,
        "analysis": {
            "type": "cox",
            "outcome": {"time": "rfs_days", "event": "rfs_event"},
            "covariates": [f"ext.z{i}" for i in range(COX_COVARIATES)],
            "stratified": True,
            "max_iterations": config.rounds,
        },
        "min_sites": config.sites,
        "round_timeout_s": ROUND_TIMEOUT_S,
    }


def training_spec(config: Config, hidden: list[int]) -> dict[str, Any]:
    """One local step per round (batch = all training rows) keeps edge compute small."""
    return {
        "name": f"bench-{config.label}",
        "project": PROJECT,
        "dataset": DATASET,
        "features": [f"ext.x{i}" for i in range(N_FEATURES)],
        "outcome": {"type": "binary", "label": "ext.y"},
        "model": {"type": "mlp", "hidden": hidden},
        "strategy": {"name": "fedavg"},
        "rounds": config.rounds,
        "local": {"epochs": 1, "batch_size": ROWS_PER_SITE, "lr": 0.001, "optimizer": "adam"},
        "seed": 0,
        "min_sites": config.sites,
        "round_timeout_s": ROUND_TIMEOUT_S,
    }


# -- edge processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class EdgePlan:
    """How the sites' agents are run: one process each, or several per host process."""

    mode: Literal["process", "hosted"]
    processes: int
    max_concurrent: int  # tasks per host process at once; 0 = no limit
    estimated_peak_bytes: int  # all edge processes together, every site training at once

    def describe(self) -> str:
        if self.mode == "process":
            return f"process: {self.processes} edge processes (oncofed edge run), 1 site each"
        limit = f", <= {self.max_concurrent} tasks at once each" if self.max_concurrent else ""
        return f"hosted: {self.processes} processes (bench/edge_host.py) of agent threads{limit}"


def machine_ram() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def plan_edges(sites: int, model_bytes: int, requested: EdgeMode, ram: int) -> EdgePlan:
    """One process per site when every site training at once fits; else threads in hosts."""
    task_bytes = EDGE_TASK_MODEL_COPIES * model_bytes
    budget = int(ram * EDGE_MEMORY_SHARE)
    per_process = EDGE_PROCESS_BASE_BYTES + task_bytes
    if requested == "process" or (requested == "auto" and sites * per_process <= budget):
        return EdgePlan("process", sites, 0, sites * per_process)
    hosts = min(EDGE_HOSTS, sites)
    per_host = math.ceil(sites / hosts)
    concurrent = max(1, (budget - hosts * EDGE_HOST_BASE_BYTES) // max(1, task_bytes))
    limit = max(1, concurrent // hosts)
    limit = 0 if limit >= per_host else limit
    running = hosts * (limit or per_host)
    return EdgePlan("hosted", hosts, limit, hosts * EDGE_HOST_BASE_BYTES + running * task_bytes)


class BenchFederation(LocalFederation):
    """A LocalFederation whose edges are started per the plan and watched until ready."""

    def __init__(
        self, root: Path, site_data: Mapping[str, Source], plan: EdgePlan, study: NewProject
    ) -> None:
        super().__init__(
            root, site_data, dataset=DATASET, edge_args=["--log-level", "INFO"], project=study
        )
        self.plan = plan
        self.timing_file = root / "edge-timing.jsonl"
        self._ready_markers: dict[str, tuple[Path, str]] = {}

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = state.initialise(self.state_dir)
        self.start_orchestrator()
        for site, data in self.site_data.items():
            self.enrol_site(site, data)
        self.approve(self.project)
        sites = list(self.site_data)
        if self.plan.mode == "process":
            for site in sites:
                self.start_edge(site)
                self._ready_markers[site] = (self.logs / f"edge-{site}.log", "polling")
        else:
            for index in range(self.plan.processes):
                self.start_host(index, sites[index :: self.plan.processes])

    def enrol_site(self, site: str, data: Source) -> None:
        """Enrol, then import in this process (32 import processes at once would only add
        start-up time to the figures)."""
        created = state.add_site(self.state_dir, site)
        home = EdgeHome(self.edge_dir(site))
        enrol(home, self.url, created.enrolment_token)
        import_source(LocalStore(home.datasets), self.dataset, data, threshold=11)

    def start_host(self, index: int, sites: Sequence[str]) -> subprocess.Popen[bytes]:
        name = f"host-{index}"
        log_path = self.logs / f"{name}.log"
        command = [
            sys.executable,
            str(HOST_SCRIPT),
            "--timing",
            str(self.timing_file),
            "--poll-seconds",
            str(POLL_SECONDS),
            "--max-concurrent",
            str(self.plan.max_concurrent),
            *(str(self.edge_dir(site)) for site in sites),
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.edges[name] = process
        self._ready_markers[name] = (log_path, "hosting")
        return process

    def wait_edges_ready(self, timeout: float = 300.0) -> None:
        """Until every edge process has imported torch and started polling."""
        give_up = time.monotonic() + timeout
        waiting = dict(self._ready_markers)
        while waiting:
            for name, (log_path, marker) in list(waiting.items()):
                if self.edges[name].poll() is not None:
                    raise RuntimeError(f"edge process {name} exited; see {log_path}")
                if log_path.exists() and marker in log_path.read_text(errors="replace"):
                    del waiting[name]
            if time.monotonic() > give_up:
                raise RuntimeError(f"edges not ready after {timeout}s: {sorted(waiting)}")
            time.sleep(0.2)


# -- /proc ------------------------------------------------------------------------------


def proc_status_bytes(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM) in bytes; None once gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class Sample:
    at: float  # unix time
    orchestrator_rss: int
    orchestrator_cpu: float
    edges_rss: int


class Sampler(threading.Thread):
    """Samples the RSS and CPU time of the orchestrator and the edges' total RSS."""

    def __init__(self, orchestrator: int, edges: Sequence[int], period: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.orchestrator, self.edges, self.period = orchestrator, list(edges), period
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.period)

    def sample(self) -> None:
        rss = proc_status_bytes(self.orchestrator, "VmRSS")
        cpu = proc_cpu_seconds(self.orchestrator)
        if rss is None or cpu is None:
            return
        edges = sum(proc_status_bytes(pid, "VmRSS") or 0 for pid in self.edges)
        self.samples.append(Sample(time.time(), rss, cpu, edges))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()

    def cpu_between(self, start: float, end: float) -> float | None:
        """Orchestrator CPU seconds used between two unix times (nearest samples)."""
        if not self.samples:
            return None
        times = [s.at for s in self.samples]

        def cpu_at(moment: float) -> float:
            index = min(range(len(times)), key=lambda i: abs(times[i] - moment))
            return self.samples[index].orchestrator_cpu

        return cpu_at(end) - cpu_at(start)


# -- what the federation recorded -------------------------------------------------------

PHASES = ("keys", "shares", "masked", "unmask")
"""A secure round's phases, in order; a plain round has one, ``""``."""


@dataclass(frozen=True)
class Leg:
    """One site's part in one phase of a secure round, as its hosted edge timed it (unix
    times), with when it started posting (its egress log)."""

    received: float  # the phase's step reached the agent (a long poll, or with an ack)
    started: float  # after any wait for a host slot
    done: float  # its post was acknowledged
    upload_started: float | None
    compute_s: float  # the task runner: model download and training, or the analysis part
    step_s: float  # the secure step, compute_s included; the rest is the phase's cryptography


@dataclass(frozen=True)
class TaskTimes:
    """One task as the orchestrator's database and the edge's egress log recorded it."""

    task_id: str
    round: int
    site: str
    status: str
    delivered_at: float | None
    finished_at: float | None
    upload_started: float | None  # edge: just before POSTing its result
    slot_wait: float  # hosted edges: waiting for a host slot before working
    traffic: dict[str, tuple[int, int]]  # phase ("" if plain) -> bytes (up, down), blob aside
    legs: dict[str, Leg]  # secure rounds with hosted edges: by phase


def _unix(value: str | None) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def db_query(fed: LocalFederation, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read the orchestrator's SQLite database directly (read-only; WAL readers never block)."""
    uri = f"file:{fed.state_dir / 'oncofed.db'}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        return db.execute(sql, params).fetchall()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The entries of a JSON-lines log (none when it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def read_tasks(fed: BenchFederation, job_id: str) -> list[TaskTimes]:
    """Task timestamps from the orchestrator's SQLite database, upload starts from egress,
    hosted edges' timings of each task and phase from their timing log."""
    uploads: dict[tuple[str, str], float] = {}
    for site in fed.site_data:
        for entry in read_jsonl(fed.edge_dir(site) / "egress.jsonl"):
            if "task" in entry:  # not a data quality report
                endpoint = str(entry["endpoint"])
                phase = endpoint.rsplit("/", 1)[1] if "/secure/" in endpoint else ""
                uploads[entry["task"], phase] = _unix(entry["at"]) or 0.0
    timings = {(e["task"], e.get("phase", "")): e for e in read_jsonl(fed.timing_file)}
    traffic = task_traffic(fed, job_id)
    rows = db_query(
        fed,
        "SELECT t.id, r.number, s.name, t.status, t.delivered_at, t.finished_at "
        "FROM task t JOIN round r ON t.round_id = r.id JOIN site s ON t.site_id = s.id "
        "WHERE r.job_id = ? ORDER BY r.number, s.name",
        job_id,
    )
    tasks = []
    for task_id, number, site, status, delivered_at, finished_at in rows:
        legs = {
            phase: Leg(
                received=entry["received"],
                started=entry["started"],
                done=entry["done"],
                upload_started=uploads.get((task_id, phase)),
                compute_s=entry.get("compute_s", 0.0),
                step_s=entry.get("step_s", 0.0),
            )
            for phase in PHASES
            if (entry := timings.get((task_id, phase))) is not None
        }
        plain = timings.get((task_id, ""))
        tasks.append(
            TaskTimes(
                task_id=task_id,
                round=number,
                site=site,
                status=status,
                delivered_at=_unix(delivered_at),
                finished_at=_unix(finished_at),
                upload_started=uploads.get((task_id, "")),
                slot_wait=float(plain["slot_wait_s"]) if plain else 0.0,
                traffic=traffic.get(task_id, {}),
                legs=legs,
            )
        )
    return tasks


def task_traffic(fed: BenchFederation, job_id: str) -> dict[str, dict[str, tuple[int, int]]]:
    """Bytes each task moved besides the global model blob, by phase, rebuilt from the
    database. Up: what its site posted (update or masked input, JSON result, key advert, sealed
    shares, unmasking shares). Down: the round's data its task carried: a Newton round's
    coefficients (in every phase's task) and the secure step (roster, inbox, survivor list).
    The next round's advert, roster and shares count where they travelled: in the masked
    input, the unmask step and the unmasking shares."""
    rows = db_query(
        fed,
        "SELECT t.id, s.name, r.number, r.phase, t.delivered_at, t.bytes_received, "
        "length(CAST(t.result_json AS BLOB)), r.announced_sha, r.params_json, r.roster_json, "
        "r.survivors_json, r.next_roster_json FROM task t JOIN round r ON t.round_id = r.id "
        "JOIN site s ON t.site_id = s.id WHERE r.job_id = ?",
        job_id,
    )
    posts: dict[tuple[str, str], int] = {}
    bundles: dict[int, list[ShareBundle]] = {}
    for task_id, number, phase, body in db_query(
        fed,
        "SELECT m.task_id, r.number, m.phase, m.body FROM secure_message m "
        "JOIN task t ON m.task_id = t.id JOIN round r ON t.round_id = r.id WHERE r.job_id = ?",
        job_id,
    ):
        posts[task_id, phase] = len(body.encode())
        if phase == "shares":
            bundles.setdefault(number, []).append(ShareBundle.model_validate_json(body))
    traffic: dict[str, dict[str, tuple[int, int]]] = {}
    for task_id, site, number, phase, delivered, received, result, announced, params, *keys in rows:
        sent = 0
        if params:
            newton = analysis.params_for(analysis.NewtonState.from_json(params), site)
            sent = len(newton.model_dump_json()) if newton else 0
        if phase is None:
            traffic[task_id] = {"": (received or result or 0, sent if delivered else 0)}
            continue
        roster_json, survivors_json, next_roster_json = keys
        context = RoundContext(job_id=job_id, round=number, announced=announced)
        # keys and shares set up ahead came with the previous round's posts and steps
        ahead = (task_id, "shares") in posts and (task_id, "keys") not in posts
        steps: dict[str, SecureStep | None] = {
            "keys": SecureStep(phase="keys", context=context) if delivered and not ahead else None
        }
        if (task_id, "keys") in posts and roster_json:
            roster = Roster.model_validate_json(roster_json)
            steps["shares"] = SecureStep(phase="shares", context=context, roster=roster)
        if (task_id, "shares") in posts:
            inbox = inbox_for(site, bundles.get(number, []))
            steps["masked"] = SecureStep(phase="masked", context=context, inbox=inbox)
        if received and survivors_json:
            steps["unmask"] = SecureStep(
                phase="unmask",
                context=context,
                survivors=Survivors.model_validate_json(survivors_json),
                next_roster=Roster.model_validate_json(next_roster_json)
                if next_roster_json
                else None,
            )
        if ahead:
            posts.pop((task_id, "shares"))
        traffic[task_id] = {
            p: (
                (received or 0) if p == "masked" else posts.get((task_id, p), 0),
                len(step.model_dump_json()) + sent if (step := steps.get(p)) else 0,
            )
            for p in PHASES
        }
    return traffic


# -- per-round figures ------------------------------------------------------------------


@dataclass
class RoundFigures:
    """One measured round (train, or a Newton iteration). Times in seconds; the critical path
    follows the last site to finish (in a secure round, of each phase in turn)."""

    number: int
    measured: bool  # all but the first round of its kind are averaged
    wall_s: float  # closed_at - opened_at
    cycle_s: float  # next round's opened_at - opened_at
    max_compute_s: float
    overhead_s: float  # wall - slowest site's compute (training, or its analysis part)
    orchestration_s: float  # wall - the edges' work on the critical path (compute + crypto)
    bytes_up: int
    fetchers: int
    bytes_down: int
    orchestrator_cpu_s: float | None
    # critical path of the last site to finish: these sum to wall_s
    dispatch_s: float  # round (phase) opened -> task (step) delivered
    slot_wait_s: float  # hosted edges only: waiting for a host slot
    compute_s: float  # its compute (download + evaluate + train, or its analysis part)
    crypto_s: float  # secure rounds: the edge's cryptography (keys, shares, masking, unmask)
    edge_other_s: float  # delivered -> upload start, minus slot wait, compute and crypto
    upload_accept_s: float  # upload start -> accepted (transfer, spool, validate, fold in)
    close_s: float  # last accept -> round closed (a secure round: unmasking the sum)
    aggregate_s: float  # round closed -> next round opened (new model, next tasks)
    last_dispatch_s: float  # round opened -> last task delivered
    median_upload_accept_s: float
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # secure: by phase

    @property
    def bytes_total(self) -> int:
        return self.bytes_up + self.bytes_down


PARTS = ("dispatch_s", "slot_wait_s", "compute_s", "crypto_s", "edge_other_s", "upload_accept_s")
"""The critical path's parts within a round (or a secure round's phase)."""


def round_figures(
    job: JobPublic, kind: str, tasks: Sequence[TaskTimes], blob_size: int, sampler: Sampler
) -> list[RoundFigures]:
    """Every closed round of ``kind``; the first one is not ``measured`` (it warms up)."""
    by_round: dict[int, list[TaskTimes]] = {}
    for task in tasks:
        by_round.setdefault(task.round, []).append(task)
    opened = {r.number: r.opened_at.timestamp() for r in job.rounds}
    figures = []
    for rnd in job.rounds:
        if rnd.kind != kind or rnd.closed_at is None:
            continue
        start, end = opened[rnd.number], rnd.closed_at.timestamp()
        following = opened.get(rnd.number + 1, end)
        here = by_round.get(rnd.number, [])
        fetched = [t for t in here if t.delivered_at is not None]
        if rnd.secure:
            path, phases = secure_path(here, start, end)
            max_compute = max(sum(leg.compute_s for leg in t.legs.values()) for t in here)
        else:
            path, phases = plain_path(rnd, here, start, end), {}
            max_compute = max(s.compute_seconds or 0.0 for s in rnd.sites.values())
        accepts = [  # upload start -> accepted, or acknowledged in a secure phase
            (t.finished_at or 0.0) - t.upload_started
            for t in here
            if t.finished_at is not None and t.upload_started is not None
        ] + [
            leg.done - leg.upload_started
            for t in here
            for leg in t.legs.values()
            if leg.upload_started
        ]
        traffic = [b for t in here for b in t.traffic.values()]
        figures.append(
            RoundFigures(
                number=rnd.number,
                measured=bool(figures),
                wall_s=end - start,
                cycle_s=following - start,
                max_compute_s=max_compute,
                overhead_s=end - start - max_compute,
                orchestration_s=end - start - path["compute_s"] - path["crypto_s"],
                bytes_up=sum(up for up, _ in traffic),
                fetchers=len(fetched),
                bytes_down=blob_size * len(fetched) + sum(down for _, down in traffic),
                orchestrator_cpu_s=sampler.cpu_between(start, following),
                close_s=path.pop("close_s"),
                aggregate_s=following - end,
                last_dispatch_s=max((t.delivered_at or start) for t in fetched) - start,
                median_upload_accept_s=statistics.median(accepts) if accepts else 0.0,
                phases=phases,
                **path,
            )
        )
    return figures


def plain_path(
    rnd: RoundPublic, tasks: Sequence[TaskTimes], start: float, end: float
) -> dict[str, float]:
    """The critical path of a plain round: the last site to be accepted."""
    last = max((t for t in tasks if t.finished_at is not None), key=lambda t: t.finished_at or 0.0)
    delivered = last.delivered_at or start
    uploaded = last.upload_started or delivered
    finished = last.finished_at or end
    compute = rnd.sites[last.site].compute_seconds or 0.0
    return {
        "dispatch_s": delivered - start,
        "slot_wait_s": last.slot_wait,
        "compute_s": compute,
        "crypto_s": 0.0,
        "edge_other_s": uploaded - delivered - last.slot_wait - compute,
        "upload_accept_s": finished - uploaded,
        "close_s": end - finished,
    }


def secure_path(
    tasks: Sequence[TaskTimes], start: float, end: float
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The critical path of a secure round, phase by phase, each following its last site: the
    last acknowledged (the unmask phase: the last accepted, as recorded in the database). A
    phase ends when that site's post is acknowledged, or when a site already has the next
    phase's step if that came first (the ack returns after the notified sites' long polls).
    Returns the parts summed over the phases, and each phase's parts with its bytes."""
    phases: dict[str, dict[str, float]] = {}
    opened = start
    for phase, following in zip(PHASES, (*PHASES[1:], None), strict=True):
        legs = [(t, t.legs[phase]) for t in tasks if phase in t.legs]
        if not legs:  # set up ahead, with the previous round
            continue
        if phase == "unmask":
            task, leg = max(legs, key=lambda item: item[0].finished_at or end)
            closed = task.finished_at or end
        else:
            task, leg = max(legs, key=lambda item: item[1].done)
            handed = [t.legs[following].received for t in tasks if following in t.legs]
            closed = min([leg.done, *handed])
        uploaded = leg.upload_started or closed
        phases[phase] = {
            "dispatch_s": leg.received - opened,
            "slot_wait_s": leg.started - leg.received,
            "compute_s": leg.compute_s,
            "crypto_s": leg.step_s - leg.compute_s,
            "edge_other_s": uploaded - leg.started - leg.step_s,
            "upload_accept_s": closed - uploaded,
            "wall_s": closed - opened,
            "bytes_up": sum(t.traffic.get(phase, (0, 0))[0] for t in tasks),
            "bytes_down": sum(t.traffic.get(phase, (0, 0))[1] for t in tasks),
        }
        opened = closed
    path = {part: sum(p[part] for p in phases.values()) for part in PARTS}
    return path | {"close_s": end - opened}, phases


def median_of(items: Sequence[T], get: Callable[[T], float | None]) -> float:
    """The median of a figure over rounds (or runs), leaving out those without it."""
    values = [v for v in (get(item) for item in items) if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def median_phases(
    items: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, float]]:
    """Each phase's parts, the median over the rounds (or runs) that went through it: a round
    set up ahead has no keys or shares phase."""
    return {
        phase: {
            part: median_of(items, lambda i, p=phase, k=part: i.get(p, {}).get(k))
            for part in next(i[phase] for i in items if phase in i)
        }
        for phase in PHASES
        if any(phase in i for i in items)
    }


# -- one configuration ------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything measured for one configuration."""

    label: str
    sites: int
    parameters: int
    hidden: list[int]
    rounds: int
    model_bytes: int  # parameters x float32
    blob_bytes: int  # the global model as safetensors, as downloaded
    edge_plan: dict[str, Any]
    edge_mode: str
    workload: Workload = "mlp"
    secure: bool = False
    plain_label: str = ""  # the configuration this one is compared with when secure
    startup_s: float = 0.0
    job_s: float = 0.0
    status: str = "not run"
    error: str | None = None
    seconds_per_round: float = float("nan")
    wall_per_round: float = float("nan")
    overhead_s: float = float("nan")
    orchestration_s: float = float("nan")
    measured_rounds: int = 0
    bytes_up: float = float("nan")
    bytes_down: float = float("nan")
    bytes_total: float = float("nan")
    orchestrator_peak_bytes: int = 0
    orchestrator_idle_bytes: int = 0
    orchestrator_peak_at: str = ""
    edges_peak_total_bytes: int = 0
    edge_process_peak_max_bytes: int = 0
    repeats: int = 1
    breakdown: dict[str, float] = field(default_factory=dict)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # secure: by phase
    round_figures: list[dict[str, Any]] = field(default_factory=list)
    rounds_raw: list[dict[str, Any]] = field(default_factory=list)
    memory_timeline: list[list[float]] = field(default_factory=list)

    @property
    def times_model(self) -> float:
        return self.bytes_total / self.model_bytes if self.model_bytes else float("nan")

    def target(self) -> tuple[str, bool | None]:
        """The target that applies to this configuration, and whether it is met."""
        small = self.parameters < 1_000_000
        if self.workload != "mlp" or self.secure:  # see the secure/plain comparison
            return "", None
        if self.sites == 4 and small:
            ok = self.overhead_s < OVERHEAD_TARGET_S if self.status == "completed" else False
            return f"overhead < {OVERHEAD_TARGET_S * 1000:.0f} ms", ok
        if self.sites == 32 and not small:
            limit = 2 * self.model_bytes + MEMORY_TARGET_BASE
            ok = 0 < self.orchestrator_peak_bytes < limit if self.status == "completed" else False
            return f"peak < {limit / MIB:.0f} MiB", ok
        return "", None


def median_outcome(runs: Sequence[Outcome]) -> Outcome:
    """Repeated runs of one configuration as one: the median of every per-round figure, the
    highest memory peaks, every run's rounds; a failed run's outcome when one failed."""
    failed = [o for o in runs if o.status != "completed"]
    if len(runs) == 1 or failed:
        return failed[0] if failed else runs[0]

    first = runs[0]
    merged = replace(first, repeats=len(runs))
    for item in fields(Outcome):
        if isinstance(getattr(first, item.name), float):
            setattr(merged, item.name, median_of(runs, lambda o, n=item.name: getattr(o, n)))
    peaks = ("orchestrator_peak_bytes", "edges_peak_total_bytes", "edge_process_peak_max_bytes")
    for name in peaks:
        setattr(merged, name, max(getattr(o, name) for o in runs))
    merged.breakdown = {k: median_of(runs, lambda o, k=k: o.breakdown[k]) for k in first.breakdown}
    merged.phases = median_phases([o.phases for o in runs])
    merged.round_figures = [r for o in runs for r in o.round_figures]
    return merged


def peak_phase(job: JobPublic, moment: float) -> str:
    """Which round (and part of it) a moment fell in."""
    started = [r for r in job.rounds if r.opened_at.timestamp() <= moment]
    if not started:
        return "before the job's first round"
    rnd = started[-1]
    since = moment - rnd.opened_at.timestamp()
    if rnd.closed_at is not None and rnd.closed_at.timestamp() < moment:
        gap = moment - rnd.closed_at.timestamp()
        return f"after round {rnd.number} ({rnd.kind}) closed (+{gap:.2f}s)"
    return f"in round {rnd.number} ({rnd.kind}), {since:.2f}s after it opened"


def run_config(config: Config, requested: EdgeMode, workdir: Path, console: Console) -> Outcome:
    """Start a fresh federation, run one job, measure, stop."""
    root = workdir / config.label
    sites = site_names(config.sites)
    if config.workload == "cox":
        hidden, parameters, model_bytes = [], COX_COVARIATES, 0
        data = write_survival_data(root / "data", sites)
        about = (
            f"stratified cox, {COX_COVARIATES} covariates, {COX_PATIENTS_PER_SITE} patients "
            f"per site, <= {config.rounds} Newton iterations"
        )
    else:
        hidden = hidden_for(config.target_parameters)
        parameters = parameter_count(mlp_spec(hidden), N_FEATURES)
        model_bytes = parameters * FLOAT32
        data = write_site_data(root / "data", sites)
        about = (
            f"mlp hidden {hidden} = {parameters:,} parameters ({model_bytes / MIB:.1f} MiB), "
            f"{config.rounds} train rounds"
        )
    if requested == "auto" and config.timed_edges:
        requested = "hosted"
    plan = plan_edges(config.sites, model_bytes, requested, machine_ram())
    outcome = Outcome(
        label=config.label,
        sites=config.sites,
        parameters=parameters,
        hidden=hidden,
        rounds=config.rounds,
        model_bytes=model_bytes,
        blob_bytes=0,
        edge_plan=asdict(plan),
        edge_mode=plan.describe(),
        workload=config.workload,
        secure=config.secure,
        plain_label=config.plain_label,
    )
    secure = ", secure aggregation" if config.secure else ""
    console.log(f"[bold]{config.label}[/]: {config.sites} sites, {about}{secure}")
    console.log(f"  edges: {plan.describe()}")
    began = time.monotonic()
    with BenchFederation(root / "fed", data, plan, project(job_spec(config, hidden))) as fed:
        fed.wait_edges_ready()
        outcome.startup_s = time.monotonic() - began
        assert fed.orchestrator is not None
        pid = fed.orchestrator.pid
        console.log(
            f"  federation up in {outcome.startup_s:.1f}s (orchestrator pid {pid}, {fed.url})"
        )
        sampler = Sampler(pid, [p.pid for p in fed.edges.values()], SAMPLE_PERIOD_S)
        sampler.start()
        try:
            job = run_job(fed, config, hidden, console, outcome)
        finally:
            sampler.stop()
        outcome.orchestrator_peak_bytes = proc_status_bytes(pid, "VmHWM") or 0
        edge_peaks = [proc_status_bytes(p.pid, "VmHWM") or 0 for p in fed.edges.values()]
        outcome.edge_process_peak_max_bytes = max(edge_peaks, default=0)
        if job is not None and job.status == "completed":
            if config.workload == "mlp":
                with fed.client() as client:
                    outcome.blob_bytes = len(client.model_bytes(job.id))
            summarise(outcome, config.round_kind, job, read_tasks(fed, job.id), sampler)
    return outcome


def follow_job(fed: BenchFederation, job_id: str, console: Console, timeout: float) -> None:
    """Print each round as it opens until the job ends; reads the database, not the API, so
    following the job costs the orchestrator nothing."""
    seen: set[int] = set()
    began = time.monotonic()
    give_up = began + timeout
    while True:
        rounds = db_query(
            fed, "SELECT number, kind FROM round WHERE job_id = ? ORDER BY number", job_id
        )
        for number, kind in rounds:
            if number not in seen:
                seen.add(number)
                console.log(f"  round {number} ({kind}) open at +{time.monotonic() - began:.1f}s")
        status = db_query(fed, "SELECT status FROM job WHERE id = ?", job_id)
        if status and status[0][0] != "running":
            return
        if time.monotonic() > give_up:
            raise TimeoutError(f"job {job_id} still running after {timeout:.0f}s")
        time.sleep(0.25)


def run_job(
    fed: BenchFederation, config: Config, hidden: list[int], console: Console, outcome: Outcome
) -> JobPublic | None:
    """Submit the job and follow it, printing each round as it opens."""
    with fed.client() as client:
        began = time.monotonic()
        created = client.submit(job_spec(config, hidden))
        try:
            follow_job(fed, created.id, console, JOB_TIMEOUT_S)
        except Exception as exc:  # report and go on with the next configuration
            outcome.status, outcome.error = "error", f"{type(exc).__name__}: {exc}"
            console.log(f"  [red]{outcome.error}[/]")
            return None
        outcome.job_s = time.monotonic() - began
        job = client.job(created.id)
        outcome.status, outcome.error = job.status, job.error
    console.log(
        f"  job {job.status} in {outcome.job_s:.1f}s" + (f": {job.error}" if job.error else "")
    )
    return job


def raw_rounds(job: JobPublic, tasks: Sequence[TaskTimes]) -> list[dict[str, Any]]:
    """Every round with every site's figures; times in seconds after the round opened."""
    by_key = {(t.round, t.site): t for t in tasks}
    raw = []
    for rnd in job.rounds:
        start = rnd.opened_at.timestamp()

        def rel(moment: float | None, start: float = start) -> float | None:
            return None if moment is None else round(moment - start, 6)

        sites = {}
        for name, site in rnd.sites.items():
            times = by_key.get((rnd.number, name))
            sites[name] = {
                "status": site.status,
                "compute_s": site.compute_seconds,
                "bytes_received": site.bytes_received,
                "delivered_s": rel(times.delivered_at) if times else None,
                "upload_started_s": rel(times.upload_started) if times else None,
                "accepted_s": rel(times.finished_at) if times else None,
                "slot_wait_s": times.slot_wait if times else None,
                "traffic": times.traffic if times else None,
                "legs": {
                    phase: {
                        "received_s": rel(leg.received),
                        "started_s": rel(leg.started),
                        "upload_started_s": rel(leg.upload_started),
                        "done_s": rel(leg.done),
                        "compute_s": leg.compute_s,
                        "step_s": leg.step_s,
                    }
                    for phase, leg in (times.legs.items() if times else ())
                },
            }
        raw.append(
            {
                "number": rnd.number,
                "kind": rnd.kind,
                "opened_at": rnd.opened_at.isoformat(),
                "closed_at": rnd.closed_at.isoformat() if rnd.closed_at else None,
                "wall_s": rel(rnd.closed_at.timestamp()) if rnd.closed_at else None,
                "sites": sites,
            }
        )
    return raw


def summarise(
    outcome: Outcome, kind: str, job: JobPublic, tasks: list[TaskTimes], sampler: Sampler
) -> None:
    """Medians over the rounds of ``kind`` but the first (train rounds 2..R, Newton iterations
    2..K), per secure phase too; the memory timeline and where the peak fell."""
    rounds = round_figures(job, kind, tasks, outcome.blob_bytes, sampler)
    measured = [r for r in rounds if r.measured] or rounds
    outcome.measured_rounds = len(measured)
    outcome.round_figures = [{**asdict(r), "bytes_total": r.bytes_total} for r in rounds]
    outcome.rounds_raw = raw_rounds(job, tasks)
    outcome.seconds_per_round = median_of(measured, lambda r: r.cycle_s)
    outcome.wall_per_round = median_of(measured, lambda r: r.wall_s)
    outcome.overhead_s = median_of(measured, lambda r: r.overhead_s)
    outcome.orchestration_s = median_of(measured, lambda r: r.orchestration_s)
    outcome.bytes_up = median_of(measured, lambda r: r.bytes_up)
    outcome.bytes_down = median_of(measured, lambda r: r.bytes_down)
    outcome.bytes_total = median_of(measured, lambda r: r.bytes_total)
    keys = (
        *PARTS,
        "close_s",
        "aggregate_s",
        "last_dispatch_s",
        "median_upload_accept_s",
        "max_compute_s",
        "orchestrator_cpu_s",
    )
    outcome.breakdown = {k: median_of(measured, lambda r, k=k: getattr(r, k)) for k in keys}
    outcome.phases = median_phases([r.phases for r in measured])
    samples = sampler.samples
    if samples:
        outcome.orchestrator_idle_bytes = samples[0].orchestrator_rss
        outcome.edges_peak_total_bytes = max(s.edges_rss for s in samples)
        top = max(samples, key=lambda s: s.orchestrator_rss)
        outcome.orchestrator_peak_at = peak_phase(job, top.at)
        step = max(1, len(samples) // 600)
        origin = samples[0].at
        outcome.memory_timeline = [
            [round(s.at - origin, 3), s.orchestrator_rss, s.edges_rss] for s in samples[::step]
        ]


# -- report -----------------------------------------------------------------------------

SECURE_TARGET = 2.0  # 32 sites: secure / plain orchestration overhead and bytes per round


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def _mb(n: float) -> str:
    return "-" if math.isnan(n) or n == 0 else f"{n / MIB:.1f}"


def _kb(n: float) -> str:
    return "-" if math.isnan(n) else f"{n / 1024:.1f}"


def _traffic(o: Outcome) -> str:
    """Up + down, in MiB, or in KiB when under one MiB in all."""
    if math.isnan(o.bytes_total):
        return "-"
    unit, size = ("MiB", _mb) if o.bytes_total >= MIB else ("KiB", _kb)
    return f"{size(o.bytes_up)} + {size(o.bytes_down)} {unit}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("[green]PASS[/]" if ok else "[red]FAIL[/]")


def _table(title: str, *columns: str) -> Table:
    """A compact table (no vertical rules) whose first column is the configuration's label,
    the others right-aligned: each report table fits 80 columns."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=0)
    table.add_column(columns[0], no_wrap=True)
    for name in columns[1:]:
        table.add_column(name, justify="right", no_wrap=True)
    return table


def results_table(outcomes: Sequence[Outcome]) -> Table:
    table = _table(
        "per round (medians over rounds 2..R)",
        "config", "s/round", "orch. ms", "wall-comp", "CPU ms", "up + down", "x model",
    )  # fmt: skip
    for o in outcomes:
        table.add_row(
            o.label if o.status == "completed" else f"{o.label} [red]{o.status}[/]",
            "-" if math.isnan(o.seconds_per_round) else f"{o.seconds_per_round:.3f}",
            _ms(o.orchestration_s),
            _ms(o.overhead_s),
            _ms(o.breakdown.get("orchestrator_cpu_s", math.nan)),
            _traffic(o),
            "-" if math.isnan(o.times_model) else f"{o.times_model:.1f}",
        )
    return table


def memory_table(outcomes: Sequence[Outcome]) -> Table:
    table = _table(
        "memory (MiB): the orchestrator before the job and at its peak; all edges at their peak",
        "config", "parameters", "edges", "orch. idle", "orch. peak", "edges peak",
    )  # fmt: skip
    for o in outcomes:
        mode = f"{o.edge_plan.get('mode', '?')} ({o.edge_plan.get('processes')})"
        table.add_row(
            o.label,
            f"{o.parameters:,}",
            mode,
            _mb(o.orchestrator_idle_bytes),
            _mb(o.orchestrator_peak_bytes),
            _mb(o.edges_peak_total_bytes),
        )
    return table


BREAKDOWN = (
    ("dispatch", "dispatch_s"),
    ("slot", "slot_wait_s"),
    ("compute", "compute_s"),
    ("crypto", "crypto_s"),
    ("other", "edge_other_s"),
    ("upload", "upload_accept_s"),
)


def breakdown_table(outcomes: Sequence[Outcome]) -> Table:
    columns = (*BREAKDOWN, ("close", "close_s"), ("= wall", "wall"), ("aggr.", "aggregate_s"))
    table = _table(
        "where a round goes (ms; critical path of the last site to finish)",
        "config", *(name for name, _ in columns),
    )  # fmt: skip
    for o in outcomes:
        b = o.breakdown
        cells = [_ms(o.wall_per_round if key == "wall" else b.get(key, math.nan))
                 for _, key in columns]  # fmt: skip
        table.add_row(o.label, *cells)
    return table


def phase_table(outcome: Outcome) -> Table:
    """A secure configuration's rounds phase by phase."""
    table = _table(
        f"{outcome.label} by phase (ms; critical path of each phase's last site)",
        "phase", *(name for name, _ in BREAKDOWN), "= phase", "up KiB", "down KiB",
    )  # fmt: skip
    for phase, parts in outcome.phases.items():
        cells = [_ms(parts[key]) for _, key in (*BREAKDOWN, ("", "wall_s"))]
        table.add_row(phase, *cells, _kb(parts["bytes_up"]), _kb(parts["bytes_down"]))
    return table


@dataclass(frozen=True)
class Comparison:
    """A secure configuration against its plain twin, per round (medians)."""

    secure: Outcome
    plain: Outcome

    @property
    def overhead_ratio(self) -> float:
        return self.secure.orchestration_s / self.plain.orchestration_s

    @property
    def wall_compute_ratio(self) -> float:
        return self.secure.overhead_s / self.plain.overhead_s

    @property
    def bytes_ratio(self) -> float:
        return self.secure.bytes_total / self.plain.bytes_total

    @property
    def bytes_floor_ratio(self) -> float:
        """The least bytes ratio any encoding of the protocol could give: the plain round's
        bytes plus the secure messages' raw bytes (``secure_floor_bytes``)."""
        floor = self.plain.bytes_total + secure_floor_bytes(self.secure.sites)
        return floor / self.plain.bytes_total

    @property
    def cpu_ratio(self) -> float:
        key = "orchestrator_cpu_s"
        return self.secure.breakdown.get(key, math.nan) / self.plain.breakdown.get(key, math.nan)

    def verdicts(self) -> tuple[bool | None, bool | None]:
        """Overhead and bytes under the 2x target; None where it does not apply (4 sites)."""
        if self.secure.sites != 32:
            return None, None
        completed = self.secure.status == self.plain.status == "completed"
        return (
            completed and self.overhead_ratio < SECURE_TARGET,
            completed and self.bytes_ratio < SECURE_TARGET,
        )

    def to_json(self) -> dict[str, Any]:
        overhead_ok, bytes_ok = self.verdicts()
        return {
            "secure": self.secure.label,
            "plain": self.plain.label,
            "overhead_ratio": self.overhead_ratio,
            "wall_minus_compute_ratio": self.wall_compute_ratio,
            "bytes_ratio": self.bytes_ratio,
            "bytes_floor_ratio": self.bytes_floor_ratio,
            "orchestrator_cpu_ratio": self.cpu_ratio,
            "overhead_passed": overhead_ok,
            "bytes_passed": bytes_ok,
        }


def secure_floor_bytes(sites: int) -> int:
    """Raw bytes of one secure round set up ahead, in a full mesh with fresh keys, over all
    sites, before any encoding: each site sends its advert, a sealed share for every peer and
    a self-mask share for every survivor, and is sent the roster (every advert with its
    identity key) and a sealed share from every peer."""
    advert = 2 * KEY_BYTES + SIGNATURE_BYTES
    up = advert + (sites - 1) * SEALED_BYTES + sites * SHARE_BYTES
    down = sites * (advert + KEY_BYTES) + (sites - 1) * SEALED_BYTES
    return sites * (up + down)


def comparisons(outcomes: Sequence[Outcome]) -> list[Comparison]:
    """Every secure configuration whose plain twin ran too."""
    by_label = {o.label: o for o in outcomes}
    return [
        Comparison(o, by_label[o.plain_label])
        for o in outcomes
        if o.secure and o.plain_label in by_label
    ]


def comparison_table(pairs: Sequence[Comparison]) -> Table:
    table = _table(
        f"secure / plain per round (target at 32 sites: orch. and bytes < {SECURE_TARGET:.0f}x)",
        "secure", "orch.", "wall-comp", "CPU", "bytes", "floor", "orch. < 2x", "bytes < 2x",
    )  # fmt: skip
    for pair in pairs:
        overhead_ok, bytes_ok = pair.verdicts()
        ratios = (pair.overhead_ratio, pair.wall_compute_ratio, pair.cpu_ratio, pair.bytes_ratio,
                  pair.bytes_floor_ratio)  # fmt: skip
        table.add_row(
            pair.secure.label,
            *(f"{r:.2f}x" for r in ratios),
            _verdict(overhead_ok),
            _verdict(bytes_ok),
        )
    return table


def targets_table(outcomes: Sequence[Outcome]) -> Table:
    table = _table("targets", "config", "target", "measured", "result")
    for o in outcomes:
        target, ok = o.target()
        if target:
            measured = _ms(o.overhead_s) + " ms" if "overhead" in target else (
                _mb(o.orchestrator_peak_bytes) + " MiB")  # fmt: skip
            table.add_row(o.label, target, measured, _verdict(ok))
    for pair in comparisons(outcomes):
        overhead_ok, bytes_ok = pair.verdicts()
        if overhead_ok is not None:
            target = f"< {SECURE_TARGET:.0f}x plain"
            table.add_row(pair.secure.label, f"orch. {target}", f"{pair.overhead_ratio:.2f}x",
                          _verdict(overhead_ok))  # fmt: skip
            measured = f"{pair.bytes_ratio:.2f}x (floor {pair.bytes_floor_ratio:.1f}x)"
            table.add_row(pair.secure.label, f"bytes {target}", measured, _verdict(bytes_ok))
    return table


NOTES = (
    "s/round: opened_at of the next round minus opened_at of this round (includes aggregation). "
    "Rounds measured: train rounds 2..R (round 1 warms up torch; a secure job's stats round and "
    "every job's final evaluate round are left out); Newton iterations 2..K (the first also "
    "fits each site's own model). orch.: orchestration overhead = closed_at - opened_at minus "
    "the edges' work on the critical path (compute + edge crypto): what the orchestrator, the "
    "wire and the edges' plumbing (edge other) add. wall-compute: closed_at - opened_at minus "
    "the slowest site's compute (secure rounds: it includes the edges' crypto).",
    "compute: a plain round's compute_seconds (model download + evaluate + train, or the "
    "analysis part); in a secure round compute_seconds is whole seconds, so compute and crypto "
    "come from the hosted edges' timing log (the task runner's time; the secure step's time "
    "minus it). Secure and Cox configurations run hosted edges (with 4 sites: 4 processes of "
    "one agent each) to be timed; 4x100k runs one `oncofed edge run` process per site.",
    "bytes: up: updates or masked inputs (bytes_received), JSON results and secure messages as "
    "stored (key adverts, sealed shares, unmasking shares); down: global model blob x sites "
    "delivered the task, a Newton round's coefficients in each task (each phase's, in a secure "
    "round) and each phase's secure step (roster, inbox, survivor list), rebuilt from the "
    "database. A secure round set up ahead carries the next round's advert in its masked "
    "inputs, its roster in the unmask step and its sealed shares with the unmasking shares; "
    "they count in the round that carried them. Not counted: the rest of each task's JSON "
    "(ids, spec; sent once per phase in a secure round), acknowledgements, HTTP headers. "
    "floor: the least bytes ratio any encoding of the protocol (full mesh, fresh keys each "
    "round) could give: the plain round's bytes plus the raw bytes of the secure messages "
    "(each site's advert, sealed shares for its peers and self-mask shares, the roster and "
    "inbox it is sent), nothing counted for masked inputs being larger than plain ones.",
    "breakdown: critical path of the last site to finish (dispatch + slot wait + compute + edge "
    "crypto + edge other + upload+accept + close = wall); a secure round's parts are summed "
    "over its phases, each phase following its own last site (phase table) and ending when "
    "that site's post is acknowledged (unmask: accepted); close: a secure round's unmasking. "
    "aggregate+open happens after closed_at; orch. CPU is the orchestrator's user+system CPU "
    "per round. dispatch: plain, until the orchestrator marks the task delivered; secure, until "
    "the edge has the phase's step. edge other: delivery to the edge, task checks, encoding "
    "and hashing of the post. slot wait: hosted edges waiting for a host slot.",
)


def print_notes(console: Console, outcomes: Sequence[Outcome]) -> None:
    for note in NOTES:
        console.print(note, style="dim")
    for o in outcomes:
        console.print(
            f"{o.label}: edges {o.edge_mode}; up in {o.startup_s:.0f}s, job {o.job_s:.0f}s, "
            f"{o.measured_rounds} rounds measured; "
            f"orchestrator peak {o.orchestrator_peak_at or '-'}"
            + (f"; [red]{o.error}[/]" if o.error else "")
        )


LOOP_ADDITIONS = 10_000_000


def loop_seconds() -> float:
    """CPU seconds of a plain Python loop of ``LOOP_ADDITIONS`` additions in this process: how
    fast the machine runs Python now. Machines, and one machine's speed from hour to hour,
    differ by more than most changes do, so every results file says it beside its figures."""
    started = time.process_time()
    total = 0
    for number in range(LOOP_ADDITIONS):
        total += number
    return round(time.process_time() - started, 3)


def speed_said(loops: Sequence[float], when: str) -> str:
    """``loop_seconds``'s figures (taken ``when``) as a sentence."""
    low, high = min(loops), max(loops)
    took = f"{low:.2f} s" if high - low < 0.005 else f"{low:.2f} to {high:.2f} s"
    return (
        f"A plain Python loop of {LOOP_ADDITIONS:,} additions took {took} of CPU {when} (this "
        "machine's speed: compare figures from other machines and hours by it)."
    )


def machine_info() -> dict[str, Any]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "cpu_count": os.cpu_count(),
        "ram_bytes": machine_ram(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": version("torch"),
        "numpy": version("numpy"),
        "oncofed": version("oncofed"),
    }


def write_results(
    path: Path, outcomes: Sequence[Outcome], total_s: float, loops: Sequence[float]
) -> None:
    """The results file (``loops``: ``loop_seconds`` before the runs and after each)."""
    configs = []
    for o in outcomes:
        target, ok = o.target()
        configs.append(
            {**asdict(o), "times_model": o.times_model, "target": target or None, "passed": ok}
        )
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_seconds": round(total_s, 1),
        "machine": {**machine_info(), "loop_10m_cpu_s": list(loops)},
        "definitions": {
            "seconds_per_round": "next round opened_at - this round's opened_at",
            "orchestration_s": "closed_at - opened_at minus the edges' work on the critical "
            "path: compute + edge crypto (secure: summed over the phases' last sites)",
            "overhead_s": "closed_at - opened_at minus the slowest site's compute "
            "(compute_seconds; secure rounds: the hosted edges' timed task runner)",
            "bytes_up": "updates or masked inputs (bytes_received), JSON results and secure "
            "messages as stored",
            "bytes_down": "global model blob size x sites delivered the task, plus Newton "
            "coefficients and secure steps (roster, inbox, survivors) rebuilt from the database",
            "orchestrator_peak_bytes": "VmHWM of the orchestrator process after the job",
            "medians": "over the rounds of each job but the first of its kind (train rounds "
            "2..R, Newton iterations 2..K); with --repeat, the median of the runs' medians",
            "secure_target": f"at 32 sites, secure / plain orchestration_s and bytes_total "
            f"per round under {SECURE_TARGET}",
        },
        "configs": configs,
        "comparisons": [pair.to_json() for pair in comparisons(outcomes)],
    }
    path.write_text(json.dumps(nan_to_none(document), indent=2, allow_nan=False) + "\n")


def nan_to_none(value: Any) -> Any:
    """NaN as null, through dicts and lists (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark a local oncofed federation.")
    parser.add_argument(
        "--only",
        action="append",
        choices=[c.label for c in CONFIGS],
        help="Run only this configuration (repeatable).",
    )
    parser.add_argument(
        "--edge-mode",
        choices=["auto", "process", "hosted"],
        default="auto",
        help="auto: one process per site when the sites fit in memory, else hosted threads.",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="Run each configuration N times; report medians."
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file.")
    parser.add_argument("--keep", action="store_true", help="Keep the federation directories.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    configs = [c for c in CONFIGS if not args.only or c.label in args.only]
    info, loops = machine_info(), [loop_seconds()]
    console.log(
        f"machine: {info['cpu_count']} CPUs, {info['ram_bytes'] / (1 << 30):.1f} GiB RAM, "
        f"python {info['python']}, torch {info['torch']}; a Python loop of "
        f"{LOOP_ADDITIONS:,} additions took {loops[0]:.2f} s of CPU"
    )
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="oncofed-bench-"))
    outcomes: list[Outcome] = []
    try:
        for config in configs:
            runs = [
                run_config(config, args.edge_mode, workdir / f"run-{n}", console)
                for n in range(args.repeat)
            ]
            outcomes.append(median_outcome(runs))
            loops.append(loop_seconds())
            write_results(args.output, outcomes, time.monotonic() - began, loops)
    finally:
        if args.keep:
            console.log(f"federation directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - began
    write_results(args.output, outcomes, total, loops)
    console.print(results_table(outcomes))
    console.print(memory_table(outcomes))
    console.print(breakdown_table(outcomes))
    for outcome in outcomes:
        if outcome.phases:
            console.print(phase_table(outcome))
    if pairs := comparisons(outcomes):
        console.print(comparison_table(pairs))
    console.print(targets_table(outcomes))
    print_notes(console, outcomes)
    console.print(speed_said(loops, "before the runs and after each"))
    console.print(f"total {total:.0f}s; results in {args.output}")
    return 0 if all(o.status == "completed" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
