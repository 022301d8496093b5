"""A whole federation on this machine: one orchestrator and N edges, each a separate OS process
talking HTTP on 127.0.0.1 (or HTTPS with mutual TLS, as a consortium runs: ``tls=True``). Used by
the demo, the integration tests and the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx
import yaml

from oncofed._files import write_private
from oncofed.client import Client
from oncofed.demo.data import demo_project
from oncofed.edge import EdgeHome
from oncofed.edge.enrol import enrol
from oncofed.edge.governance import decide_project
from oncofed.edge.importing import Source
from oncofed.orchestrator import pki
from oncofed.orchestrator import setup as state
from oncofed.privacy.secagg import fingerprint, public_bytes
from oncofed.wire.projects import NewProject

DATASET = "gbsg2"
"""The dataset name the demo, tests and benchmark import each site's data under."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalFederation:
    """``with LocalFederation(root, {"site-a": Source(...), ...}) as fed: fed.client()...``.

    Each site's data is imported by that edge's own ``oncofed edge import`` process. With
    ``tls``, the orchestrator serves HTTPS from its consortium CA, edges enrol with the CA's
    certificate and present their own, and the client pins the CA."""

    def __init__(
        self,
        root: Path,
        site_data: Mapping[str, Source],
        *,
        dataset: str = DATASET,
        edge_args: Sequence[str] = (),
        orchestrator_env: Mapping[str, str] | None = None,
        log_level: str = "warning",
        tls: bool = False,
        project: NewProject | None = None,
    ) -> None:
        self.root = root
        self.site_data = dict(site_data)
        self.dataset = dataset
        self.edge_args = list(edge_args)
        self.orchestrator_env = dict(orchestrator_env or {})
        self.log_level = log_level
        self.port = free_port()
        self.tls = tls
        self.project = project or demo_project()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.token = ""
        self.orchestrator: subprocess.Popen[bytes] | None = None
        self.edges: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def state_dir(self) -> Path:
        return self.root / "orchestrator"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ca(self) -> Path | None:
        """The consortium CA's certificate, when serving TLS."""
        return pki.Paths.of(self.state_dir).ca_cert if self.tls else None

    def edge_dir(self, site: str) -> Path:
        return self.root / "edges" / site

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = state.initialise(self.state_dir)
        self.start_orchestrator()
        for site in self.site_data:
            created = state.add_site(self.state_dir, site)
            enrol(EdgeHome(self.edge_dir(site)), self.url, created.enrolment_token, self.ca)
        self.pin_peers()
        self.import_data()
        self.approve(self.project)
        for site in self.site_data:
            self.start_edge(site)

    def pin_peers(self) -> None:
        """Every site lists the others' identity keys in its policy as ``trusted_peers``, as
        the sites' admins do once they have compared fingerprints (``oncofed edge identity``):
        no one can join a secure round as a peer, and a differentially private analysis's noise
        is spread over the sites (``EdgePolicy.noise_split``)."""
        homes = {site: EdgeHome(self.edge_dir(site)) for site in self.site_data}
        keys = {site: fingerprint(public_bytes(home.identity())) for site, home in homes.items()}
        for site, home in homes.items():
            policy = yaml.safe_load(home.policy_file.read_text())
            policy["trusted_peers"] = {peer: key for peer, key in keys.items() if peer != site}
            write_private(home.policy_file, yaml.safe_dump(policy, sort_keys=False))

    def approve(self, project: NewProject) -> None:
        """Declare ``project`` (as the operator) and approve it at every site, on the
        federation's dataset, as each site's admin does with ``oncofed edge approve``."""
        with self.client() as api:
            api.create_project(project)
        for site in self.site_data:
            decide_project(EdgeHome(self.edge_dir(site)), project.name, dataset=self.dataset)

    def import_data(self) -> None:
        """Every edge imports its hospital's export, all at once, as separate processes."""
        imports = {site: self.start_import(site, source) for site, source in self.site_data.items()}
        for site, process in imports.items():
            if process.wait() != 0:
                raise RuntimeError(
                    f"import at {site} failed; see {self.logs / f'import-{site}.log'}"
                )

    def start_import(self, site: str, source: Source) -> subprocess.Popen[bytes]:
        mapping = [] if source.mapping is None else ["--mapping", str(source.mapping)]
        return self._spawn(
            f"import-{site}",
            ["edge", "import", source.location, "--dir", str(self.edge_dir(site)),
             "--name", self.dataset, "--from", source.format, *mapping],
        )  # fmt: skip

    def start_orchestrator(self) -> None:
        """Start (or restart) the orchestrator process on the same port and state."""
        self.orchestrator = self._spawn(
            "orchestrator",
            [
                "orchestrator",
                "serve",
                "--dir",
                str(self.state_dir),
                "--port",
                str(self.port),
                "--log-level",
                self.log_level,
                *([] if self.tls else ["--plain-http"]),
            ],
            env=self.orchestrator_env,
        )
        self._wait_healthy()

    def start_edge(self, site: str) -> subprocess.Popen[bytes]:
        self.edges[site] = self._spawn(
            f"edge-{site}",
            [
                "edge",
                "run",
                "--dir",
                str(self.edge_dir(site)),
                "--poll-seconds",
                "10",
                *self.edge_args,
            ],
        )
        return self.edges[site]

    def client(self) -> Client:
        return Client(self.url, self.token, ca=self.ca)

    def stop_orchestrator(self) -> None:
        if self.orchestrator is not None:
            _terminate(self.orchestrator)
            self.orchestrator = None

    def stop(self) -> None:
        for process in self.edges.values():
            process.send_signal(signal.SIGTERM)
        for process in self.edges.values():
            _terminate(process)
        self.stop_orchestrator()

    def _spawn(
        self, name: str, args: list[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own copy
            return subprocess.Popen(
                [sys.executable, "-m", "oncofed", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "160", **(env or {})},
            )

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        give_up = time.monotonic() + timeout
        verify = ssl.create_default_context(cafile=self.ca) if self.ca else True
        while time.monotonic() < give_up:
            assert self.orchestrator is not None
            if self.orchestrator.poll() is not None:
                raise RuntimeError(f"orchestrator exited; see {self.logs / 'orchestrator.log'}")
            try:
                health = httpx.get(f"{self.url}/v1/health", timeout=2, verify=verify)
                if health.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"orchestrator not healthy after {timeout}s")


def _terminate(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
