"""The edge's ledger: it survives restarts, holds one task per job round, keeps the job's
pinned inputs and last model (read back only when whole), syncs what it recorded with every
audit entry (which precedes every message sent), and enforces the secure-round records (one
masked input per round, never both shares of one peer, pinned peer keys)."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from sqlalchemy import Connection, event

from oncofed.edge import EdgePolicy, PolicyViolation
from oncofed.edge import ledger as ledger_module
from oncofed.edge.ledger import LEDGER, SLOTS, Base, Ledger, TaskRecord
from oncofed.privacy.secagg import fingerprint
from oncofed.wire.analysis import AnalysisParams
from oncofed.wire.messages import Standardization, StatsResult

SPEC = "a" * 64
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "edge"


@pytest.fixture
def ledger(root: Path) -> Iterator[Ledger]:
    with Ledger(root) as ledger:
        yield ledger


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def task(task_id: str, number: int, kind: str = "train") -> TaskRecord:
    return TaskRecord(task_id, kind, number, f"{number:064x}")


def test_everything_recorded_survives_a_restart(root: Path) -> None:
    pooled = StatsResult(n=10, sums=[1.0], sumsq=[2.0])
    scaling = Standardization(mean=[0.1], std=[0.4358898943540674])
    params = AnalysisParams(pooled=[0.5], own=[0.25])
    with Ledger(root) as ledger:
        ledger.record_task("j1", SPEC, task("t0", 0, "stats"))
        assert ledger.job("j1") is not None  # kept in memory from here on
        ledger.record_task("j1", SPEC, task("t1", 1))
        ledger.answered("j1", "t1", "update")
        ledger.pin_scaling("j1", pooled, scaling)
        ledger.save_params("j1", 1, params)
        ledger.save_model("j1", 1, sha(b"model"), b"model")
        kept = ledger.job("j1")
    with Ledger(root) as ledger:
        job = ledger.job("j1")
        assert job == kept  # what the first ledger kept in memory is what it wrote
        assert job is not None and job.spec_sha256 == SPEC
        answered = TaskRecord("t1", "train", 1, task("t1", 1).content_sha256, "update")
        assert job.tasks == (task("t0", 0, "stats"), answered)
        assert (job.pooled, job.scaling) == (pooled, scaling)
        assert (job.params_round, job.params) == (1, params)
        path = root / "jobs" / "j1" / SLOTS[0]
        assert ledger.last_model("j1") == (1, path)  # after a restart, from its file
        assert path.read_bytes() == b"model"
        assert ledger.job("other") is None and ledger.last_model("other") is None
    with sqlite3.connect(root / LEDGER) as db:
        [(when,)] = db.execute("SELECT answered_at FROM task WHERE id='t1'")
        assert when is not None


def test_the_migrations_build_exactly_the_models_schema(ledger: Ledger) -> None:
    with ledger._engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_an_audit_entry_syncs_what_was_recorded_before_it(ledger: Ledger) -> None:
    """A task's writes commit without a sync (NORMAL); the audit entry before anything leaves
    commits with one (FULL), on the same connection and write-ahead log, which syncs them
    all; the connection is NORMAL again after it."""

    def level(conn: Connection) -> int:
        return conn.connection.driver_connection.execute("PRAGMA synchronous").fetchone()[0]

    with ledger._engine.connect() as conn:
        assert level(conn) == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        first = conn.connection.driver_connection
    ledger.record_task("j1", SPEC, task("t1", 1))
    with ledger._noting() as conn:
        assert level(conn) == 2  # FULL, for this transaction
        assert conn.connection.driver_connection is first  # its page cache kept
    with ledger._engine.connect() as conn:
        assert level(conn) == 1
    ledger.audit(Ed25519PrivateKey.generate(), "egress", actor="edge", site="s", detail={})
    with sqlite3.connect(ledger._engine.url.database or "") as db:  # another reader sees both
        assert db.execute("SELECT count(*) FROM task").fetchone() == (1,)
        assert db.execute("SELECT action FROM audit_entry").fetchall() == [("egress",)]


def test_notes_are_written_with_the_next_audit_entry_and_a_crash_before_loses_only_them(
    root: Path,
) -> None:
    """When a task was answered and the last global model seen are notes: the ledger's record
    has them at once, the database with the next audit entry (before anything leaves). A
    crash before loses only them: the file the ledger names is still there."""
    key = Ed25519PrivateKey.generate()
    ledger = Ledger(root)
    ledger.record_task("j1", SPEC, task("t1", 1))
    ledger.save_model("j1", 1, sha(b"first"), b"first")
    ledger.answered("j1", "t1", "update")
    ledger.audit(key, "egress", actor="edge", site="s", detail={})
    ledger.record_task("j1", SPEC, task("t2", 2))
    ledger.save_model("j1", 2, sha(b"second"), b"second")
    ledger.answered("j1", "t2", "update")
    for _ in range(2):  # kept in memory, then read again (as when other jobs pushed it out)
        job = ledger.job("j1")
        assert job is not None and job.model_round == 2
        assert [t.outcome for t in job.tasks] == ["update", "update"]
        ledger._jobs.clear()
    with sqlite3.connect(root / LEDGER) as db:
        assert db.execute("SELECT id, outcome FROM task ORDER BY round").fetchall() == [
            ("t1", "update"),
            ("t2", None),
        ]
        assert db.execute("SELECT model_round FROM job").fetchall() == [(1,)]
    ledger._engine.dispose()  # the process dies here
    with Ledger(root) as again:
        assert again.last_model("j1") == (1, root / "jobs" / "j1" / SLOTS[0])  # "first"
        job = again.job("j1")
        assert job is not None and [t.outcome for t in job.tasks] == ["update", None]


def test_a_model_file_not_whole_is_no_last_model(root: Path) -> None:
    """A power cut may leave the model file short or empty (it is not synced): read back
    after a restart, its bytes must be its SHA-256, or the job has no last model (the checks
    then bound the step from the initial model). Before one, the ledger gives the bytes it
    wrote."""
    path = root / "jobs" / "j1" / SLOTS[0]
    with Ledger(root) as ledger:
        ledger.record_task("j1", SPEC, task("t1", 1))
        ledger.save_model("j1", 1, sha(b"model"), b"model")
        ledger.audit(Ed25519PrivateKey.generate(), "egress", actor="edge", site="s", detail={})
        path.write_bytes(b"mod")
        assert ledger.last_model("j1") == (1, b"model")
    with Ledger(root) as again:
        assert again.last_model("j1") is None
    for damage in (b"model", b"", None):
        if damage is None:
            path.unlink()
        else:
            path.write_bytes(damage)
        with Ledger(root) as again:
            whole = damage == b"model"
            assert again.last_model("j1") == ((1, path) if whole else None)


def test_the_bytes_of_the_newest_models_are_kept_in_memory_up_to_a_budget(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next round's checks read a job's last model from memory while the models kept
    there, newest first, fit ``KEPT_MODEL_BYTES``; the others from their files."""
    monkeypatch.setattr(ledger_module, "KEPT_MODEL_BYTES", 10)
    with Ledger(root) as ledger:
        for job, model in (("j1", b"first"), ("j2", b"second"), ("j3", b"big" * 4)):
            ledger.record_task(job, SPEC, task(f"t-{job}", 1))
            ledger.save_model(job, 1, sha(model), model)
        folder = root / "jobs"
        assert ledger.last_model("j1") == (1, folder / "j1" / SLOTS[0])  # pushed out by j2
        assert ledger.last_model("j2") == (1, b"second")
        assert ledger.last_model("j3") == (1, folder / "j3" / SLOTS[0])  # larger than all


