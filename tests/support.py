"""Helpers shared by tests: an orchestrator state with enrolled sites, and job specs."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from oncofed.cdm.tables import CdmData
from oncofed.edge import approvals
from oncofed.edge.store import LocalStore
from oncofed.orchestrator import projects
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Project
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.routes.hot import HotRoutes
from oncofed.orchestrator.settings import Settings
from oncofed.orchestrator.setup import identity_key
from oncofed.wire.analysis import SPECS, AnalysisSpec
from oncofed.wire.profile import DataProfile, FieldProfile
from oncofed.wire.projects import (
    NewProject,
    ProjectAnswer,
    ProjectPublic,
    covering,
)
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
        settings = Settings.load(self.home)
        self.coordinator = Coordinator(
            self.sessions, BlobStore(settings.blob_dir), key=identity_key(settings)
        )
        return self.coordinator


SITE_KEY = Ed25519PrivateKey.generate()
"""The identity key of the sites tests run tasks for in process (``TaskRunner``)."""
TEST_PROJECT = "test-project"
"""The project of ``make_spec``'s jobs: the ``state`` fixture declares it (see
``declare_project``) and records alpha's and beta's approval."""


def project_for(*specs: JobSpec | AnalysisSpec, name: str = TEST_PROJECT) -> ProjectPublic:
    """A project admitting ``specs``, as the orchestrator shows it to a site."""
    scope = covering(specs)
    return ProjectPublic(
        name=name, title="A test project", purpose="Testing.", principal_investigator="Dr T",
        owner="operator", members=["operator"], scope=scope, scope_sha256=scope.sha256(),
        created=datetime.now(UTC), sites=[],
    )  # fmt: skip


def approve_here(policy_file: Path, *specs: JobSpec | AnalysisSpec, dataset: str = "data") -> None:
    """Record in an edge's policy file its approval of the project of ``specs`` (their
    ``project``), on ``dataset``, as ``oncofed edge approve`` does."""
    (name,) = {s.project or TEST_PROJECT for s in specs}
    approvals.decide(policy_file, project_for(*specs, name=name), dataset=dataset)


def approval_block(*specs: JobSpec | AnalysisSpec, dataset: str = "data") -> str:
    """The lines ``approve_here`` adds to a policy file, to end a policy a test writes."""
    with tempfile.TemporaryDirectory() as scratch:
        policy = Path(scratch) / "policy.yaml"
        policy.write_text("min_cohort_size: 20\n")
        approve_here(policy, *specs, dataset=dataset)
        return approvals.MARKER + policy.read_text().partition(approvals.MARKER)[2]


def declare_project(
    session: Session,
    owner_id: int,
    spec: JobSpec | AnalysisSpec | None = None,
    approved_by: Iterable[int] = (),
    name: str = TEST_PROJECT,
) -> int:
    """Declare a project whose scope admits ``spec`` (``make_spec()``'s by default), approved
    by the sites ``approved_by`` (ids) as their edges would report it; its id."""
    spec = spec or make_spec()
    scope = covering([spec])
    new = NewProject(
        name=name, title="A test project", purpose="Testing.", principal_investigator="Dr T",
        scope=scope,
    )  # fmt: skip
    project_id = session.scalars(select(Project.id).where(Project.name == name)).first()
    if project_id is None:
        projects.create(session, owner_id, new)
        project_id = session.scalars(select(Project.id).where(Project.name == name)).one()
    for site_id in approved_by:
        answer = ProjectAnswer(
            approve=True, scope_sha256=scope.sha256(), dataset=spec.dataset, policy_version="0" * 12
        )
        projects.decide(session, name, site_id, answer)
    return project_id


def in_project(state: State, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (as JSON) in a project declared to admit exactly it that every
    enrolled site of ``state`` approved: for tests that submit over the API jobs of their own."""
    if spec.get("project") not in (None, TEST_PROJECT):
        return spec
    parsed = SPECS.validate_python({**spec, "project": None})
    name = f"for-{covering([parsed]).sha256()[:12]}"  # one project per scope
    with state.sessions.begin() as session:
        declare_project(session, state.admin_id, parsed, state.sites.values(), name=name)
    return {**spec, "project": name}


def make_spec(**overrides: object) -> JobSpec:
    """A small logistic job over two numeric site extension features (see ``save_columns``),
    in the ``TEST_PROJECT``."""
    data: dict[str, object] = {
        "name": "test-job",
        "project": TEST_PROJECT,
        "dataset": "data",
        "features": ["ext.x1", "ext.x2"],
        "outcome": {"type": "binary", "label": "ext.y"},
        "model": {"type": "logistic"},
        "rounds": 2,
        "min_sites": 1,
    }
    data.update(overrides)
    return JobSpec.model_validate(data)


def save_columns(
    root: Path,
    name: str,
    columns: dict[str, np.ndarray],
    outcome: dict[str, np.ndarray] | None = None,
) -> LocalStore:
    """A site dataset whose patients carry ``columns`` as extension features (``ext.NAME``),
    stored as an import would store it (every patient with time origin diagnosis), and
    ``outcome`` columns of the model's outcome table (``os_days``, ``os_event``...)."""
    n = len(next(iter(columns.values())))
    ids = pa.array([f"{i:032x}" for i in range(n)])
    outcomes = {k: pa.array(v) for k, v in (outcome or {}).items()}
    data = CdmData(
        {
            "patient": pa.table({"patient_id": ids}),
            "outcome": pa.table({"patient_id": ids, "time_origin": ["diagnosis"] * n, **outcomes}),
        },
        pa.table({"patient_id": ids, **{k: pa.array(v) for k, v in columns.items()}}),
    )
    profile = DataProfile.model_validate(
        {
            "dataset": name,
            "source_format": "csv",
            "imported_at": "2026-11-28T00:00:00Z",
            "threshold": 11,
            "rows_read": n,
            "patients": n,
        }
    )
    store = LocalStore(root)
    store.save(name, data, profile)
    return store


def sample_profile(dataset: str = "gbsg2", **changes: object) -> DataProfile:
    """The report on GBSG2 as a site would publish it (threshold 11)."""
    profile = DataProfile(
        dataset=dataset,
        source_format="csv",
        imported_at=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        threshold=11,
        rows_read="suppressed",
        patients=686,
        rejected={"range: age_at_diagnosis": "<11"},
        tables={"patient": 686, "tumour": 686, "biomarker": 1372, "treatment": 246, "outcome": 686},
        fields=[
            FieldProfile(
                table="patient", field="sex", present=686, missing=0, values={"female": 686}
            ),
            FieldProfile(table="patient", field="age_at_diagnosis", present=686, missing=0),
            FieldProfile(
                table="tumour",
                field="grade",
                present=686,
                missing=0,
                values={"G1": 81, "G2": 444, "G3": 161, "G4": 0, "GX": 0},
            ),
            FieldProfile(
                table="outcome",
                field="cause_of_death",
                present="<11",
                missing="suppressed",
                values={"cancer": "<11", "other": 0, "unknown": 0},
            ),
        ],
    )
    return profile.model_copy(update=changes)


def auth(token: str) -> dict[str, str]:
    """The header a token is sent in."""
    return {"Authorization": f"Bearer {token}"}


def gbsg2_covariates(rows: pd.DataFrame, *logged: str, grade: bool = False) -> pd.DataFrame:
    """The reference design of the tests' GBSG2 models, in the model's term order: age,
    log1p of tumour size, nodes and every extra ``logged`` variable, endocrine therapy, then
    (with ``grade``) grade dummies, G1 the reference."""
    numeric = {
        "age": rows["age_at_diagnosis"],
        "size": np.log1p(rows["tumour_size_mm"]),
        "nodes": np.log1p(rows["nodes_positive"]),
        **{name: np.log1p(rows[name]) for name in logged},
        "endocrine": rows["treatment.endocrine"],
    }
    dummies = {g: (rows["grade"] == g).astype(float) for g in ("G2", "G3") if grade}
    return pd.DataFrame({**numeric, **dummies})


class Clock:
    """A ``time.monotonic`` a test moves by hand (``frozen_clock``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def frozen_clock(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> Clock:
    """Replace the ``time`` of ``module`` only (its ``time.monotonic``) with a ``Clock``."""
    clock = Clock()
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=clock))
    return clock


def without_hot_routes(app: FastAPI) -> ASGIApp:
    """``app`` as it would be without ``HotRoutes``: every request through FastAPI (its state,
    started by the app's lifespan, shared)."""
    plain = copy.copy(app)
    plain.user_middleware = [m for m in app.user_middleware if m.cls is not HotRoutes]
    stack = plain.build_middleware_stack()

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        await stack(scope, receive, send)

    return serve
