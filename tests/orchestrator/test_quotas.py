"""Per-researcher quotas at job submission (the attack: one researcher's job of 147M
parameters added 563 MiB on disk and 1 GiB of memory): a too-large model or one job too
many is refused before anything is stored; within quota a job is accepted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from oncofed.orchestrator import Settings, create_app, quotas
from oncofed.orchestrator.db import Job, Principal
from oncofed.orchestrator.setup import add_principal
from oncofed.wire.messages import API_PREFIX
from tests.support import State, auth, declare_project, make_spec

BIG = {"type": "mlp", "hidden": [1024, 1024]}  # ~1.05M parameters, 4 MiB a model


@contextmanager
def served(state: State, **settings: Any) -> Iterator[TestClient]:
    app = create_app(Settings.load(state.home).model_copy(update=settings))
    with TestClient(app, base_url=f"http://test{API_PREFIX}") as client:
        yield client


def blob_bytes(state: State) -> int:
    blobs = Settings.load(state.home).blob_dir
    return sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file())


def researcher(state: State, name: str) -> str:
    """A researcher's token; they own the project ``NAME-project``, approved by every site,
    in which mlp models may be trained."""
    token = add_principal(state.home, name, "researcher").token
    with state.sessions.begin() as session:
        owner = session.scalars(select(Principal.id).where(Principal.name == name)).one()
        spec = make_spec(model=BIG)
        declare_project(session, owner, spec, state.sites.values(), f"{name}-project")
    return token


def submit(client: TestClient, token: str, owner: str, **spec: Any) -> Any:
    """Submit a job (a small mlp unless told) in ``owner``'s project."""
    spec.setdefault("model", {"type": "mlp", "hidden": [4]})
    body = make_spec(project=f"{owner}-project", **spec).model_dump(mode="json")
    return client.post("/jobs", json=body, headers=auth(token))


def test_a_huge_model_is_stored_by_a_naive_orchestrator_and_refused_by_default(
    state: State,
) -> None:
    rita = researcher(state, "rita")
    before = blob_bytes(state)
    with served(state, max_model_parameters=10**9) as client:  # naive: no model limit
        assert submit(client, rita, "rita", model=BIG, rounds=1).status_code == 201
    assert blob_bytes(state) - before > 4 << 20  # its initial model, written at once
    stored = blob_bytes(state)
    with served(state, max_model_parameters=1_000_000) as client:
        for token in (rita, state.admin_token):  # the model limit binds the operator too
            refused = submit(client, token, "rita", name="big", model=BIG, rounds=1)
            assert refused.status_code == 403
            assert "max_model_parameters" in refused.json()["detail"]
    assert blob_bytes(state) == stored  # nothing written


def test_running_jobs_are_limited_per_researcher(state: State) -> None:
    rita = researcher(state, "rita")
    sam = researcher(state, "sam")
    with served(state, max_running_jobs_per_researcher=2) as client:
        assert [submit(client, rita, "rita", name=f"j{i}").status_code for i in range(2)] == [
            201,
            201,
        ]
        refused = submit(client, rita, "rita", name="j2")
        assert refused.status_code == 403
        assert "max_running_jobs_per_researcher" in refused.json()["detail"]
        assert submit(client, sam, "sam", name="other").status_code == 201  # a quota of her own
        assert submit(client, state.admin_token, "rita", name="ops").status_code == 201  # exempt
        with state.sessions.begin() as session:  # one of rita's finishes
            session.execute(update(Job).where(Job.name == "j0").values(status="completed"))
        assert submit(client, rita, "rita", name="j3").status_code == 201


def test_stored_bytes_count_every_round_a_job_declares(state: State) -> None:
    rita = researcher(state, "rita")
    spec = make_spec(model=BIG, rounds=3, strategy={"name": "fedadam"})
    model = quotas.model_bytes(spec)
    assert quotas.stored_bytes(spec) == model * (1 + 3 * 3)  # model + Adam's two moments
    with served(state, max_stored_bytes_per_researcher=13 * model) as client:
        first = submit(client, rita, "rita", model=BIG, rounds=3, strategy={"name": "fedadam"})
        assert first.status_code == 201
        refused = submit(client, rita, "rita", name="second", model=BIG, rounds=3)  # 10 + 4 > 13
        assert refused.status_code == 403
        assert "max_stored_bytes_per_researcher" in refused.json()["detail"]
        assert submit(client, rita, "rita", name="fits", model=BIG, rounds=2).status_code == 201
    with state.sessions() as session:  # running: counted for all its rounds
        owner = session.scalars(select(Job.owner_id)).first()
        assert owner is not None and quotas.usage(session, owner) == (2, 13 * model)


def test_a_finished_job_counts_the_rounds_it_ran(state: State) -> None:
    rita = researcher(state, "rita")
    with served(state) as client:
        assert submit(client, rita, "rita", model=BIG, rounds=50).status_code == 201
    with state.sessions.begin() as session:
        session.execute(update(Job).values(status="failed"))  # failed in its stats round
    with state.sessions() as session:
        owner = session.scalars(select(Job.owner_id)).one()
        one_model = quotas.model_bytes(make_spec(model=BIG))
        assert quotas.usage(session, owner) == (0, one_model)