def test_a_job_holds_one_task_per_round_and_a_task_id_once(ledger: Ledger) -> None:
    ledger.record_task("j1", SPEC, task("t1", 1))
    with pytest.raises(PolicyViolation, match=r"task t2 \(round 1 of job j1\) was already run"):
        ledger.record_task("j1", SPEC, task("t2", 1))
    with pytest.raises(PolicyViolation, match=r"task t1 \(round 1 of job j2\) was already run"):
        ledger.record_task("j2", SPEC, task("t1", 1))


def test_a_job_new_here_is_neither_looked_for_nor_read_and_a_known_one_is_after_a_restart(
    ledger: Ledger, root: Path
) -> None:
    """The ledger knows the ids of every job it recorded: a job's first task finds the job
    absent and records it with no read of the database; reopened, the ledger reads a job it
    holds, and still none it does not."""

    def said(target: Ledger, act: Callable[[], object]) -> list[str]:
        """The statements ``act`` runs on ``target``, as verb and table."""
        statements: list[str] = []
        listener = lambda *a: statements.append(a[2])  # noqa: E731
        event.listen(target._engine, "before_cursor_execute", listener)
        act()
        event.remove(target._engine, "before_cursor_execute", listener)
        words = [s.split() for s in statements]
        return [f"{w[0]} {w[w.index('FROM' if w[0] == 'SELECT' else 'INTO') + 1]}" for w in words]

    assert said(ledger, lambda: ledger.job("j1")) == []
    assert said(ledger, lambda: ledger.record_task("j1", SPEC, task("t1", 1))) == [
        "INSERT job",
        "INSERT task",
    ]
    assert said(ledger, lambda: ledger.record_task("j1", SPEC, task("t2", 2))) == ["INSERT task"]
    ledger.close()
    with Ledger(root) as reopened:
        assert said(reopened, lambda: reopened.job("j2")) == []
        assert said(reopened, lambda: reopened.job("j1")) == ["SELECT job", "SELECT task"]
        kept = reopened.job("j1")
        assert kept is not None and [t.task_id for t in kept.tasks] == ["t1", "t2"]
        with pytest.raises(PolicyViolation, match=r"task t1 \(round 3 of job j1\) was already"):
            reopened.record_task("j1", SPEC, task("t1", 3))


