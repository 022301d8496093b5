"""Helpers shared by tests: an orchestrator state with enrolled sites, and job specs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.settings import Settings
from oncofed.wire.spec import JobSpec


@dataclass
class State:
    """An initialised orchestrator state directory and a coordinator on it."""

    home: Path
    admin_token: str
    sessions: sessionmaker[Session]
    coordinator: Coordinator
    sites: dict[str, int]  # name -> site id
    credentials: dict[str, str]  # name -> site credential
    admin_id: int

    def restart(self) -> Coordinator:
        """A new coordinator on the same database and blobs, as after a process restart."""
        self.coordinator = Coordinator(self.sessions, BlobStore(Settings.load(self.home).blob_dir))
        return self.coordinator


def make_spec(**overrides: object) -> JobSpec:
    """A small logistic job over two numeric columns."""
    data: dict[str, object] = {
        "name": "test-job",
        "dataset": "data",
        "features": ["x1", "x2"],
        "outcome": {"type": "binary", "label": "y"},
        "model": {"type": "logistic"},
        "rounds": 2,
        "min_sites": 1,
    }
    data.update(overrides)
    return JobSpec.model_validate(data)
