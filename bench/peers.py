"""oncofed against other frameworks: one shared federated task through three systems.

scikit-learn's breast cancer set (569 patients, 30 numeric features, malignant = 1; shipped in
the package) is dealt to K sites (stratified, seeded); each site holds out a share of its rows
exactly as an oncofed edge does (``holdout_split``: 25%, the job's seed). The task: logistic
regression or a 30-64-64-1 MLP (ReLU), FedAvg weighted by training rows, 20 rounds of one local
epoch of SGD (lr 0.05, batch 32) over features standardised by the pooled mean and standard
deviation of the training rows, from the same seeded initial weights, each site shuffling its
rows with the seed oncofed's edges use. It runs through, one system at a time:

* floor: a plain loop in one process (``bench/peers_flower.py --system floor``): each round,
  every site's local epoch in turn, then the weighted mean;
* flower: Flower 1.42's simulation (Ray backend, one process tree) with its FedAvg, from a
  separate virtual environment (bench/.venv-flower, made by ``make bench-peers``): Flower is
  never a dependency of oncofed;
* oncofed: as deployed: an orchestrator process and edge processes over HTTP on 127.0.0.1,
  each site's data imported from a CSV by oncofed's importer (once per K: the importer puts
  the rows in a random pseudonym order, which an edge's hold-out split follows, so every
  system is given the rows in that order and each run's edges a copy of that import), the job
  submitted and the final model downloaded through the client. Up to ``PROCESS_SITES``
  sites, one ``oncofed edge run`` per site; beyond, a few ``oncofed edge run`` processes, each
  given several sites' ``--dir`` (``start_edges``). The job is submitted once every site has
  been seen and the federation is idle (its edges done starting and waiting in their long
  polls, as a consortium's are when a study comes: ``wait_polling``).

Measured for each system, K, model and repetition: seconds per round (median and range over
the training rounds), launch-to-result (processes launched to the final model in hand), the
peak memory of every process involved (sum of their VmHWM, the process trees walked while they
run) and the AUC of the final model on the pooled held-out rows, computed here for all three
alike from the final weights. oncofed's statistics round (round 0, the pooled standardisation)
and its closing evaluation round are reported apart; its per-round time is over the training
rounds only (one round opening to the next one's); so are the CPU seconds its orchestrator
spent per site answer and its edges per task, over the whole job. The sites' policies are
relaxed for the public data set (no small-cell rules, minimum cohort 1, no clipping: plain
FedAvg, as the peers run it), and oncofed's job scores only its final model on the held-out
rows (``evaluation.every: null``), as the peers score none in their training rounds.

``python bench/peers.py [--sites 4,50,200] [--models logistic,mlp] [--reps 2]
[--systems floor,flower,oncofed] [--rounds 20]``; ``--markdown`` prints the summary of the
results file (``bench/results-peers.json``) as a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml
from rich import box
from rich.console import Console
from rich.table import Table
from run import (
    BenchFederation,
    EdgePlan,
    db_query,
    loop_seconds,
    machine_info,
    proc_cpu_seconds,
    proc_status_bytes,
    project,
    site_names,
    speed_said,
)
from scipy.stats import rankdata

from oncofed._files import write_private
from oncofed.cdm.frame import job_table
from oncofed.demo.federation import DATASET
from oncofed.edge import EdgeHome, LocalStore
from oncofed.edge.enrol import enrol
from oncofed.edge.importing import Source, import_source
from oncofed.learning.data import build_cohort, holdout_split, pooled_standardization
from oncofed.learning.registry import initial_weights, parameter_count
from oncofed.orchestrator import setup as state
from oncofed.wire import tensors
from oncofed.wire.messages import JobPublic, Standardization, StatsResult
from oncofed.wire.spec import JobSpec, ModelSpec

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-peers.json"
PEER_SCRIPT = HERE / "peers_flower.py"
FLOWER_VENV = HERE / ".venv-flower"
FLOWER_PYTHON = FLOWER_VENV / "bin" / "python"

SYSTEMS = ("floor", "flower", "oncofed")
MODELS = {"logistic": ModelSpec(type="logistic"), "mlp": ModelSpec(type="mlp", hidden=[64, 64])}
TARGETS = {4: 0.03, 50: 0.15, 200: 0.5}
"""Issue 14's targets for oncofed's seconds per round, by number of sites (any model)."""
DEAL_SEED = 20240611
JOB_SEED = 7
HOLDOUT = 0.25
EPOCHS, LR, BATCH = 1, 0.05, 32
PROCESS_SITES = 8
"""Up to this many sites, one edge process each; beyond, each process serves several."""
JOB_TIMEOUT_S = 3600.0
SAMPLE_PERIOD_S = 0.25
QUIET_WINDOW_S = 0.5
QUIET_CPU_S = 0.05
"""The federation is idle (its edges wait in their long polls) once its processes use less
than ``QUIET_CPU_S`` seconds of CPU in all over ``QUIET_WINDOW_S`` seconds."""
MIB = 1 << 20

Progress = Callable[[str], None]


# -- the task ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    name: str
    x: np.ndarray  # every row of the site, in the order its CSV holds them (float64)
    y: np.ndarray  # 0/1
    train: np.ndarray  # row indices
    held_out: np.ndarray


@dataclass(frozen=True)
class Problem:
    sites: list[Site]
    scaling: Standardization  # pooled over the sites' training rows, as oncofed's round 0
    stores: Path  # each site's imported dataset: stores/<site> (a LocalStore's root)

    @property
    def held_out(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.vstack([s.x[s.held_out] for s in self.sites])
        y = np.concatenate([s.y[s.held_out] for s in self.sites])
        return x, y


def load_data(workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's breast cancer set, read by the Flower environment (which has
    scikit-learn; oncofed's does not)."""
    path = workdir / "breast_cancer.npz"
    if not path.exists():
        subprocess.run([str(FLOWER_PYTHON), str(PEER_SCRIPT), "--dump-data", str(path)], check=True)
    with np.load(path) as data:
        return data["x"], data["y"]