def test_a_rehearsal_writes_nothing_and_forgets_what_it_recorded(
    ledger: Ledger, root: Path
) -> None:
    ledger.record_task("j1", SPEC, task("t1", 1))
    with ledger.rehearsal():
        ledger.record_task("j2", SPEC, task("t2", 1))
        ledger.answered("j1", "t1", "update")
        assert ledger.job("j2") is not None  # seen inside it
    assert ledger.job("j2") is None
    kept = ledger.job("j1")
    assert kept is not None and [t.outcome for t in kept.tasks] == [None]
    with sqlite3.connect(root / LEDGER) as db:
        assert db.execute("SELECT id, outcome FROM task").fetchall() == [("t1", None)]
    ledger.record_task("j2", SPEC, task("t2", 1))  # as if never rehearsed


def test_a_jobs_models_take_turns_in_two_files_and_evaluation_removes_them(
    ledger: Ledger, root: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    ledger.record_task("j1", SPEC, task("t1", 1))
    folder = root / "jobs" / "j1"
    for number, model in enumerate((b"first", b"second", b"third"), start=1):
        ledger.save_model("j1", number, sha(model), model)
        ledger.audit(key, "egress", actor="edge", site="s", detail={})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        SLOTS[0]: b"third",
        SLOTS[1]: b"second",
    }
    assert ledger.last_model("j1") == (3, b"third")
    ledger.save_model("j1", 3, sha(b"third"), b"third")  # the model named: nothing written
    assert (folder / SLOTS[1]).read_bytes() == b"second"
    ledger.drop_model("j1")
    assert not folder.exists() and ledger.last_model("j1") is None


def test_a_restarted_ledger_never_writes_over_the_model_it_names(root: Path) -> None:
    """After a restart the ledger finds which file holds the model it names and writes the
    next one over the other: a crash before the next note leaves the named one whole."""
    key = Ed25519PrivateKey.generate()
    with Ledger(root) as ledger:
        ledger.record_task("j1", SPEC, task("t1", 1))
        for number, model in enumerate((b"first", b"second"), start=1):
            ledger.save_model("j1", number, sha(model), model)
            ledger.audit(key, "egress", actor="edge", site="s", detail={})
    folder = root / "jobs" / "j1"
    assert (folder / SLOTS[1]).read_bytes() == b"second"  # named, in the second file
    ledger = Ledger(root)
    ledger.save_model("j1", 3, sha(b"third"), b"third")
    assert (folder / SLOTS[0]).read_bytes() == b"third"
    ledger._engine.dispose()  # the process dies before the note on the third is written
    with Ledger(root) as again:
        assert again.last_model("j1") == (2, folder / SLOTS[1])


