"""CLI behaviour that needs no running federation: clean errors, operator commands."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import uvicorn
from rich.console import Console
from sqlalchemy import select
from typer.testing import CliRunner

from oncofed.cdm.tables import CdmData
from oncofed.cli.main import app
from oncofed.cli.profile_view import render_profile
from oncofed.client import Client, provenance, write_job
from oncofed.edge import Agent, EdgeConfig, EdgeHome, LocalStore
from oncofed.edge.ledger import Ledger
from oncofed.orchestrator import Settings, create_app, identity
from oncofed.orchestrator.db import Site
from oncofed.orchestrator.setup import identity_key, transaction
from oncofed.privacy.secagg import fingerprint, new_identity, public_bytes
from oncofed.wire.analysis import REPORTS, Analysis
from oncofed.wire.messages import Participation
from oncofed.wire.profile import FieldProfile
from tests.orchestrator.test_analysis import (  # noqa: F401 (stores: a fixture)
    COVARIATES,
    RFS,
    run,
    spec,
    stores,
)
from tests.support import State, sample_profile

runner = CliRunner()


def test_invalid_spec_names_the_field_without_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: x\ndataset: d\nfeatures: [age]\n"
        "outcome: {type: binary, label: y}\nmodel: {type: forest}\n"
    )
    result = runner.invoke(
        app,
        ["job", "submit", str(spec)],
        env={"ONCOFED_URL": "http://127.0.0.1:9", "ONCOFED_TOKEN": "t"},
    )
    assert result.exit_code == 1
    assert "model.type" in result.output and "Traceback" not in result.output


def test_unreachable_orchestrator_is_a_clean_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["site", "list", "--url", "http://127.0.0.1:9", "--token", "t"])
    assert result.exit_code == 1 and "cannot reach the orchestrator" in result.output


def test_operator_init_site_add_and_token(tmp_path: Path) -> None:
    home = tmp_path / "orch"
    init = runner.invoke(app, ["orchestrator", "init", "--dir", str(home)])
    assert init.exit_code == 0 and "ofop_" in init.output
    again = runner.invoke(app, ["orchestrator", "init", "--dir", str(home)])
    assert again.exit_code == 1 and "initialised already" in again.output
    site = runner.invoke(app, ["site", "add", "hospital-a", "--dir", str(home)])
    assert site.exit_code == 0 and "ofenr_" in site.output
    dup = runner.invoke(app, ["site", "add", "hospital-a", "--dir", str(home)])
    assert dup.exit_code == 1 and "exists already" in dup.output
    token = runner.invoke(app, ["orchestrator", "token", "rita", "--dir", str(home)])
    assert token.exit_code == 0 and "ofres_" in token.output


@pytest.mark.parametrize(
    ("token", "message"),
    [("ofenr_x", "not an enrolment token"), ("ofenr_" + "x" * 40, "cannot reach")],
)
def test_edge_init_errors_are_clean_and_leave_no_credential(
    tmp_path: Path, token: str, message: str
) -> None:
    edge = tmp_path / "e"
    args = ["edge", "init", "--dir", str(edge), "--orchestrator", "http://127.0.0.1:9"]
    result = runner.invoke(app, [*args, "--token", token])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (edge / "credential").exists()


@pytest.fixture
def served(state: State) -> Iterator[str]:
    """The orchestrator on ``state``, served over HTTP on 127.0.0.1 from a thread."""
    app = create_app(Settings.load(state.home))
    server = uvicorn.Server(uvicorn.Config(app, port=0, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    give_up = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < give_up:
        time.sleep(0.01)
    assert server.started, "the orchestrator did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


def send_profiles(url: str, state: State, home: EdgeHome) -> None:
    """Run site alpha's agent until the orchestrator has its data quality reports."""
    config = EdgeConfig.model_validate({"orchestrator": url, "site": "alpha"})
    home.create(config, state.credentials["alpha"])
    LocalStore(home.datasets).save("gbsg2", CdmData(), sample_profile())
    agent, stop = Agent(home, poll_seconds=0.05), threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        with Client(url, state.admin_token) as api:
            give_up = time.monotonic() + 10
            while not api.profiles("alpha") and time.monotonic() < give_up:
                time.sleep(0.02)
    finally:
        stop.set()
        thread.join()
        agent.close()