def deal(y: np.ndarray, k: int, seed: int = DEAL_SEED) -> list[np.ndarray]:
    """Row indices of each of ``k`` sites: each class shuffled and dealt in turn (so every
    site gets its share of both), then each site's rows shuffled."""
    rng = np.random.default_rng(seed)
    hands: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    for label in np.unique(y):
        for row in rng.permutation(np.flatnonzero(y == label)):
            hands[dealt % k].append(int(row))
            dealt += 1
    return [rng.permutation(np.array(hand, dtype=np.int64)) for hand in hands]


def make_problem(x: np.ndarray, y: np.ndarray, k: int, stage: Path) -> Problem:
    """Deal the rows to ``k`` sites and import each site's CSV with oncofed's importer (as
    ``oncofed edge import`` does) into a store under ``stage``, once for every run at this
    ``k``: the importer puts the rows in a random (pseudonym) order, and an edge splits its
    cohort in that order, so each site's rows are taken in it, and every system holds out the
    same rows. oncofed's runs get a copy of these stores (``PeerFederation``)."""
    stage.mkdir(parents=True)
    rows_of = dict(zip(site_names(k), deal(y, k), strict=True))
    sources = write_site_csvs(stage / "csv", {site: (x[r], y[r]) for site, r in rows_of.items()})
    spec = JobSpec.model_validate(oncofed_spec("logistic", k, 1))
    sites = []
    for name, source in sources.items():
        store = LocalStore(stage / "stores" / name)
        import_source(store, DATASET, source, threshold=1)
        cohort = build_cohort(spec, job_table(spec, store.load(DATASET)))
        train, held_out = holdout_split(len(cohort), HOLDOUT, JOB_SEED)
        sites.append(Site(name, cohort.numeric, cohort.label.astype(np.int64), train, held_out))
    stats = [
        StatsResult(
            n=len(s.train),
            sums=s.x[s.train].sum(axis=0).tolist(),
            sumsq=(s.x[s.train] ** 2).sum(axis=0).tolist(),
        )
        for s in sites
    ]
    return Problem(sites, pooled_standardization(stats), stage / "stores")


def standardise(x: np.ndarray, scaling: Standardization) -> np.ndarray:
    mean = np.asarray(scaling.mean, dtype=np.float64)
    std = np.asarray(scaling.std, dtype=np.float64)
    return ((x - mean) / std).astype(np.float32)


def widths(model: str) -> list[int]:
    return [len(FEATURES), *(MODELS[model].hidden if model == "mlp" else []), 1]


FEATURES = [f"f{i:02d}" for i in range(30)]


def write_task(path: Path, problem: Problem, model: str, rounds: int) -> None:
    """The .npz that bench/peers_flower.py trains from."""
    arrays: dict[str, Any] = {}
    for i, site in enumerate(problem.sites):
        arrays[f"x:{i}"] = standardise(site.x[site.train], problem.scaling)
        arrays[f"y:{i}"] = site.y[site.train].astype(np.float32)
    for name, value in initial_weights(MODELS[model], len(FEATURES), JOB_SEED).items():
        arrays[f"w:{name}"] = value
    meta = {
        "sites": [s.name for s in problem.sites],
        "widths": widths(model),
        "rounds": rounds,
        "epochs": EPOCHS,
        "lr": LR,
        "batch_size": BATCH,
        "seed": JOB_SEED,
    }
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Scores of the dense stack (ReLU between layers), in float64."""
    layers = sorted({int(k.split(".")[1]) for k in weights})
    out = x.astype(np.float64)
    for i in layers:
        out = out @ weights[f"layers.{i}.weight"].astype(np.float64).T
        bias = weights.get(f"layers.{i}.bias")
        if bias is not None:
            out = out + bias.astype(np.float64)
        if i != layers[-1]:
            out = np.maximum(out, 0.0)
    return out[:, 0]


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """The area under the ROC curve (Mann-Whitney, ties counted half)."""
    ranks = rankdata(score)
    positives = label == 1
    n1, n0 = int(positives.sum()), int((~positives).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def held_out_auc(
    problem: Problem, weights: dict[str, np.ndarray], scaling: Standardization
) -> float:
    x, y = problem.held_out
    return auc(forward(weights, standardise(x, scaling)), y)


# -- memory of process trees ------------------------------------------------------------


def parents() -> dict[int, int]:
    """Every process's parent, from /proc/<pid>/stat (psutil's walk costs six times more)."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                data = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:  # gone since the listing
                continue
            out[int(name)] = int(data[data.rindex(b")") + 2 :].split(None, 2)[1])
    return out


