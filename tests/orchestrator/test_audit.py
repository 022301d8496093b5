"""The orchestrator's audit log: events recorded by the real routes and the coordinator,
chained by the chainer, and tampering with the database named by ``oncofed audit verify``; no
planted patient value (nor any aggregate of them) ever enters it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from oncofed.audit import Filters
from oncofed.cli.main import app
from oncofed.edge import EdgePolicy
from oncofed.orchestrator import create_app
from oncofed.orchestrator.db import AUDIT, AuditCheckpoint, AuditEntry, Task
from oncofed.orchestrator.settings import Settings
from oncofed.orchestrator.setup import identity_key
from oncofed.wire.messages import StatsResult
from tests.canary import Haystack, Needles, labels
from tests.sites import Site, drive
from tests.support import State, auth, make_spec, save_columns

runner = CliRunner()
AUDIT_ALL = Filters()


@pytest.fixture
def api(state: State) -> Iterator[TestClient]:
    """The app with a tick too slow to run during a test: these tests chain the log
    themselves (``chain``), where they say."""
    settings = Settings.load(state.home).model_copy(update={"tick_seconds": 3600.0})
    with TestClient(create_app(settings), base_url="http://test/v1") as client:
        yield client


def chain(state: State) -> int:
    return AUDIT.chain_pending(state.sessions, identity_key(Settings.load(state.home)))


def actions(state: State) -> list[str]:
    """What was recorded, but authentications (written by the tick, whenever it runs: see
    ``test_authentication_is_recorded_once_per_credential_and_failures_in_bulk``)."""
    with state.sessions() as session:
        found = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id))
        return [action for action in found if not action.startswith("auth.")]


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def patients(seed: int) -> dict[str, np.ndarray]:
    """60 patients whose feature values are distinctive canaries (full float64 precision)."""
    rng = np.random.default_rng(seed)
    return {"x1": rng.normal(size=60), "x2": rng.normal(size=60), "y": rng.integers(0, 2, 60)}


@pytest.fixture
def federation(
    state: State, http: TestClient, tmp_path: Path
) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """A training job submitted through the API and answered by alpha and beta (whose rows
    are canaries); returns their rows and the job id."""
    rows = {name: patients(seed) for seed, name in enumerate(("alpha", "beta"))}
    with ExitStack() as stack:
        played = {}
        for name, columns in rows.items():
            store = save_columns(tmp_path / "stores" / name, "data", columns)
            played[name] = Site(state, name, store, EdgePolicy(), tmp_path / "edges")
            stack.callback(played[name].close)
        spec = make_spec(rounds=1).model_dump(mode="json")
        created = http.post("/jobs", json=spec, headers=auth(state.admin_token))
        assert created.status_code == 201, created.text
        job = drive(state, played, created.json()["id"])
    assert job.status == "completed", job.error
    return rows, job.id


def test_routes_and_rounds_record_their_events(
    state: State, http: TestClient, federation: tuple[object, str]
) -> None:
    _, job_id = federation
    admin = auth(state.admin_token)
    created = http.post("/sites", json={"name": "gamma"}, headers=admin).json()
    key = "ab" * 32
    enrolled = http.post("/enrol", json={"token": created["enrolment_token"], "identity_key": key})
    assert enrolled.status_code == 200
    assert http.get(f"/jobs/{job_id}", headers=admin).status_code == 200
    assert http.get(f"/jobs/{job_id}/model", headers=admin).status_code == 200
    assert http.post("/sites", json={"name": "gamma"}, headers=admin).status_code == 409
    recorded = actions(state)
    assert recorded == [
        "job.submitted",
        "round.closed",  # stats
        "round.closed",  # train 1
        "round.closed",  # evaluate
        "job.completed",
        "site.created",  # the refused duplicate recorded nothing: its transaction rolled back
        "site.enrolled",
        "result.read",
        "model.downloaded",
    ]
    with state.sessions() as session:
        entries = {e.action: e for e in AUDIT.read(session, AUDIT_ALL)}
        rounds = [e for e in AUDIT.read(session, AUDIT_ALL) if e.action == "round.closed"]
    submitted = entries["job.submitted"].detail
    assert submitted["job"] == job_id and len(str(submitted["spec_sha256"])) == 64
    assert [r.detail["participants"] for r in rounds] == [["alpha", "beta"]] * 3
    assert rounds[1].detail["model_sha256"] == entries["job.completed"].detail["model_sha256"]
    assert entries["model.downloaded"].detail["model_sha256"] == rounds[1].detail["model_sha256"]
    assert entries["site.enrolled"].site == "gamma"
    assert entries["site.enrolled"].detail == {"identity_key": key}
    assert entries["site.created"].actor == "operator:operator"


def test_a_site_registering_its_key_is_recorded_once(state: State, http: TestClient) -> None:
    site = auth(state.credentials["alpha"])
    for _ in range(2):
        assert http.put("/identity", json={"key": "cd" * 32}, headers=site).status_code == 204
    assert actions(state) == ["identity.registered"]


@pytest.fixture
def log(state: State, http: TestClient) -> State:
    """Six entries, recorded by the operator creating six sites through the API."""
    for i in range(6):
        created = http.post("/sites", json={"name": f"site{i}"}, headers=auth(state.admin_token))
        assert created.status_code == 201
    return state


def test_the_chainer_chains_pending_entries_and_signs_checkpoints(
    log: State, http: TestClient
) -> None:
    state = log
    code, output = cli("audit", "verify", "--dir", str(state.home))
    assert code == 0 and "6 pending" in output
    assert chain(state) == 6 and chain(state) == 0
    with state.sessions() as session:
        seqs = list(session.scalars(select(AuditEntry.seq).order_by(AuditEntry.id)))
        checkpoint = session.scalars(select(AuditCheckpoint)).one()
    assert seqs == [1, 2, 3, 4, 5, 6] and checkpoint.seq == 6
    http.get("/jobs", headers=auth(state.admin_token))  # a list: records nothing
    http.post("/sites", json={"name": "delta"}, headers=auth(state.admin_token))
    code, output = cli("audit", "verify", "--dir", str(state.home))
    assert code == 0 and "verified" in output and "1 pending" in output
    assert chain(state) == 1
    code, output = cli("audit", "verify", "--dir", str(state.home), "--json")
    assert code == 0 and '"ok": true' in output and '"last_seq": 7, "checkpoints": 1' in output
    key = identity_key(Settings.load(state.home))
    assert AUDIT.chain_pending(state.sessions, key, final=True) == 0  # at shutdown: signed
    code, output = cli("audit", "verify", "--dir", str(state.home), "--json")
    assert '"checkpoints": 2, "signed_to": 7' in output


TAMPERING = {
    "edited": ["UPDATE audit_entry SET site = 'other' WHERE seq = 3"],
    "deleted": ["DELETE FROM audit_entry WHERE seq = 3"],
    "reordered": [
        "UPDATE audit_entry SET seq = -1 WHERE seq = 3",
        "UPDATE audit_entry SET seq = 3 WHERE seq = 4",
        "UPDATE audit_entry SET seq = 4 WHERE seq = -1",
    ],
    "truncated": ["DELETE FROM audit_entry WHERE seq >= 5"],
}


@pytest.mark.parametrize("kind", TAMPERING)
def test_verify_names_the_first_entry_tampered_with(log: State, kind: str) -> None:
    state = log
    chain(state)
    with state.sessions.begin() as session:
        for statement in TAMPERING[kind]:
            session.execute(text(statement))
    code, output = cli("audit", "verify", "--dir", str(state.home))
    first = 5 if kind == "truncated" else 3
    assert code == 1
    assert f"FAILED at entry #{first}: {kind}" in " ".join(output.split())


def test_a_chain_rewritten_from_scratch_fails_against_the_signed_checkpoint(log: State) -> None:
    """Someone with the database but not the key edits entry 2 and recomputes every hash:
    the chain links again, but the checkpoint signed before no longer matches."""
    state = log
    chain(state)
    with state.sessions.begin() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        entries = [row.entry() for row in rows]
        session.execute(text("UPDATE audit_entry SET site = 'forged' WHERE seq = 2"))
    previous = "0" * 64
    with state.sessions.begin() as session:
        for row, entry in zip(rows, entries, strict=True):
            forged = replace(
                entry, prev_hash=previous, site="forged" if entry.seq == 2 else entry.site
            )
            digest = forged.computed_hash()
            session.execute(
                text("UPDATE audit_entry SET prev_hash = :p, hash = :h WHERE id = :i"),
                {"p": previous, "h": digest, "i": row.id},
            )
            previous = digest
    code, output = cli("audit", "verify", "--dir", str(state.home))
    assert code == 1 and "FAILED at entry #1: rewritten" in " ".join(output.split())
    other = "ef" * 32  # and the same rewrite checked with a key the checkpoints were not made by
    code, output = cli("audit", "verify", "--dir", str(state.home), "--key", other)
    assert code == 1 and "checkpoint" in output


def test_show_filters_and_prints_plain_text_when_piped(
    state: State, http: TestClient, federation: tuple[object, str]
) -> None:
    admin = auth(state.admin_token)
    http.post("/sites", json={"name": "[red]x[/red]"}, headers=admin)  # refused: not a Name
    http.post("/sites", json={"name": "gamma"}, headers=admin)
    chain(state)
    code, output = cli("audit", "show", "--dir", str(state.home), "--site", "gamma")
    assert code == 0 and "site.created" in output and "round.closed" not in output
    assert "\x1b[" not in output and max(len(line) for line in output.splitlines()) <= 80
    code, output = cli("audit", "show", "--dir", str(state.home), "--action", "round.closed",
                       "--json")  # fmt: skip
    assert code == 0 and output.count('"round.closed"') == 3
    code, output = cli("audit", "show", "--dir", str(state.home), "--since", "2999-01-01")
    assert code == 0 and "0 entries" in output


def test_no_patient_value_nor_aggregate_enters_the_log(
    state: State, http: TestClient, federation: tuple[dict[str, dict[str, np.ndarray]], str]
) -> None:
    """The sites' rows are canaries; so are the sums they sent in the stats round. The
    search finds the sums in the task table (it works), and nothing in the audit tables or in
    what ``audit show`` prints."""
    rows, job_id = federation
    http.get(f"/jobs/{job_id}", headers=auth(state.admin_token))
    chain(state)
    needles = Needles()
    for name, columns in rows.items():
        needles.add_reals(f"{name} rows", np.concatenate([columns["x1"], columns["x2"]]))
    with state.sessions() as session:
        results = session.scalars(select(Task.result_json).where(Task.status == "accepted"))
        stats = [StatsResult.model_validate_json(r) for r in results if r and '"sumsq"' in r]
        tasks = "\n".join(r or "" for r in session.scalars(select(Task.result_json)))
        audit_rows = [
            str(value)
            for table in (AuditEntry.__table__, AuditCheckpoint.__table__)
            for row in session.execute(select(table))
            for value in row
        ]
    assert len(stats) == 2
    for i, result in enumerate(stats):
        needles.add_reals(f"sums {i}", np.asarray(result.sums, dtype=float))
    shown = [
        cli("audit", "show", "--dir", str(state.home), *extra)[1] for extra in ([], ["--json"])
    ]
    haystack = Haystack({"task results": tasks.encode()})
    assert labels(haystack.search(needles)) == {"sums 0", "sums 1"}  # the search works
    audit = Haystack({"audit tables": "\n".join(audit_rows).encode(),
                      "audit show": "\n".join(shown).encode()})  # fmt: skip
    assert len(audit) > 1000 and audit.search(needles) == []


def test_authentication_is_recorded_once_per_credential_and_failures_in_bulk(
    state: State, api: TestClient
) -> None:
    """The first success of each credential in a process, and every failure, counted per
    source: a flood of bad tokens costs a few entries, not one each."""
    admin = auth(state.admin_token)
    for _ in range(3):
        assert api.get("/sites", headers=admin).status_code == 200
    for n in range(5):
        assert api.get("/sites", headers=auth(f"ofres_forged{n}")).status_code == 401
    api.app.state.auth_log.flush(state.sessions)  # type: ignore[attr-defined]
    with state.sessions() as session:
        logged = [e for e in AUDIT.read(session, AUDIT_ALL) if e.action.startswith("auth.")]
    successes = [e.actor for e in logged if e.action == "auth.success"]
    assert successes == ["operator:operator"]
    failures = [e.detail for e in logged if e.action == "auth.failure"]
    assert sum(int(f["count"]) for f in failures) == 5
    assert {f["route"] for f in failures} == {"GET /v1/sites"}
    assert all(len(str(f["credential"])) == 8 for f in failures)  # a hash prefix, no token
