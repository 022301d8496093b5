"""The orchestrator's state (its folder, settings, identity key, SQLite database with its
write-ahead log, lock file, blobs and their spool) is owner-only, files 0600 and folders 0700,
even under a umask of 0. Certificates are public: they may be readable by all."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

from oncofed.orchestrator import Settings, create_app
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.setup import initialise
from oncofed.wire.messages import API_PREFIX
from tests.edge.test_edge_file_modes import open_to_others, open_umask  # noqa: F401 (a fixture)

PUBLIC = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN X509 CRL-----")


def _secret(line: str, root: Path) -> bool:
    """Whether a path ``open_to_others`` found may hold a secret: all but certificates."""
    path = root.parent / line.rsplit(" ", 1)[0]
    return not (path.is_file() and path.read_bytes().startswith(PUBLIC))


def test_a_served_orchestrator_storing_a_blob_is_owner_only(
    tmp_path: Path,
    open_umask: None,  # noqa: F811
) -> None:
    home = tmp_path / "consortium" / "state"  # its parent is created too
    initialise(home)
    settings = Settings.load(home)
    app = create_app(settings)
    with TestClient(app) as client:  # its lifespan: spool cleared, lock taken
        assert client.get(f"{API_PREFIX}/health").status_code == 200
        blobs: BlobStore = app.state.coordinator.blobs
        root = tmp_path / "consortium"
        with blobs.spool() as (handle, spooled):
            handle.write(b"a global model")
            assert spooled.parent == blobs.tmp and open_to_others(blobs.root) == []
        sha = hashlib.sha256(b"a global model").hexdigest()
        blobs.adopt(spooled, sha)
        written = {p.name for p in home.rglob("*")}
        assert {"oncofed.db", "oncofed.db-wal", "identity.key", sha} <= written
        assert [line for line in open_to_others(root) if _secret(line, root)] == []