class TreeSampler(threading.Thread):
    """The peak memory (VmHWM) of every process in the trees under ``roots``, walked every
    ``period`` seconds while they run: processes that come and go (Ray's workers) count."""

    def __init__(self, roots: Sequence[int], period: float = SAMPLE_PERIOD_S) -> None:
        super().__init__(name="tree-sampler", daemon=True)
        self.roots, self.period = list(roots), period
        self.peaks: dict[int, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.period)

    def sample(self) -> None:
        """One walk of the process table for every tree (a walk per root cost the cores
        0.8 ms each, every ``period``, while the systems ran)."""
        children: dict[int, list[int]] = {}
        for pid, parent in parents().items():
            children.setdefault(parent, []).append(pid)
        pids, stack = set(), list(self.roots)
        while stack:
            pid = stack.pop()
            if pid not in pids:
                pids.add(pid)
                stack.extend(children.get(pid, ()))
        for pid in pids:
            peak = proc_status_bytes(pid, "VmHWM")
            if peak is not None:
                self.peaks[pid] = max(peak, self.peaks.get(pid, 0))

    def stop(self) -> int:
        """Stop sampling; the sum of every process's peak."""
        self.sample()
        self._stop_event.set()
        self.join()
        return sum(self.peaks.values())


# -- one run ----------------------------------------------------------------------------


@dataclass
class Run:
    system: str
    sites: int
    model: str
    rep: int
    status: str = "ok"
    error: str | None = None
    round_seconds: list[float] = field(default_factory=list)
    launch_to_result_s: float = math.nan
    peak_bytes: int = 0
    processes: int = 0
    auc: float = math.nan
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def median_round_s(self) -> float:
        return statistics.median(self.round_seconds) if self.round_seconds else math.nan

    @property
    def later(self) -> bool:
        """Whether it has rounds after the first."""
        return len(self.round_seconds) > 1


def run_peer(
    system: str, problem: Problem, model: str, rounds: int, workdir: Path, run: Run
) -> None:
    """The floor (oncofed's interpreter) or Flower (its own environment) as a subprocess."""
    task, out = workdir / "task.npz", workdir / "weights.npz"
    write_task(task, problem, model, rounds)
    python = sys.executable if system == "floor" else str(FLOWER_PYTHON)
    command = [python, str(PEER_SCRIPT), "--system", system, "--task", str(task), "--out", str(out)]
    log = workdir / f"{system}.log"
    env = {**os.environ, "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    launched = time.time()
    with log.open("wb") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env)
        sampler = TreeSampler([process.pid])
        sampler.start()
        try:
            stdout, _ = process.communicate(timeout=JOB_TIMEOUT_S)
        finally:
            run.peak_bytes = sampler.stop()
            if process.poll() is None:
                kill_tree(process.pid)
    run.processes = len(sampler.peaks)
    if process.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{system} exited {process.returncode}: {' | '.join(tail)}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    run.round_seconds = [float(s) for s in result["round_seconds"]]
    run.launch_to_result_s = float(result["result_at"]) - launched
    run.detail = {
        "import_s": result["imported_at"] - launched,
        "training_began_s": result["training_began_at"] - launched,
    }
    with np.load(out) as data:
        weights = {k: data[k] for k in data.files}
    run.auc = held_out_auc(problem, weights, problem.scaling)


def kill_tree(pid: int) -> None:
    """Kill a process this benchmark started and every process under it (Ray's)."""
    try:
        root = psutil.Process(pid)
        tree = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for process in tree:
        with contextlib.suppress(psutil.Error):
            process.kill()


