"""Everything the edge keeps (its identity key, credential, settings and policy, the imported
patient-level Parquet tables, the ledger with its write-ahead log, kept models and the egress
log) is owner-only, files 0600 and folders 0700, even under a umask of 0."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oncofed.edge import Agent, EdgeHome, LocalStore
from oncofed.edge.enrol import enrol
from oncofed.edge.importing import Source, import_source
from oncofed.edge.ledger import LEDGER, Ledger, TaskRecord
from oncofed.wire.messages import EnrolResponse
from tests.edge.test_agent import ORCHESTRATOR_KEY, Script, stats_task
from tests.support import approve_here, make_spec, save_columns

EXAMPLES = Path(str(resources.files("oncofed.cdm") / "examples"))


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: whatever is not closed explicitly is open to all."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def open_to_others(root: Path) -> list[str]:
    """``root`` and everything under it that its group or other users may use."""
    found = [root, *root.rglob("*")]
    return [
        f"{path.relative_to(root.parent)} {stat.S_IMODE(path.lstat().st_mode):o}"
        for path in found
        if path.lstat().st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    ]


def test_files_written_naively_are_open_to_all(tmp_path: Path, open_umask: None) -> None:
    """What the checks below would catch: a file, a Parquet table, a folder and a SQLite
    database with its write-ahead log, each created as libraries do by default."""
    (tmp_path / "plain.bin").write_bytes(b"patient rows")
    pq.write_table(pa.table({"patient_id": ["p1"]}), tmp_path / "table.parquet")
    (tmp_path / "folder").mkdir()
    database = sqlite3.connect(tmp_path / "naive.db")
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("CREATE TABLE t (x)")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    caught = open_to_others(tmp_path)
    database.close()
    assert modes["plain.bin"] == 0o666 and modes["table.parquet"] == 0o666
    assert modes["folder"] == 0o777
    assert modes["naive.db"] & 0o044 and modes["naive.db-wal"] & 0o044
    assert len(caught) == len(modes) == 6  # every one


def _orchestrator(request: httpx.Request) -> httpx.Response:
    """The enrolment answer of an orchestrator."""
    enrolled = EnrolResponse(site="a", credential="c" * 40, orchestrator_key=ORCHESTRATOR_KEY)
    return httpx.Response(200, content=enrolled.model_dump_json())


def test_an_enrolled_edge_with_data_and_a_task_run_is_owner_only(
    tmp_path: Path, open_umask: None
) -> None:
    home = EdgeHome(tmp_path / "sites" / "edge")  # its parent is created too
    enrol(
        home, "http://orch.test", "ofenr_" + "x" * 40, transport=httpx.MockTransport(_orchestrator)
    )
    store = LocalStore(home.datasets)
    csv = EXAMPLES / "csv"
    import_source(store, "ex", Source("csv", str(csv / "patients.csv"), csv / "mapping.yaml"),
                  threshold=11)  # fmt: skip
    store.save_refused("refused", [])
    rng = np.random.default_rng(1)
    columns = {"x1": rng.normal(size=40), "x2": rng.normal(size=40), "y": rng.integers(0, 2, 40)}
    save_columns(home.datasets, "data", columns)
    approve_here(home.policy_file, make_spec())
    script = Script(stats_task(), outages=0)
    Agent(home, transport=httpx.MockTransport(script)).run(max_tasks=1)  # answered, logged
    assert script.posts
    with Ledger(home.root) as ledger:  # open: its write-ahead log and shared memory exist
        model = b"weights"
        ledger.record_task("j2", "0" * 64, TaskRecord("t2", "train", 1, "0" * 64))
        ledger.save_model("j2", 1, hashlib.sha256(model).hexdigest(), model)
        written = {p.name for p in home.root.rglob("*")}
        assert {"credential", "egress.jsonl", "patient.parquet", LEDGER + "-wal"} <= written
        assert open_to_others(tmp_path / "sites") == []
