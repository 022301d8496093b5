"""Several sites served by one edge process against a real orchestrator process: every site
answers, a site whose policy breaks declines while the others answer, each site's egress log
and ledger hold only its own tasks, and the edge never imports torch where its sites' policies
allow analyses only (where they allow training, it imports torch before it polls) nor any
module of the server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from oncofed.client import Client
from oncofed.demo.data import (
    PROJECT,
    demo_analyses,
    demo_project,
    demo_specs,
    site_tables,
    write_exports,
)
from oncofed.demo.federation import LocalFederation
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import JobPublic
from oncofed.wire.projects import NewProject, covering

pytestmark = pytest.mark.slow
SITES = ("north", "south", "east")
SERVER = ("fastapi", "starlette", "uvicorn", "oncofed.orchestrator")
"""Modules of the server (and theirs) that an edge must never import."""
MODULES_FILE = "ONCOFED_TEST_MODULES"
DUMP = f"""
import atexit, gc, json, os, sys
def _dump():
    with open(os.environ[{MODULES_FILE!r}], "w") as out:
        json.dump({{"modules": sorted(sys.modules), "frozen": gc.get_freeze_count()}}, out)
atexit.register(_dump)
"""
CLI = DUMP + "from oncofed.cli.main import app\napp(prog_name='oncofed')\n"
"""``oncofed ...`` that writes, as it exits, the names of the modules it imported and how many
objects its garbage collector had frozen."""
HOST = (
    DUMP
    + """
import signal, threading
from pathlib import Path
from oncofed.edge import EdgeHome
from oncofed.edge.host import EdgeHost
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
host = EdgeHost([EdgeHome(Path(d)) for d in sys.argv[1:]], poll_seconds=5)
for agent in host.open():
    print("polling as", agent.site, flush=True)
host.run(stop)
"""
)
"""The multi-site host alone, without the CLI, writing its modules as it exits."""


def analysis(name: str, analysis: dict[str, Any], **more: Any) -> AnalysisSpec:
    spec = {"kind": "analysis", "name": name, "project": PROJECT, "dataset": "gbsg2"}
    return AnalysisSpec.model_validate({**spec, "analysis": analysis, **more})


SURVIVAL = {"time": "rfs_days", "event": "rfs_event"}
KAPLAN_MEIER, COX, _ = demo_analyses()  # by grade; stratified by site, secure
ANALYSES = [
    analysis("counts", {"type": "counts", "rows": "treatment.endocrine"}),
    analysis(
        "summary", {"type": "summary", "variable": "age_at_diagnosis", "bins": [30, 45, 60, 75]}
    ),
    KAPLAN_MEIER,
    COX,
    analysis(
        "logistic",
        {
            "type": "logistic",
            "outcome": {**SURVIVAL, "horizon_days": 1825},
            "covariates": ["age_at_diagnosis", {"name": "tumour_size_mm", "transform": "log1p"}],
        },
    ),
]
TRAINING = demo_specs()[1].model_copy(update={"rounds": 1})


class Federation(LocalFederation):
    """Sites enrolled, their data imported, the project approved; the tests start the edge."""

    def start_edge(self, site: str) -> subprocess.Popen[bytes]:
        done = subprocess.Popen(["true"])  # stands for no edge: the tests run their own
        done.wait()
        return done


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("hosted")
    tables = {site: site_tables()[site] for site in SITES}
    study = NewProject(
        **demo_project().model_dump(exclude={"scope"}), scope=covering([*ANALYSES, TRAINING])
    )
    with Federation(root, write_exports(root / "exports", tables), project=study) as fed:
        yield fed


@pytest.fixture
def client(federation: Federation) -> Iterator[Client]:
    """A client; the edge processes a test started are ended with it, whatever happened."""
    with federation.client() as api:
        yield api
    while Edge.started:
        process = Edge.started.pop().process
        if process.poll() is None:
            process.kill()
        process.wait()


class Edge:
    """One edge process serving every site, its output in ``log``."""

    started: list[Edge] = []

    def __init__(
        self, federation: Federation, script: str, args: list[str], sites: int = len(SITES)
    ) -> None:
        self.log = federation.logs / f"hosted-{time.monotonic_ns()}.log"
        self.modules_file = self.log.with_suffix(".modules.json")
        env = {**os.environ, MODULES_FILE: str(self.modules_file), "COLUMNS": "200"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", script, *args], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        Edge.started.append(self)
        self.wait_for("polling", sites)
        self.frozen = 0
        """Objects the garbage collector had frozen as the process ended (``stop``)."""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, said: str, times: int = 1, timeout: float = 60) -> None:
        give_up = time.monotonic() + timeout
        while self.text().count(said) < times:
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < give_up, self.text()
            time.sleep(0.1)

    def stop(self) -> set[str]:
        """SIGTERM, as a service manager stops it; the modules it had imported."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(15) == 0, self.text()
        assert time.monotonic() - began < 10  # a long poll of 5 s at most, then 2 s of grace
        dump = json.loads(self.modules_file.read_text())
        self.frozen = dump["frozen"]
        return set(dump["modules"])


def serve_cli(federation: Federation, *extra: str) -> Edge:
    dirs = [arg for site in SITES for arg in ("--dir", str(federation.edge_dir(site)))]
    args = ["edge", "run", *dirs, "--poll-seconds", "5", "--log-level", "info", *extra]
    return Edge(federation, CLI, args)


def run_all(client: Client, specs: list[Any]) -> list[JobPublic]:
    ids = [client.submit(spec).id for spec in specs]
    return [client.wait(job_id, timeout=120) for job_id in ids]


