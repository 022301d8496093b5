"""A site's audit log: every payload that left it and every task it refused, chained in
``ledger.db`` with checkpoints signed by its identity key; ``oncofed edge audit verify`` names
the first entry tampered with; no patient value nor aggregate of them enters it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from oncofed.audit import Entry, Filters
from oncofed.cli.main import app
from oncofed.edge import Agent, EdgeConfig, EdgeHome
from oncofed.edge.enrol import enrol
from oncofed.edge.ledger import AUDIT, LEDGER, Ledger
from oncofed.wire.messages import TaskAssignment
from tests.canary import Haystack, Needles, labels
from tests.support import approve_here, make_spec, save_columns

runner = CliRunner()


def task(task_id: str, **spec: object) -> TaskAssignment:
    return TaskAssignment(
        task_id=task_id, job_id="j1", round=0, kind="stats", spec=make_spec(**spec)
    )


class Orchestrator:
    """Hands out ``tasks`` one per poll and accepts whatever the site posts."""

    def __init__(self, *tasks: TaskAssignment) -> None:
        self.tasks = list(tasks)
        self.posts: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/identity":
            return httpx.Response(204 if request.method == "PUT" else 200, json={"key": "ab" * 32})
        if request.method == "PUT":  # a data quality report
            return httpx.Response(204)
        if request.url.path == "/v1/tasks/next":
            if not self.tasks:
                return httpx.Response(204)
            return httpx.Response(200, content=self.tasks.pop(0).model_dump_json())
        self.posts.append(json.loads(request.content))
        return httpx.Response(200, json={"task_id": "t", "status": "accepted", "detail": ""})


@pytest.fixture
def site(tmp_path: Path) -> tuple[EdgeHome, np.ndarray, Orchestrator]:
    """An edge whose 60 patients' values are canaries, after one stats task answered and one
    task its policy refused."""
    home = EdgeHome(tmp_path / "edge")
    home.create(EdgeConfig.model_validate({"orchestrator": "http://orch.test", "site": "a"}), "c")
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(2, 60))
    save_columns(home.datasets, "data", {"x1": rows[0], "x2": rows[1],
                                         "y": rng.integers(0, 2, 60)})  # fmt: skip
    approve_here(home.policy_file, make_spec())
    orchestrator = Orchestrator(task("t1"), task("t2", rounds=5000))
    agent = Agent(home, transport=httpx.MockTransport(orchestrator))
    try:
        assert agent.run(max_tasks=2) == 2
    finally:
        agent.close()
    return home, rows, orchestrator


def entries(home: EdgeHome) -> list[Entry]:
    with Ledger(home.root) as ledger, ledger.sessions() as session:
        return AUDIT.read(session, Filters())


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_egress_and_refusals_are_chained_and_signed(site: tuple[EdgeHome, object, object]) -> None:
    home = site[0]
    log = entries(home)
    assert [(e.seq, e.action) for e in log] == [
        (1, "egress"),  # the data quality report
        (2, "egress"),  # the stats result
        (3, "task.refused"),
        (4, "egress"),  # the refusal sent
    ]
    assert [e.detail.get("kind") for e in log] == ["profile", "stats", None, "stats"]
    refused = log[2].detail
    assert refused["task"] == "t2" and "max_rounds" in str(refused["reason"])
    lines = home.egress_log.read_text().splitlines()
    digests = [hashlib.sha256(line.encode()).hexdigest() for line in lines]
    assert [e.detail["line_sha256"] for e in log if e.action == "egress"] == digests
    code, output = cli("edge", "audit", "verify", "--dir", str(home.root))
    assert code == 0 and "4 entries, signed up to #4" in output and "verified" in output
    code, output = cli("edge", "audit", "show", "--dir", str(home.root), "--action", "egress")
    assert code == 0 and output.count("egress") == 3 and "task.refused" not in output


@pytest.mark.parametrize(
    ("statements", "named"),
    [
        (["UPDATE audit_entry SET detail = '{\"kind\":\"profile\"}' WHERE seq = 2"], "#2: edited"),
        (["DELETE FROM audit_entry WHERE seq = 3"], "#3: deleted"),
        (["DELETE FROM audit_entry WHERE seq = 4"], "#4: truncated"),
        (["UPDATE audit_checkpoint SET signature = '" + "00" * 64 + "' WHERE seq = 1"],
         "#1: checkpoint"),
    ],
)  # fmt: skip
def test_tampering_with_the_ledger_is_named(
    site: tuple[EdgeHome, object, object], statements: list[str], named: str
) -> None:
    home = site[0]
    with sqlite3.connect(home.root / LEDGER) as db:
        for statement in statements:
            db.execute(statement)
    code, output = cli("edge", "audit", "verify", "--dir", str(home.root))
    assert code == 1 and f"FAILED at entry {named}" in output


def test_an_entry_pending_is_chained_before_the_next_one_appended(
    site: tuple[EdgeHome, object, object],
) -> None:
    """An entry recorded and left unchained (an older edge's crash between the two) keeps
    its place: the next entry appended chains it first, and the log still verifies."""
    home = site[0]
    with Ledger(home.root) as ledger:
        with ledger.sessions.begin() as session:
            AUDIT.record(session, "task.refused", actor="edge", site="a", detail={"task": "tx"})
        ledger.audit(home.identity(), "egress", actor="edge", site="a", detail={"task": "ty"})
        ledger.audit(home.identity(), "egress", actor="edge", site="a", detail={"task": "tz"})
    log = entries(home)
    assert [(e.seq, e.detail.get("task")) for e in log[-3:]] == [(5, "tx"), (6, "ty"), (7, "tz")]
    code, output = cli("edge", "audit", "verify", "--dir", str(home.root))
    assert code == 0 and "7 entries, signed up to #7" in output and "verified" in output


def test_enrolment_is_the_first_entry(tmp_path: Path) -> None:
    def orchestrator(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"site": "a", "credential": "ofsite_x", "orchestrator_key": "cd" * 32}
        )

    home = EdgeHome(tmp_path / "edge")
    enrol(
        home, "http://orch.test", "ofenr_" + "x" * 40, transport=httpx.MockTransport(orchestrator)
    )
    [entry] = entries(home)
    assert (entry.seq, entry.action, entry.site) == (1, "edge.enrolled", "a")
    assert entry.detail == {"orchestrator": "http://orch.test", "orchestrator_key": "cd" * 32}


def test_no_patient_value_nor_aggregate_enters_the_log(
    site: tuple[EdgeHome, np.ndarray, Orchestrator],
) -> None:
    """The rows are canaries and so are the sums sent: ``egress.jsonl`` holds the sums (the
    search works); the chain and what the audit commands print hold neither."""
    home, rows, orchestrator = site
    needles = Needles()
    needles.add_reals("rows", rows.ravel())
    [result, _] = orchestrator.posts
    needles.add_reals("sums", np.asarray(result["sums"], dtype=float))
    assert labels(Haystack({"egress": home.egress_log.read_bytes()}).search(needles)) == {"sums"}
    with sqlite3.connect(home.root / LEDGER) as db:
        tables = [str(v) for t in ("audit_entry", "audit_checkpoint")
                  for row in db.execute(f"SELECT * FROM {t}") for v in row]  # fmt: skip
    shown = [
        cli("edge", "audit", *command, "--dir", str(home.root), *extra)[1]
        for command in (["show"], ["verify"])
        for extra in ([], ["--json"])
    ]
    audit = Haystack({"tables": "\n".join(tables).encode(), "cli": "\n".join(shown).encode()})
    assert len(audit) > 1000 and audit.search(needles) == []