def test_site_profile_shows_what_the_edge_sent(served: str, state: State, tmp_path: Path) -> None:
    send_profiles(served, state, EdgeHome(tmp_path / "edge"))
    args = ["site", "profile", "alpha", "--url", served, "--token", state.admin_token]
    shown = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    lines = [line.strip("│ ") for line in shown.output.splitlines()]
    assert lines[0].startswith("╭─ gbsg2 ")
    assert lines[1:3] == [
        "csv · imported 2026-11-20 09:30 UTC · threshold 11 · suppressed rows read · "
        "686 patients · rejected: range: age_at_diagnosis <11",
        "tables stored: patient 686 · tumour 686 · biomarker 1372 · treatment 246 · outcome 686",
    ]
    table_rows = [line for line in shown.output.splitlines() if line.count("│") == 7]
    assert [[cell.strip() for cell in row.split("│")[2:-2]] for row in table_rows] == [
        ["sex", "686", "0", "female 686"],
        ["age_at_diagnosis", "686", "0", ""],
        ["grade", "686", "0", "G1 81 · G2 444 · G3 161"],
        ["cause_of_death", "<11", "suppressed", "cancer <11"],
    ]
    titles = [line for line in lines if line in ("patient", "tumour", "outcome", "biomarker")]
    assert titles == ["patient", "tumour", "outcome"]
    as_json = runner.invoke(app, [*args, "--json", "--dataset", "gbsg2"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == [sample_profile().model_dump(mode="json")]


def test_a_profile_shows_results_per_marker_flags_and_extensions() -> None:
    fields = [
        FieldProfile(
            table="ext", field="menopause", present=680, missing="<11",
            values={"post": 420, "pre": "suppressed", "other codes": "<11"},
        ),
        FieldProfile(
            table="outcome", field="os_event", present=686, missing=0, values={"0": 600, "1": 86}
        ),
        FieldProfile(
            table="biomarker", field="ER.result", present=686, missing=0,
            values={"positive": 500, "negative": 186, "equivocal": 0, "unknown": 0},
        ),
    ]  # fmt: skip
    console = Console(record=True, width=200)
    console.print(render_profile(sample_profile(fields=fields, extensions=["ext.menopause"])))
    lines = [line.strip("│ ") for line in console.export_text().splitlines()]
    assert "extensions: ext.menopause" in lines
    titles = [line for line in lines if line in ("biomarker", "outcome", "ext")]
    assert titles == ["biomarker", "outcome", "ext"]  # the model's tables first
    table_rows = [line for line in lines if line.count("│") == 3]
    assert [[cell.strip() for cell in row.split("│")] for row in table_rows] == [
        ["ER.result", "686", "0", "positive 500 · negative 186"],
        ["os_event", "686", "0", "0 600 · 1 86"],
        ["menopause", "680", "<11", "post 420 · pre suppressed · other codes <11"],
    ]


def test_site_profile_errors_are_clean(served: str, state: State) -> None:
    args = ["--url", served, "--token", state.admin_token]
    none = runner.invoke(app, ["site", "profile", "beta", *args])
    assert none.exit_code == 0 and "Site beta has sent no data quality report yet." in none.output
    missing = runner.invoke(app, ["site", "profile", "beta", "--dataset", "gbsg2", *args])
    assert missing.exit_code == 1
    assert "site 'beta' sent no report on dataset 'gbsg2' (sent: none)" in missing.output
    unknown = runner.invoke(app, ["site", "profile", "gamma", *args])
    assert unknown.exit_code == 1 and "HTTP 404: no site 'gamma'" in unknown.output


def test_enrolment_exchanges_identity_keys_and_edge_identity_shows_them(
    served: str, state: State, tmp_path: Path
) -> None:
    """``edge init`` registers the site's new identity key and pins the orchestrator's;
    ``edge identity`` prints both fingerprints, to compare with the operator and the peers."""
    with transaction(state.home) as session:
        token = identity.create_site(session, "gamma").enrolment_token
        identity.create_site(session, "university-hospital-of-the-north-west-region")
    edge = tmp_path / "gamma"
    args = ["edge", "init", "--dir", str(edge), "--orchestrator", served, "--token", token]
    assert runner.invoke(app, args).exit_code == 0
    home = EdgeHome(edge)
    own = public_bytes(home.identity())
    with transaction(state.home) as session:
        site = session.scalars(select(Site).where(Site.name == "gamma")).one()
        assert site.identity_key == own.hex()
    orchestrator = public_bytes(identity_key(Settings.load(state.home)))
    assert home.config().orchestrator_key == orchestrator.hex()
    result = runner.invoke(app, ["edge", "identity", "--dir", str(edge)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"site gamma: {fingerprint(own)}"
    assert lines[1] == f"orchestrator: {fingerprint(orchestrator)}"
    assert "no peer keys pinned yet" in result.output
    assert all(len(line) <= 80 for line in lines)
    peer = public_bytes(new_identity())
    with Ledger(home.root) as ledger:
        ledger.pin({"university-hospital-of-the-north-west-region": peer})
    pinned = runner.invoke(app, ["edge", "identity", "--dir", str(edge)], env={"COLUMNS": "80"})
    assert pinned.exit_code == 0, pinned.output
    assert fingerprint(peer) in pinned.output and "…" not in pinned.output
    assert all(len(line) <= 80 for line in pinned.output.splitlines())
    env = {"ONCOFED_URL": served, "ONCOFED_TOKEN": state.admin_token, "COLUMNS": "80"}
    listed = runner.invoke(app, ["site", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.output.splitlines() if "gamma" in line]
    assert fingerprint(own) in row and "yes" in row  # whole, though a long name is beside it
    assert all(len(line) <= 80 for line in listed.output.splitlines())
    names = "".join(line.split("│")[1].strip() for line in listed.output.splitlines()
                    if line.startswith("│"))  # fmt: skip
    assert "…" not in listed.output and "university-hospital-of-the-north-west-region" in names


OUTPUTS = {
    "counts": ["report.json", "counts.csv"],
    "summary": ["report.json", "summary.csv", "histogram.csv", "histogram.png"],
    "kaplan_meier": ["report.json", "survival.csv", "logrank.csv", "kaplan_meier.png"],
    "cox": ["report.json", "coefficients.csv", "heterogeneity.csv", "forest.png"],
    "logistic": ["report.json", "coefficients.csv", "heterogeneity.csv", "forest.png"],
}
"""The files ``job result`` writes for each analysis type (docs/analytics.md)."""
FIVE_YEARS = {"type": "binary", "time": "rfs_days", "event": "rfs_event", "horizon_days": 1825}
EVERY_ANALYSIS: list[dict[str, Any]] = [
    {"type": "counts", "rows": "grade"},
    {"type": "counts", "rows": "grade", "columns": "treatment.endocrine"},
    {"type": "summary", "variable": "age_at_diagnosis", "bins": [20, 40, 50, 60, 70, 90]},
    {"type": "kaplan_meier", "outcome": RFS, "group": "grade"},
    {"type": "kaplan_meier", "outcome": RFS},
    {"type": "cox", "outcome": RFS, "covariates": COVARIATES},
    {"type": "cox", "outcome": RFS, "covariates": COVARIATES, "stratified": False,
     "grid_days": 30},
    {"type": "logistic", "outcome": FIVE_YEARS, "covariates": COVARIATES},
]  # fmt: skip


def test_every_analysis_type_is_covered() -> None:
    union = get_args(get_args(Analysis)[0])
    assert {kind.model_fields["type"].default for kind in union} == set(OUTPUTS)
    assert {a["type"] for a in EVERY_ANALYSIS} == set(OUTPUTS)


def _label(analysis: dict[str, Any]) -> str:
    extra = "-by" if "group" in analysis or "columns" in analysis else ""
    return analysis["type"] + extra + ("-unstratified" if "stratified" in analysis else "")


@pytest.mark.parametrize("analysis", EVERY_ANALYSIS, ids=_label)
def test_job_result_and_the_client_write_every_analysis(
    served: str,
    state: State,
    stores: dict[str, LocalStore],  # noqa: F811
    analysis: dict[str, Any],
    tmp_path: Path,
) -> None:
    """``oncofed job result`` (piped at 80 columns) and the Python client write every file of
    every analysis type (a summary's histogram once crashed it), show each site's state, and
    write the same ``report.json`` with it."""
    done = run(state, stores, spec(analysis))
    assert done.status == "completed", done.error
    env = {"ONCOFED_URL": served, "ONCOFED_TOKEN": state.admin_token, "COLUMNS": "80"}
    shown = runner.invoke(app, ["job", "result", done.id, "--out", str(tmp_path / "cli")], env=env)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    written = [line.removeprefix("written: ") for line in lines if line.startswith("written: ")]
    assert max(len(line) for line in lines if not line.startswith("written: ")) <= 80
    assert "…" not in shown.output
    expected = OUTPUTS[analysis["type"]]
    if analysis["type"] == "kaplan_meier" and "group" not in analysis:
        expected = [name for name in expected if name != "logrank.csv"]
    assert written == [str(tmp_path / "cli" / name) for name in expected]  # whole paths
    rows = {line.split("│")[1].strip(): line for line in lines if line.count("│") == 5}
    assert "took part" in rows["alpha"] and "took part" in rows["beta"]
    assert any(line.startswith("patients in the result: ") for line in lines)
    for name in expected:
        path = tmp_path / "cli" / name
        if name.endswith(".csv"):
            assert len(path.read_text().splitlines()) >= 2
        elif name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads((tmp_path / "cli" / "report.json").read_text())
    participation = Participation.model_validate(document.pop("participation"))
    assert participation == done.participation and document.pop("name") == done.name
    assert document.pop("provenance") == provenance(done)
    assert REPORTS.validate_python(document) == done.report
    with Client(served, state.admin_token) as api:
        job = api.job(done.id)
    assert job.participation == done.participation
    paths = write_job(job, tmp_path / "client")
    assert [p.name for p in paths] == expected
    for name in expected[:-1]:  # the same report and tables (a PNG embeds its own metadata)
        assert (tmp_path / "client" / name).read_text() == (tmp_path / "cli" / name).read_text()