def imported(names: set[str], *roots: str) -> set[str]:
    return {name for name in names if name.split(".")[0] in roots or name.startswith(roots)}


def cli_alone() -> set[str]:
    """The server's modules the CLI itself imports before any command runs (none, once its
    start-up is light; the edge must add none)."""
    probe = "import json, sys; import oncofed.cli.main; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True, text=True)
    return imported(set(json.loads(out.stdout)), *SERVER)


def tasks_in_egress(home: Path) -> set[str]:
    lines = (home / "egress.jsonl").read_text().splitlines()
    return {entry["task"] for entry in map(json.loads, lines) if "task" in entry}


def ledger(home: Path, query: str) -> set[str]:
    with sqlite3.connect(home / "ledger.db") as db:
        found = {row[0] for row in db.execute(query)}
    db.close()
    return found


@contextlib.contextmanager
def analyses_only(federation: Federation) -> Iterator[None]:
    """Every site's policy allows analyses only, for the block."""
    policies = {site: federation.edge_dir(site) / "policy.yaml" for site in SITES}
    texts = {site: path.read_text() for site, path in policies.items()}
    for site, path in policies.items():
        path.write_text(
            yaml.safe_dump({**yaml.safe_load(texts[site]), "allowed_tasks": ["analysis"]})
        )
    try:
        yield
    finally:
        for site, path in policies.items():
            path.write_text(texts[site])


def test_one_process_serves_every_site_in_isolation(federation: Federation, client: Client) -> None:
    with analyses_only(federation):
        serve_and_check(federation, client)


def serve_and_check(federation: Federation, client: Client) -> None:
    edge = serve_cli(federation)
    jobs = run_all(client, ANALYSES)
    for job in jobs:
        assert job.status == "completed", (job.name, job.error)
        for site in SITES:
            status = job.participation.sites[site]
            assert status.state == "took_part", (job.name, site, status.reason)
    # A site's policy breaks: it declines with the reason; the other sites answer.
    east = federation.edge_dir("east") / "policy.yaml"
    policy = east.read_text()
    east.write_text(policy + "\nmin_cohort_size: [not a number\n")
    try:
        [job] = run_all(client, ANALYSES[:1])
    finally:
        east.write_text(policy)
    assert job.status == "completed", job.error
    states = {site: status.state for site, status in job.participation.sites.items()}
    assert states == {"north": "took_part", "south": "took_part", "east": "declined"}
    assert "policy.yaml" in job.participation.sites["east"].reason
    modules = edge.stop()
    log = edge.text()
    for site in SITES:  # each agent's lines say whose they are
        assert f"site {site}: task " in log
    assert "site east: " in log and "declines every task until it is fixed" in log
    # Isolation: a site's egress log and ledger hold its own tasks only (every task its
    # ledger ran was answered in its egress log; none another site's), and its audit log
    # names no other site.
    sent: dict[str, set[str]] = {}
    for site in SITES:
        home = federation.edge_dir(site)
        sent[site] = tasks_in_egress(home)
        assert ledger(home, "SELECT id FROM task") <= sent[site]
        assert len(sent[site]) >= len(ANALYSES) + 1
        assert ledger(home, "SELECT DISTINCT site FROM audit_entry") == {site}
    assert not (sent["north"] & sent["south"]) and not (sent["south"] & sent["east"])
    assert not (sent["north"] & sent["east"])
    # Analyses import no torch; the CLI's own start aside, no module of the server.
    assert imported(modules, "torch", "opacus") == set()
    assert imported(modules, *SERVER) <= cli_alone()
    # The process rehearsed statistics tasks before its sites polled, and its scratch site
    # said nothing else in the site admins' log.
    assert "Rehearsed 3 statistics tasks of a scratch site (nothing sent)." in log
    assert "rehearsal" not in log


def test_a_site_allowed_to_train_imports_torch_as_it_starts(
    federation: Federation, client: Client
) -> None:
    """Before any task (a training job's first round then costs what its later ones do, and
    its statistics round shares no CPU with torch's imports); training then runs."""
    assert "torch" in serve_cli(federation).stop()
    edge = serve_cli(federation, "--threads", "2")
    [job] = run_all(client, [TRAINING])
    assert job.status == "completed", job.error
    assert sorted(job.rounds[-1].sites) == sorted(SITES)
    assert "torch" in edge.stop()
    assert edge.frozen > 0  # the collector was settled once the sites had started


def test_a_single_site_edge_settles_its_collector_once_started(federation: Federation) -> None:
    """What a site holds for as long as it runs (torch, its data, its statements) is frozen,
    never scanned again by the garbage collector (``oncofed._memory.frozen_at_start``)."""
    args = ["edge", "run", "--dir", str(federation.edge_dir("north")), "--poll-seconds", "5"]
    edge = Edge(federation, CLI, args, sites=1)
    edge.wait_for("ready: waiting for tasks", timeout=30)
    assert "torch" in edge.stop()
    assert edge.frozen > 0


def test_the_edge_imports_no_server_module(federation: Federation, client: Client) -> None:
    """The host alone (as the CLI runs it, without the CLI's own modules): an analysis's
    rounds, and the agents' loop, import neither torch nor the server."""
    with analyses_only(federation):
        edge = Edge(federation, HOST, [str(federation.edge_dir(site)) for site in SITES])
        for job in run_all(client, [ANALYSES[0], COX, ANALYSES[-1]]):
            assert job.status == "completed", (job.name, job.error)
        modules = edge.stop()
    assert "oncofed.edge.agent" in modules and "oncofed.analytics.site" in modules
    assert imported(modules, "torch", "opacus", *SERVER) == set()
