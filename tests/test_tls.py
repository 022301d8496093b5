"""The orchestrator over HTTPS with mutual TLS (uvicorn in a thread on 127.0.0.1): edges enrol
with a certificate request and present their certificate, clients pin the consortium CA, a
revoked certificate stops at once, and plain HTTP needs loopback or ``--insecure``."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256
from fastapi import FastAPI
from typer.testing import CliRunner

from oncofed.cli.main import app as cli
from oncofed.client import Client, ClientError
from oncofed.demo.federation import free_port
from oncofed.edge import EdgeHome
from oncofed.edge.agent import Agent
from oncofed.edge.enrol import enrol
from oncofed.orchestrator import Settings, create_app, identity, pki, tls
from oncofed.orchestrator.setup import initialise, transaction
from oncofed.wire.messages import API_PREFIX, EnrolRequest


@dataclass
class Served:
    home: Path
    url: str
    token: str  # the operator's
    app: FastAPI

    @property
    def ca(self) -> Path:
        return pki.Paths.of(self.home).ca_cert

    def site(self, root: Path, name: str) -> EdgeHome:
        """A site added by the operator and enrolled by its edge, with the CA file."""
        with transaction(self.home) as session:
            token = identity.create_site(session, name).enrolment_token
        home = EdgeHome(root / name)
        enrol(home, self.url, token, self.ca)
        return home


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """``serve``'s app and TLS options, in a thread. Site certificates last 90 s (and 5
    minutes backdated): each is due for renewal as soon as it is issued."""
    monkeypatch.delenv("ONCOFED_CA", raising=False)
    monkeypatch.setenv("ONCOFED_SITE_CERTIFICATE_DAYS", str(90 / 86400))
    home = tmp_path / "orchestrator"
    token = initialise(home)
    app = create_app(Settings.load(home))
    options = tls.mutual_tls(app, home)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **options)
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    give_up = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < give_up:
        time.sleep(0.01)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(home, f"https://127.0.0.1:{port}", token, app)
    finally:
        server.should_exit = True
        thread.join(30)


def poll(http: httpx.Client) -> httpx.Response:
    return http.get("/tasks/next", params={"wait": 0})


def test_an_enrolled_edge_works_over_mutual_tls_and_renews_its_certificate(
    served: Served, tmp_path: Path
) -> None:
    edge = served.site(tmp_path, "alpha")
    assert stat.S_IMODE(edge.certificate_file.stat().st_mode) == 0o600
    assert edge.ca_file.read_bytes() == served.ca.read_bytes()
    with edge.orchestrator_client() as http:
        assert poll(http).status_code == 204
        assert http.get("/identity").status_code == 200
    first = edge.certificate_file.read_bytes()
    agent = Agent(edge, poll_seconds=0.2)
    stop = threading.Event()
    running = threading.Thread(target=agent.run, args=(stop,))
    running.start()
    try:
        give_up = time.monotonic() + 30
        while edge.certificate_file.read_bytes() == first and time.monotonic() < give_up:
            time.sleep(0.05)
    finally:
        stop.set()
        running.join(30)
        agent.close()
    assert edge.certificate_file.read_bytes() != first, "the edge did not renew"
    with transaction(served.home) as session:
        rows = pki.certificates(session, pki.site_named(session, "alpha").id)
        assert len(rows) >= 2 and all(r.revoked_at is None for r in rows)
    with edge.orchestrator_client() as http:  # the renewed certificate is accepted
        assert poll(http).status_code == 204


def test_a_client_pins_the_consortium_ca(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the CA, the orchestrator's certificate verifies against nothing the client
    trusts; with it (argument or ``ONCOFED_CA``), the client works."""
    with pytest.raises(ClientError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(served.url, served.token).health()
    elsewhere = pki.Paths(served.home / "elsewhere")
    pki.create_ca(elsewhere)  # another consortium's CA
    with pytest.raises(ClientError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(served.url, served.token, ca=elsewhere.ca_cert).health()
    with Client(served.url, served.token, ca=served.ca) as api:
        assert api.sites() == []
    monkeypatch.setenv("ONCOFED_CA", str(served.ca))
    with Client(served.url, served.token) as api:
        assert api.health()["status"] == "ok"


def test_the_cli_shows_the_ca_pins_it_and_enrols_with_it(served: Served, tmp_path: Path) -> None:
    """``orchestrator ca`` prints the PEM (standard output) and its fingerprint (standard
    error); ``edge init --ca`` shows the same fingerprint; ``oncofed --ca`` pins it."""
    runner, env = CliRunner(), {"COLUMNS": "80"}
    digest = x509.load_pem_x509_certificate(served.ca.read_bytes()).fingerprint(SHA256())
    halves = [digest.hex(":").upper()[:47], digest.hex(":").upper()[48:]]
    shown = runner.invoke(cli, ["orchestrator", "ca", "--dir", str(served.home)], env=env)
    assert shown.exit_code == 0 and shown.stdout == served.ca.read_text()
    assert all(half in shown.stderr for half in halves)
    with transaction(served.home) as session:
        token = identity.create_site(session, "gamma").enrolment_token
    edge = tmp_path / "gamma"
    args = ["edge", "init", "--dir", str(edge), "--orchestrator", served.url, "--token", token]
    missing = runner.invoke(cli, args, env=env)
    assert missing.exit_code == 1 and "--ca FILE" in missing.output
    enrolled = runner.invoke(cli, [*args, "--ca", str(served.ca)], env=env)
    assert enrolled.exit_code == 0, enrolled.output
    assert all(half in enrolled.output for half in halves)
    assert EdgeHome(edge).certificate_file.exists()
    api = ["site", "list", "--url", served.url, "--token", served.token]
    listed = runner.invoke(cli, ["--ca", str(served.ca), *api], env=env)
    assert listed.exit_code == 0 and "gamma" in listed.output, listed.output
    unpinned = runner.invoke(cli, api, env=env)
    assert unpinned.exit_code == 1 and "CERTIFICATE_VERIFY_FAILED" in unpinned.output
    for result in (shown, enrolled, listed, unpinned):
        assert all(len(line) <= 80 for line in result.output.splitlines())


def test_a_revoked_certificate_is_refused_at_once_on_an_open_connection(
    served: Served, tmp_path: Path
) -> None:
    """The handshake alone would go on accepting a revoked certificate (it chains to the CA
    and is unexpired: ``/health`` still answers on the same connection); the check on every
    edge request refuses it from the next one on, without a restart. Its credential is left
    valid here, so the certificate alone is refused."""
    edge = served.site(tmp_path, "alpha")
    beta = served.site(tmp_path, "beta")
    with edge.orchestrator_client() as http, beta.orchestrator_client() as other:
        assert poll(http).status_code == 204
        with transaction(served.home) as session:
            site = pki.site_named(session, "alpha")
            pki.revoke_certificates(session, served.home, site, "operator:test")
        refused = poll(http)
        assert refused.status_code == 401 and "was revoked" in refused.json()["detail"]
        assert http.get("/health").status_code == 200  # the TLS connection itself stands
        assert poll(other).status_code == 204  # beta's certificate is not touched


def test_the_operator_revoking_a_site_stops_its_edge(served: Served, tmp_path: Path) -> None:
    edge = served.site(tmp_path, "alpha")
    with edge.orchestrator_client() as http:
        assert poll(http).status_code == 204
        with Client(served.url, served.token, ca=served.ca) as api:
            api.revoke_site("alpha")
        assert poll(http).status_code == 401
    crl = x509.load_pem_x509_crl(pki.Paths.of(served.home).crl.read_bytes())
    with transaction(served.home) as session:
        [row] = pki.certificates(session, pki.site_named(session, "alpha").id)
        assert row.revoked_at is not None
    assert {r.serial_number for r in crl} == {int(row.serial, 16)}


def test_an_edge_route_needs_the_sites_own_certificate(served: Served, tmp_path: Path) -> None:
    """A stolen site credential: with the certificate check off (a naive set-up: TLS for the
    server only) it alone gets the site's tasks; under mutual TLS, a request without the
    site's certificate, or with another site's, is refused."""
    edge = served.site(tmp_path, "alpha")
    beta = served.site(tmp_path, "beta")
    stolen = {"Authorization": f"Bearer {edge.credential()}"}
    pinned = ssl.create_default_context(cafile=served.ca)
    with httpx.Client(base_url=served.url + API_PREFIX, verify=pinned, headers=stolen) as http:
        checked, served.app.state.revocations = served.app.state.revocations, None
        try:
            assert poll(http).status_code == 204  # naive: the credential is enough
        finally:
            served.app.state.revocations = checked
        refused = poll(http)
        assert refused.status_code == 401
        assert "requires the site's client certificate" in refused.json()["detail"]
    with beta.orchestrator_client() as http:
        http.headers.update(stolen)  # beta's certificate, alpha's credential
        refused = poll(http)
        assert refused.status_code == 403 and "not site 'alpha'" in refused.json()["detail"]


def test_enrolment_under_mutual_tls_needs_a_certificate_request(served: Served) -> None:
    with transaction(served.home) as session:
        token = identity.create_site(session, "gamma").enrolment_token
    pinned = ssl.create_default_context(cafile=served.ca)
    body = EnrolRequest(token=token, identity_key="ab" * 32).model_dump(exclude_none=True)
    answer = httpx.post(f"{served.url}{API_PREFIX}/enrol", json=body, verify=pinned)
    assert answer.status_code == 400 and "mutual TLS" in answer.json()["detail"]


def test_plain_http_only_on_loopback_or_with_insecure(tmp_path: Path) -> None:
    assert tls.is_loopback("127.0.0.1") and tls.is_loopback("::1")
    assert tls.is_loopback("localhost") and not tls.is_loopback("0.0.0.0")
    assert not tls.is_loopback("fl.example.org")
    home = tmp_path / "orchestrator"
    initialise(home)
    args = ["orchestrator", "serve", "--dir", str(home), "--host", "0.0.0.0", "--plain-http"]
    refused = CliRunner().invoke(cli, args, env={"COLUMNS": "80"})
    assert refused.exit_code == 1
    assert "loopback address only" in refused.output and "--insecure" in refused.output
    command = [sys.executable, "-m", "oncofed", *args[:-1], "--insecure"]
    process = subprocess.Popen(
        [*command, "--port", str(free_port()), "--log-level", "warning"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "80"},
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("WARNING: --insecure: plain HTTP on 0.0.0.0"), first
    finally:
        process.terminate()
        process.communicate(timeout=30)