def test_a_job_id_cannot_name_a_path(ledger: Ledger) -> None:
    with pytest.raises(PolicyViolation, match="a job id must be"):
        ledger.save_model("../x", 1, "1" * 64, b"model")
    with pytest.raises(PolicyViolation, match="a job id must be"):
        ledger.record_task("../x", SPEC, task("t1", 1))


def test_a_site_masks_once_per_secure_round(root: Path) -> None:
    with Ledger(root) as ledger:
        ledger.mask_once("j1", 0)
        ledger.mask_once("j1", 1)
    with Ledger(root) as ledger, pytest.raises(PolicyViolation, match="already sent its masked"):
        ledger.mask_once("j1", 1)


def test_no_site_releases_both_shares_of_one_peer(root: Path) -> None:
    with Ledger(root) as ledger:
        ledger.record("j1", 3, {"beta": "self_mask", "gamma": "mask_key"})
        ledger.record("j1", 3, {"beta": "self_mask"})  # the same release again: fine
        ledger.record("j1", 4, {"beta": "mask_key"})  # another round
    with Ledger(root) as ledger:
        with pytest.raises(PolicyViolation, match="released the self_mask share of beta"):
            ledger.record("j1", 3, {"beta": "mask_key"})
        with pytest.raises(PolicyViolation, match="never releases the self_mask share too"):
            ledger.record("j1", 3, {"delta": "self_mask", "gamma": "self_mask"})
        ledger.record("j1", 3, {"delta": "mask_key"})  # the refused batch recorded nothing


def test_peer_keys_are_pinned_on_first_use(root: Path) -> None:
    with Ledger(root) as ledger:
        ledger.pin({"beta": KEY_A})
        ledger.pin({"beta": KEY_A, "gamma": KEY_B})
    with Ledger(root) as ledger:
        message = f"site 'beta' presented identity key {fingerprint(KEY_B)}, but key "
        with pytest.raises(PolicyViolation, match=message + fingerprint(KEY_A)):
            ledger.pin({"delta": KEY_A, "beta": KEY_B})
        pinned = [(site, print_) for site, print_, _ in ledger.peers()]
    # the refused batch pinned nothing, delta's key included
    assert pinned == [("beta", fingerprint(KEY_A)), ("gamma", fingerprint(KEY_B))]


def test_trusted_peers_are_strict_and_replace_a_pinned_key(root: Path) -> None:
    with Ledger(root) as ledger:
        ledger.pin({"beta": KEY_A})
    with Ledger(root, {"beta": fingerprint(KEY_B)}) as ledger:
        with pytest.raises(PolicyViolation, match="of site 'gamma' is not in this site's"):
            ledger.pin({"gamma": KEY_A})
        with pytest.raises(PolicyViolation, match=f"key {fingerprint(KEY_A)} of site 'beta'"):
            ledger.pin({"beta": KEY_A})
        ledger.pin({"beta": KEY_B})  # the admin listed beta's new key
    with Ledger(root) as ledger:  # and it is the one pinned from now on
        ledger.pin({"beta": KEY_B})
        with pytest.raises(PolicyViolation, match="is pinned for it here"):
            ledger.pin({"beta": KEY_A})


def test_a_fingerprint_is_the_start_of_the_keys_sha256() -> None:
    assert fingerprint(bytes(32)) == "66687aadf862bd77"
    assert EdgePolicy(trusted_peers={"beta": "66687aadf862bd77"}).trusted_peers is not None
    with pytest.raises(ValidationError, match=r"trusted_peers\.beta"):
        EdgePolicy(trusted_peers={"beta": "66687AADF862BD7"})