def write_site_csvs(
    folder: Path, data: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Source]:
    """One CSV per site (features f00..f29 and y) with the mapping file that imports them as
    extension features of the data model, as bench/run.py does."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = [*FEATURES, "y"]
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
    sources = {}
    for site, (x, y) in data.items():
        path = folder / f"{site}.csv"
        fmt = ["%.10g"] * len(FEATURES) + ["%d"]
        np.savetxt(
            path, np.column_stack([x, y]), delimiter=",", header=",".join(columns), comments="",
            fmt=fmt,
        )  # fmt: skip
        sources[site] = Source("csv", str(path), mapping)
    return sources


def oncofed_spec(model: str, sites: int, rounds: int) -> dict[str, Any]:
    return {
        "name": f"peers-{sites}-{model}",
        "project": "bench",
        "dataset": DATASET,
        "features": [f"ext.{name}" for name in FEATURES],
        "outcome": {"type": "binary", "label": "ext.y"},
        "model": MODELS[model].model_dump(mode="json"),
        "strategy": {"name": "fedavg"},
        "rounds": rounds,
        # no clipping (the largest clip norm a spec takes): plain FedAvg, as the peers run it
        "local": {"epochs": EPOCHS, "batch_size": BATCH, "lr": LR, "optimizer": "sgd",
                  "clip_norm": 1e6},
        "evaluation": {"holdout": HOLDOUT, "every": None},  # as the peers: the final model only
        "seed": JOB_SEED,
        "min_sites": sites,
        "round_timeout_s": 600,
    }  # fmt: skip


PUBLIC_DATA_POLICY = {
    "min_cohort_size": 1,
    "min_eval_size": 1,
    "small_cell_threshold": 1,
    "refuse_narrow_differences": False,
    "max_clip_norm": 1e6,
    "max_model_travel": 1e9,
}
"""What every benchmark site's admin sets in its policy for this public data set: sites of
2 or 3 patients (200 sites) take part, and updates are not clipped."""


class PeerFederation(BenchFederation):
    """Set up once (orchestrator state, sites enrolled, data imported, project approved), then
    stopped: ``launch`` starts the processes whose time and memory count."""

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = state.initialise(self.state_dir)
        self.start_orchestrator()
        for site, data in self.site_data.items():
            self.enrol_site(site, data)
        self.approve(self.project)
        self.stop_orchestrator()

    def enrol_site(self, site: str, data: Path) -> None:  # type: ignore[override]
        created = state.add_site(self.state_dir, site)
        home = EdgeHome(self.edge_dir(site))
        enrol(home, self.url, created.enrolment_token)
        policy = yaml.safe_load(home.policy_file.read_text()) or {}
        write_private(
            home.policy_file, yaml.safe_dump(policy | PUBLIC_DATA_POLICY, sort_keys=False)
        )
        shutil.copytree(data, home.datasets, dirs_exist_ok=True)

    def launch(self, groups: list[list[str]]) -> None:
        self.start_orchestrator()
        start_edges(self, groups)

    def check_rows(self, spec: JobSpec, problem: Problem) -> None:
        """Each edge's cohort holds the site's rows in the order the peers were given them, so
        its hold-out split is theirs."""
        for site in problem.sites:
            table = job_table(
                spec, LocalStore(EdgeHome(self.edge_dir(site.name)).datasets).load(DATASET)
            )
            cohort = build_cohort(spec, table)
            if not (np.allclose(cohort.numeric, site.x) and np.array_equal(cohort.label, site.y)):
                raise RuntimeError(f"{site.name}: the edge's rows are not the peers' rows")


def edge_groups(sites: Sequence[str], hosts: int) -> list[list[str]]:
    """One site per edge process up to ``PROCESS_SITES`` sites; beyond, ``hosts`` processes."""
    if len(sites) <= PROCESS_SITES:
        return [[s] for s in sites]
    return [list(sites[i::hosts]) for i in range(min(hosts, len(sites)))]


def start_edges(fed: BenchFederation, groups: list[list[str]]) -> None:
    """Start the edge processes as a consortium runs them: ``oncofed edge run`` with one
    ``--dir`` per site of its group (its sites' agents in threads of one process)."""
    for index, group in enumerate(groups):
        dirs = [arg for site in group for arg in ("--dir", str(fed.edge_dir(site)))]
        name = group[0] if len(group) == 1 else f"host-{index}"
        fed.edges[name] = fed._spawn(
            f"edge-{name}", ["edge", "run", *dirs, "--poll-seconds", "10", *fed.edge_args]
        )


def wait_polling(fed: BenchFederation, since: float, timeout: float = 900.0) -> None:
    """Until the orchestrator has seen every site since ``since`` (unix time), asking it as
    ``oncofed sites`` does, and then until the federation is idle: every edge is done
    starting (identity, data profiles, decisions) and waits in its long poll, as a
    consortium's edges are when a study comes."""
    give_up = time.monotonic() + timeout
    with fed.client() as client:
        while True:
            for name, process in fed.edges.items():
                if process.poll() is not None:
                    raise RuntimeError(f"edge process {name} exited; see {fed.logs}")
            seen = {
                s.name
                for s in client.sites()
                if s.last_seen is not None and _unix(s.last_seen) >= since
            }
            if seen >= set(fed.site_data):
                break
            if time.monotonic() > give_up:
                missing = len(set(fed.site_data) - seen)
                raise RuntimeError(f"{missing} sites not polling after {timeout:.0f}s")
            time.sleep(0.5)
    assert fed.orchestrator is not None
    pids = [fed.orchestrator.pid, *(p.pid for p in fed.edges.values())]
    while (used := cpu_seconds(pids)) is not None:
        time.sleep(QUIET_WINDOW_S)
        after = cpu_seconds(pids)
        if after is None or after - used < QUIET_CPU_S or time.monotonic() > give_up:
            return


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """User plus system CPU seconds of the processes together (None: one has gone)."""
    times = [proc_cpu_seconds(pid) for pid in pids]
    return None if None in times else sum(t for t in times if t is not None)


def _unix(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run_oncofed(
    problem: Problem, model: str, rounds: int, workdir: Path, run: Run, hosts: int, say: Progress
) -> None:
    spec_dict = oncofed_spec(model, len(problem.sites), rounds)
    spec = JobSpec.model_validate(spec_dict)
    # each site's dataset as imported for this K (see make_problem), copied into its edge
    data = {s.name: problem.stores / s.name for s in problem.sites}
    groups = edge_groups(list(data), hosts)
    plan = EdgePlan("hosted", len(groups), 0, 0)
    began = time.monotonic()
    with PeerFederation(workdir / "fed", data, plan, project(spec_dict)) as fed:  # type: ignore[arg-type]
        fed.check_rows(spec, problem)
        setup_s = time.monotonic() - began
        say(f"    set up {len(data)} sites (enrolled, imported, approved) in {setup_s:.0f}s")
        launched = time.time()
        fed.launch(groups)
        assert fed.orchestrator is not None
        orchestrator = fed.orchestrator.pid
        sampler = TreeSampler([orchestrator, *(p.pid for p in fed.edges.values())])
        sampler.start()
        try:
            wait_polling(fed, launched)
            ready_s = time.time() - launched
            edges = [p.pid for p in fed.edges.values()]
            cpu_before = proc_cpu_seconds(orchestrator), cpu_seconds(edges)
            with fed.client() as client:
                job_id = client.submit(spec_dict).id
                follow(fed, job_id, rounds, say)
                cpu_after = proc_cpu_seconds(orchestrator), cpu_seconds(edges)
                job = client.job(job_id)
                if job.status != "completed":
                    raise RuntimeError(f"job {job.status}: {job.error}")
                blob = client.model_bytes(job_id)
            run.launch_to_result_s = time.time() - launched
        finally:
            run.peak_bytes = sampler.stop()
    run.processes = len(sampler.peaks)
    weights = tensors.decode(blob)
    assert job.standardization is not None
    run.auc = held_out_auc(problem, dict(weights), job.standardization)
    run.round_seconds, phases = oncofed_rounds(job)
    run.detail = {
        "setup_s": setup_s,
        "edges_ready_s": ready_s,
        "edge_processes": len(groups),
        "sites_per_process": max(len(g) for g in groups),
        "orchestrator_peak_bytes": sampler.peaks.get(orchestrator),
        **cpu_per_task(cpu_before, cpu_after, tasks_of(fed, job_id)),
        **phases,
        # the AUC its evaluation round reported (of the sites' pooled score histograms)
        "reported_auc": job.rounds[-1].metrics.get("auc") if job.rounds else None,
    }


def tasks_of(fed: BenchFederation, job_id: str) -> int:
    """How many tasks the job handed out, over all its rounds."""
    query = "SELECT count(*) FROM task JOIN round ON task.round_id = round.id WHERE job_id = ?"
    return int(db_query(fed, query, job_id)[0][0])


Times = tuple[float | None, float | None]


def cpu_per_task(before: Times, after: Times, tasks: int) -> dict[str, float]:
    """The orchestrator's CPU seconds per answer and the edges' per task, over the job
    (its statistics and evaluation rounds included)."""
    names = ("orchestrator_cpu_per_answer_s", "edge_cpu_per_task_s")
    return {
        name: (end - start) / tasks
        for name, start, end in zip(names, before, after, strict=True)
        if start is not None and end is not None and tasks
    }


def follow(fed: BenchFederation, job_id: str, rounds: int, say: Progress) -> None:
    """Until the job ends, from the database (costs the orchestrator nothing), every 0.1 s
    from 0.1 s after the submission: a read at once took the cores in round 0."""
    give_up = time.monotonic() + JOB_TIMEOUT_S
    last_said = time.monotonic()
    while True:
        time.sleep(0.1)
        status = db_query(fed, "SELECT status FROM job WHERE id = ?", job_id)
        if status and status[0][0] != "running":
            return
        if time.monotonic() > give_up:
            raise TimeoutError(f"job {job_id} still running after {JOB_TIMEOUT_S:.0f}s")
        if time.monotonic() - last_said > 30:
            last_said = time.monotonic()
            opened = db_query(fed, "SELECT max(number) FROM round WHERE job_id = ?", job_id)
            say(f"    round {opened[0][0]} of {rounds + 1} open")


def oncofed_rounds(job: JobPublic) -> tuple[list[float], dict[str, Any]]:
    """Seconds of each training round (its opening to the next round's), the statistics
    round's and the evaluation round's."""
    rounds = sorted(job.rounds, key=lambda r: r.number)
    opened = [r.opened_at.timestamp() for r in rounds]
    cycles = [b - a for a, b in itertools.pairwise(opened)]
    train = [c for r, c in zip(rounds, cycles, strict=False) if r.kind == "train"]
    stats = [c for r, c in zip(rounds, cycles, strict=False) if r.kind == "stats"]
    last = rounds[-1]
    evaluate = (
        last.closed_at.timestamp() - last.opened_at.timestamp()
        if last.kind == "evaluate" and last.closed_at
        else None
    )
    return train, {"stats_round_s": stats[0] if stats else None, "evaluate_round_s": evaluate}


def run_one(
    system: str, problem: Problem, model: str, rep: int, rounds: int, workdir: Path,
    hosts: int, say: Progress,
) -> Run:  # fmt: skip
    k = len(problem.sites)
    run = Run(system, k, model, rep)
    folder = workdir / f"{system}-{k}-{model}-{rep}"
    folder.mkdir(parents=True)
    try:
        if system == "oncofed":
            run_oncofed(problem, model, rounds, folder, run, hosts, say)
        else:
            run_peer(system, problem, model, rounds, folder, run)
    except Exception as exc:  # report and go on
        run.status, run.error = "error", f"{type(exc).__name__}: {exc}"
    return run


# -- figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One system at one K and model, over its repetitions."""

    system: str
    sites: int
    model: str
    reps: int
    failed: int
    median_round_s: float  # median of the repetitions' medians (over all their rounds)
    min_round_s: float  # over rounds 2.. of every repetition
    max_round_s: float
    first_round_s: float  # median over the repetitions (warm-up: Ray's actors start in it)
    launch_to_result_s: float
    peak_bytes: float
    auc: float
    detail: dict[str, Any]


def cell_of(runs: Sequence[Run]) -> Cell:
    ok = [r for r in runs if r.status == "ok"]
    first = runs[0]

    def med(values: list[float]) -> float:
        values = [v for v in values if v is not None and not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    detail: dict[str, Any] = {}
    for key in sorted({k for r in ok for k, v in r.detail.items() if isinstance(v, int | float)}):
        detail[key] = med([r.detail[key] for r in ok if isinstance(r.detail.get(key), int | float)])
    return Cell(
        system=first.system,
        sites=first.sites,
        model=first.model,
        reps=len(runs),
        failed=len(runs) - len(ok),
        median_round_s=med([r.median_round_s for r in ok]),
        min_round_s=min((min(r.round_seconds[1:]) for r in ok if r.later), default=math.nan),
        max_round_s=max((max(r.round_seconds[1:]) for r in ok if r.later), default=math.nan),
        first_round_s=med([r.round_seconds[0] for r in ok if r.round_seconds]),
        launch_to_result_s=med([r.launch_to_result_s for r in ok]),
        peak_bytes=med([float(r.peak_bytes) for r in ok]),
        auc=med([r.auc for r in ok]),
        detail=detail,
    )


def cells(runs: Sequence[Run]) -> list[Cell]:
    keys: dict[tuple[int, str, str], list[Run]] = {}
    for r in runs:
        keys.setdefault((r.sites, r.model, r.system), []).append(r)
    order = {s: i for i, s in enumerate(SYSTEMS)}
    return [
        cell_of(keys[key])
        for key in sorted(keys, key=lambda k: (k[0], list(MODELS).index(k[1]), order[k[2]]))
    ]


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


@dataclass(frozen=True)
class Summary:
    """oncofed at one K and model, against the others and its target."""

    sites: int
    model: str
    oncofed_round_s: float
    flower_round_s: float
    floor_round_s: float
    target_s: float | None
    passed: bool | None
    stats_round_s: float
    """oncofed's statistics round (round 0), whose target is a training round's time."""

    @property
    def stats_passed(self) -> bool | None:
        """The statistics round no slower than a training round (the median one)."""
        if math.isnan(self.stats_round_s) or math.isnan(self.oncofed_round_s):
            return None
        return self.stats_round_s <= self.oncofed_round_s

    @property
    def vs_flower(self) -> float:
        return ratio(self.oncofed_round_s, self.flower_round_s)

    @property
    def vs_floor(self) -> float:
        return ratio(self.oncofed_round_s, self.floor_round_s)


def summaries(all_cells: Sequence[Cell]) -> list[Summary]:
    by: dict[tuple[int, str], dict[str, Cell]] = {}
    for c in all_cells:
        by.setdefault((c.sites, c.model), {})[c.system] = c
    out = []
    for (k, model), systems in by.items():

        def seconds(name: str, systems: dict[str, Cell] = systems) -> float:
            c = systems.get(name)
            return c.median_round_s if c else math.nan

        target = TARGETS.get(k)
        mine = seconds("oncofed")
        passed = None if target is None or math.isnan(mine) else mine <= target
        detail = systems["oncofed"].detail if "oncofed" in systems else {}
        stats = nan(detail.get("stats_round_s"))
        out.append(
            Summary(k, model, mine, seconds("flower"), seconds("floor"), target, passed, stats)
        )
    return out


def _s(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _x(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}x"


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("met" if passed else "NOT met")


def cell_table(group: Sequence[Cell], rounds: int) -> Table:
    first = group[0]
    table = Table(
        title=f"{first.sites} sites, {first.model} ({rounds} rounds, {first.reps} reps)",
        box=box.SIMPLE,
        title_justify="left",
    )
    for name in ("system", "s/round", "range", "1st", "launch→end", "peak mem", "AUC"):
        table.add_column(name, justify="left" if name == "system" else "right")
    mine = next((c for c in group if c.system == "oncofed" and c.detail), None)
    if mine is not None:
        table.caption = f"oncofed: {oncofed_apart(mine.detail)}"
        table.caption_justify = "left"
    for c in group:
        failed = f" ({c.failed} failed)" if c.failed else ""
        table.add_row(
            c.system + failed,
            _s(c.median_round_s),
            f"{_s(c.min_round_s)}-{_s(c.max_round_s)}",
            _s(c.first_round_s),
            _s(c.launch_to_result_s),
            "-" if math.isnan(c.peak_bytes) else f"{c.peak_bytes / MIB:,.0f} MiB",
            "-" if math.isnan(c.auc) else f"{c.auc:.4f}",
        )
    return table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{1000 * seconds:.1f} ms"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f} MiB"


def oncofed_apart(detail: dict[str, Any]) -> str:
    """oncofed's figures outside its training rounds."""

    def get(key: str) -> str:
        value = detail.get(key)
        return "-" if value is None else _s(float(value))

    return (
        f"round 0 (statistics) {get('stats_round_s')}, evaluation round "
        f"{get('evaluate_round_s')}; edges polling {get('edges_ready_s')} after launch; "
        f"sites set up (enrolled, imported, approved) beforehand in {get('setup_s')}; "
        f"orchestrator's peak {_mib(detail.get('orchestrator_peak_bytes'))}; CPU "
        f"{_ms(detail.get('orchestrator_cpu_per_answer_s'))} per answer at the orchestrator, "
        f"{_ms(detail.get('edge_cpu_per_task_s'))} per task at the edges"
    )


def _verdicts(title: str, names: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A table of figures against a target: every column right-aligned but the model's and the
    verdict's."""
    table = Table(title=title, box=box.SIMPLE, title_justify="left")
    for name in names:
        table.add_column(name, justify="left" if name in ("model", "verdict") else "right")
    for row in rows:
        table.add_row(*row)
    return table


def summary_table(rows: Sequence[Summary]) -> Table:
    return _verdicts(
        "oncofed's seconds per round",
        ("sites", "model", "oncofed", "/Flower", "/floor", "target", "verdict"),
        (
            (
                str(s.sites),
                s.model,
                _s(s.oncofed_round_s),
                _x(s.vs_flower),
                _x(s.vs_floor),
                "-" if s.target_s is None else f"≤{_s(s.target_s)}",
                _verdict(s.passed),
            )
            for s in rows
        ),
    )


def stats_table(rows: Sequence[Summary]) -> Table:
    return _verdicts(
        "round 0 (statistics): no slower than a training round",
        ("sites", "model", "round 0", "training round", "verdict"),
        (
            (
                str(s.sites),
                s.model,
                _s(s.stats_round_s),
                _s(s.oncofed_round_s),
                _verdict(s.stats_passed),
            )
            for s in rows
        ),
    )


def markdown(document: dict[str, Any]) -> str:
    """The results file's figures as the README's markdown table."""
    settings, machine = document["settings"], document["machine"]
    lines = [
        f"Measured {document['generated_at'][:10]} on {machine['nproc']} cores "
        f"({machine['cpu_model']}), {machine['ram_bytes'] / (1 << 30):.0f} GiB RAM: "
        f"sites {', '.join(map(str, settings['sites']))}; models "
        f"{', '.join(settings['models'])}; {settings['rounds']} rounds; "
        f"{settings['reps']} repetition(s) each (medians). s/round: median over the "
        "training rounds, range over rounds 2.. (the 1st, with each system's warm-up, apart)."
        + _speed(machine.get("loop_10m_cpu_s")),
        "",
        "| sites | model | system | s/round (range) | 1st round | launch→result | peak memory "
        "| AUC |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in document["cells"]:
        lines.append(
            f"| {c['sites']} | {c['model']} | {c['system']} | "
            f"{_s(nan(c['median_round_s']))} ({_s(nan(c['min_round_s']))}-"
            f"{_s(nan(c['max_round_s']))}) | {_s(nan(c['first_round_s']))} | "
            f"{_s(nan(c['launch_to_result_s']))} | "
            f"{nan(c['peak_bytes']) / MIB:,.0f} MiB | {nan(c['auc']):.3f} |"
        )
    lines += [
        "",
        "| sites | model | oncofed: round 0 (statistics) | evaluation round | edges polling "
        "after launch | sites set up beforehand | orchestrator's peak memory | CPU per answer "
        "(orchestrator) | CPU per task (edges) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in document["cells"]:
        if c["system"] == "oncofed" and c["detail"]:
            d = c["detail"]
            lines.append(
                f"| {c['sites']} | {c['model']} | {_s(nan(d.get('stats_round_s')))} | "
                f"{_s(nan(d.get('evaluate_round_s')))} | {_s(nan(d.get('edges_ready_s')))} | "
                f"{_s(nan(d.get('setup_s')))} | {_mib(d.get('orchestrator_peak_bytes'))} | "
                f"{_ms(d.get('orchestrator_cpu_per_answer_s'))} | "
                f"{_ms(d.get('edge_cpu_per_task_s'))} |"
            )
    lines += [
        "",
        "| sites | model | oncofed s/round | ÷ Flower | ÷ floor | target | verdict "
        "| round 0 (statistics) | no slower than a training round |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for s in document["summary"]:
        target = "-" if s["target_s"] is None else f"≤ {_s(s['target_s'])}"
        lines.append(
            f"| {s['sites']} | {s['model']} | {_s(nan(s['oncofed_round_s']))} | "
            f"{_x(nan(s['vs_flower']))} | {_x(nan(s['vs_floor']))} | {target} | "
            f"{_verdict(s['passed'])} | {_s(nan(s.get('stats_round_s')))} | "
            f"{_verdict(s.get('stats_passed'))} |"
        )
    return "\n".join(lines)


def _speed(loops: Sequence[float] | None) -> str:
    """How fast the machine ran Python during the runs (none recorded: nothing)."""
    return " " + speed_said(loops, "before the runs and after each") if loops else ""


def nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def cpu_model() -> str:
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def write_results(
    path: Path,
    args: argparse.Namespace,
    runs: Sequence[Run],
    total_s: float,
    loops: Sequence[float],
) -> dict[str, Any]:
    """The results file (``loops``: ``loop_seconds`` before the runs and after each)."""
    all_cells = cells(runs)
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_seconds": round(total_s, 1),
        "machine": {
            **machine_info(),
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "loop_10m_cpu_s": list(loops),
        },
        "flower": flower_version(),
        "settings": {
            "sites": args.sites,
            "models": args.models,
            "systems": args.systems,
            "reps": args.reps,
            "rounds": args.rounds,
            "local": {"epochs": EPOCHS, "lr": LR, "batch_size": BATCH, "optimizer": "sgd"},
            "holdout": HOLDOUT,
            "seed": JOB_SEED,
            "hosts": args.hosts,
            "process_sites": PROCESS_SITES,
            "parameters": {m: parameter_count(MODELS[m], len(FEATURES)) for m in args.models},
        },
        "definitions": {
            "round_seconds": "floor: one round of the loop; flower: from one round's end (the "
            "strategy's evaluate_fn) to the next; oncofed: a training round's opened_at to the "
            "next round's (its statistics round 0 and evaluation round apart, in detail)",
            "launch_to_result_s": "the system's processes launched to the final weights in "
            "hand (oncofed: orchestrator and edges started, edges ready, job submitted, run, "
            "completed with its evaluation round, model downloaded; its sites' enrolment and "
            "import before that are detail.setup_s)",
            "peak_bytes": "sum of the VmHWM of every process in the system's process trees "
            f"(walked every {SAMPLE_PERIOD_S}s): floor one process; flower the script and "
            "Ray's processes; oncofed the orchestrator and the edge processes",
            "auc": "the final weights scored here on the pooled held-out rows of all sites "
            "(oncofed with the standardisation its round 0 pooled)",
            "cells": "per system, sites and model: medians over the repetitions (per-round: "
            "median of the repetitions' medians over all their training rounds; range over "
            "rounds 2.. of every repetition; the first round, with the warm-up, apart)",
        },
        "targets_s": TARGETS,
        "cells": [asdict(c) for c in all_cells],
        "summary": [
            asdict(s)
            | {"vs_flower": s.vs_flower, "vs_floor": s.vs_floor, "stats_passed": s.stats_passed}
            for s in summaries(all_cells)
        ],
        "runs": [asdict(r) | {"median_round_s": r.median_round_s} for r in runs],
    }
    document = json_safe(document)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    return document


def flower_version() -> str | None:
    if not FLOWER_PYTHON.exists():
        return None
    done = subprocess.run(
        [str(FLOWER_PYTHON), "-c", "import flwr; print(flwr.__version__)"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or None


# -- main -------------------------------------------------------------------------------


def estimate_s(system: str, k: int, model: str, rounds: int) -> float:
    """A rough guess of one run's seconds on 2 cores (from runs here), for progress lines."""
    heavy = 1.5 if model == "mlp" else 1.0
    if system == "floor":
        return 3 + rounds * k * 0.0008 * heavy
    if system == "flower":
        return 12 + 0.3 * k * heavy + rounds * (0.05 + 0.011 * k * heavy)
    return 25 + 0.95 * k + rounds * (0.05 + 0.026 * k * heavy)


def csv_list(kind: Callable[[str], Any], allowed: Sequence[Any] | None = None) -> Any:
    def parse(text: str) -> list[Any]:
        values = [kind(v) for v in text.split(",") if v]
        if allowed is not None and any(v not in allowed for v in values):
            raise argparse.ArgumentTypeError(f"choose from {', '.join(map(str, allowed))}")
        return values

    return parse


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=csv_list(int), default=[4, 50, 200])
    parser.add_argument("--models", type=csv_list(str, list(MODELS)), default=list(MODELS))
    parser.add_argument("--systems", type=csv_list(str, SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--hosts",
        type=int,
        default=max(2, os.cpu_count() or 2),
        help=f"Edge processes hosting the sites' agents beyond {PROCESS_SITES} sites.",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file.")
    parser.add_argument("--keep", action="store_true", help="Keep the working directories.")
    parser.add_argument(
        "--markdown", action="store_true", help="Print the results file as markdown; run nothing."
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.markdown:
        print(markdown(json.loads(args.output.read_text())))
        return 0
    if not FLOWER_PYTHON.exists():
        print(f"{FLOWER_PYTHON} is missing: `make bench-peers` creates it", file=sys.stderr)
        return 2
    console = Console()
    errors = Console(stderr=True)
    began = time.monotonic()
    # stopped (kill, a job's time limit): unwind, so each federation stops its processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    def say(line: str) -> None:
        errors.print(f"[dim]{time.monotonic() - began:6.0f}s[/] {line}", highlight=False)

    plan = [
        (system, k, model, rep)
        for k in args.sites
        for model in args.models
        for system in args.systems
        for rep in range(1, args.reps + 1)
    ]
    guess = sum(estimate_s(s, k, m, args.rounds) for s, k, m, _ in plan)
    say(f"{len(plan)} runs, roughly {guess / 60:.0f} min on 2 cores; results in {args.output}")
    workdir = Path(tempfile.mkdtemp(prefix="oncofed-peers-"))
    runs: list[Run] = []
    loops = [loop_seconds()]  # this machine's speed, before the runs and after each
    spent = 0.0
    try:
        x, y = load_data(workdir)
        problems: dict[int, Problem] = {}
        for index, (system, k, model, rep) in enumerate(plan, 1):
            if k not in problems:
                say(f"dealing the rows to {k} sites and importing them")
                problems[k] = make_problem(x, y, k, workdir / f"sites-{k}")
            say(f"[{index}/{len(plan)}] {system}, {k} sites, {model}, rep {rep}")
            started = time.monotonic()
            run = run_one(system, problems[k], model, rep, args.rounds, workdir, args.hosts, say)
            runs.append(run)
            took = time.monotonic() - started
            loops.append(loop_seconds())
            spent += took
            done_guess = sum(estimate_s(s, kk, m, args.rounds) for s, kk, m, _ in plan[:index])
            left = spent / max(done_guess, 1e-9) * (guess - done_guess)
            outcome = (
                f"{_s(run.median_round_s)}/round, launch→result {_s(run.launch_to_result_s)}, "
                f"{run.peak_bytes / MIB:,.0f} MiB, AUC {run.auc:.4f}"
                if run.status == "ok"
                else f"[red]{run.error}[/]"
            )
            say(f"    {outcome} ({took:.0f}s; ~{left / 60:.0f} min left)")
            write_results(args.output, args, runs, time.monotonic() - began, loops)
    finally:
        if args.keep:
            say(f"working directories kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document = write_results(args.output, args, runs, time.monotonic() - began, loops)
    all_cells = cells(runs)
    for k in args.sites:
        for model in args.models:
            group = [c for c in all_cells if c.sites == k and c.model == model]
            if group:
                console.print(cell_table(group, args.rounds))
                console.print()
    console.print(summary_table(summaries(all_cells)))
    console.print(stats_table(summaries(all_cells)))
    console.print(
        "s/round: median over the training rounds (of the repetitions' medians); range over "
        "rounds 2.. (the 1st, with each system's warm-up, apart); launch→end: processes "
        "launched to the final model in hand (oncofed's round 0 and evaluation round "
        "included; their times are under its tables)." + _speed(loops)
    )
    console.print(f"total {document['total_seconds']:.0f}s; results in {args.output}")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
