"""A rehearsal of a training job before the orchestrator serves (``oncofed orchestrator serve``).

SQLAlchemy compiles a statement on its first run on an engine, and the ORM builds its flush and
lazy-load statements on first use: the first job after a start paid for all of them. At 4
sites its statistics round took 10 ms longer than a later job's (the first answer recorded cost
8.5 ms of CPU against 2.6), its submission 11 ms against 5.5. So before the server listens,
``rehearse`` plays one small job through a coordinator of its own, on the real engine, inside
one transaction that is rolled back: two sites answer its statistics round, two training rounds
and its evaluation, as edges would (with the same kinds of answer, each round's handed over
together as the routes hand them over, and recorded in one batch). The statements stay
compiled; the rows never were. The job's blobs go to a scratch folder removed after it, its
in-memory state goes with its coordinator. ``tests/orchestrator/test_rehearsal.py`` checks
that it leaves no row and no file, and that the first job after it finds every statement it
runs compiled (without it, not).

The edge does the same for a site's first task (``TaskRunner.warm_up``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from oncofed.learning.data import holdout_size
from oncofed.learning.metrics import binary_evaluation
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Job, Principal, Site, utcnow
from oncofed.orchestrator.rounds import Coordinator, Submission
from oncofed.wire import tensors
from oncofed.wire.base import Evaluation
from oncofed.wire.messages import EvaluateResult, StatsResult, TaskAssignment, TrainResult
from oncofed.wire.spec import JobSpec

log = logging.getLogger(__name__)

SITES = 2
TRAIN_ROWS = 40
FEATURES = ("ext.x1", "ext.x2")
STEP = np.float32(1e-3)
"""What each site's update adds to every weight of the model it was given."""
_KEY = Ed25519PrivateKey.generate()
"""The rehearsal coordinator's identity key: it signs nothing that stays (no secure round)."""


@dataclass(frozen=True)
class Rehearsed:
    """What a rehearsal played."""

    seconds: float
    status: str  # the job's, before the rollback
    answers: dict[str, int]  # by kind of task


def rehearse(engine: Engine) -> Rehearsed | None:
    """Play the rehearsal job on ``engine`` and roll it back; what it played, or None when it
    failed (logged: the first job is then only slower, so the start goes on)."""
    began = time.perf_counter()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="oncofed-rehearsal-") as scratch,
            engine.connect() as connection,
        ):
            transaction = connection.begin()
            # Bound to a connection in a transaction, a session joins it: its commits commit
            # nothing, and the rollback below takes back every one of them.
            sessions = sessionmaker(connection, expire_on_commit=False)
            coordinator = Coordinator(sessions, BlobStore(Path(scratch)), key=_KEY)
            try:
                status, answers = _play(coordinator, sessions)
            finally:
                coordinator.close()
                transaction.rollback()
    except Exception:
        log.exception("the rehearsal failed: the first job compiles its own statements")
        return None
    rehearsed = Rehearsed(time.perf_counter() - began, status, answers)
    log.info("rehearsed a job (%s) in %.0f ms", status, 1000 * rehearsed.seconds)
    return rehearsed


def _play(coordinator: Coordinator, sessions: sessionmaker[Session]) -> tuple[str, dict[str, int]]:
    """Two sites and an operator of its own, then ``play``."""
    tag = f"rehearsal-{secrets.token_hex(6)}"  # no real site or user bears it
    names = [f"{tag}-{i}" for i in range(SITES)]
    with sessions.begin() as session:
        owner = Principal(name=tag, role="operator")
        sites = [
            Site(name=name, credential_hash=secrets.token_hex(32), enrolled_at=utcnow())
            for name in names
        ]
        session.add_all([owner, *sites])
        session.flush()
        owner_id, site_ids = owner.id, [site.id for site in sites]
    return play(coordinator, sessions, job_spec(tag, names), owner_id, site_ids)


def job_spec(project: str, sites: list[str]) -> JobSpec:
    """The rehearsal's job: a logistic model of two numeric features, a statistics round,
    two training rounds scored on held-out rows, and the evaluation, for ``sites``."""
    return JobSpec.model_validate(
        {
            "name": "rehearsal",
            "project": project,
            "dataset": "data",
            "features": list(FEATURES),
            "outcome": {"type": "binary", "label": "ext.y"},
            "model": {"type": "logistic"},
            "rounds": 2,
            "sites": sites,
            "min_sites": len(sites),
        }
    )


def play(
    coordinator: Coordinator,
    sessions: sessionmaker[Session],
    spec: JobSpec,
    owner_id: int,
    site_ids: list[int],
) -> tuple[str, dict[str, int]]:
    """Submit ``spec`` and answer every task of it as edges would (``TRAIN_ROWS`` rows each),
    until no site has one; the job's status then, and the answers by kind of task. A job still
    handing out tasks after all its rounds (a statistics round, ``spec.rounds``, the
    evaluation) raises ``RuntimeError``: a start never waits on it."""
    job_id = coordinator.submit(spec, owner_id).id
    answers = asyncio.run(_answer_rounds(coordinator, spec, site_ids))
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status, dict(answers)


async def _answer_rounds(
    coordinator: Coordinator, spec: JobSpec, site_ids: list[int]
) -> Counter[str]:
    """Each round's answers handed over together, as the routes hand over answers whose sites
    wait for their next task (``record_soon``, patient): recorded in one batch, the next
    tasks coming with the acknowledgements. A batch of several runs the statements of many
    rows at once (``executemany``), which SQLAlchemy compiles apart from the one-row form:
    answered one at a time, the rehearsal left them to the first real round."""
    answers: Counter[str] = Counter()
    tasks = {site_id: coordinator.next_task(site_id) for site_id in site_ids}
    for _ in range(spec.rounds + 3):
        given = {site_id: task for site_id, task in tasks.items() if task is not None}
        if not given:
            return answers
        acks = await asyncio.gather(
            *(
                coordinator.record_soon(submission(coordinator, site_id, spec, task), True)
                for site_id, task in given.items()
            )
        )
        answers.update(task.kind for task in given.values())
        tasks = {site_id: ack.next_task for site_id, ack in zip(given, acks, strict=True)}
    raise RuntimeError(f"the rehearsal job still hands out tasks after {spec.rounds + 2} rounds")


def submission(
    coordinator: Coordinator, site_id: int, spec: JobSpec, task: TaskAssignment
) -> Submission:
    """What an edge would send for ``task``, as its route hands it over to be recorded
    (``Coordinator.record``): a result as the body's bytes, read there."""
    if task.kind == "stats":
        n = float(TRAIN_ROWS)
        stats = StatsResult(n=TRAIN_ROWS, sums=[n] * len(FEATURES), sumsq=[2 * n] * len(FEATURES))
        return coordinator.result_answer(site_id, task.task_id, stats.model_dump_json().encode())
    evaluation = _evaluation(spec)
    if task.kind == "evaluate":
        result = EvaluateResult(evaluation=evaluation, compute_seconds=0.01)
        body = result.model_dump_json().encode()
        return coordinator.result_answer(site_id, task.task_id, body)
    assert task.model_sha256 is not None  # a training task names its global model
    model = task.model or coordinator.blobs.read(task.model_sha256)
    meta = TrainResult(
        task_id=task.task_id,
        n_train=TRAIN_ROWS,
        train_loss=0.5,
        evaluation=evaluation if spec.evaluation.scores(task.round) else None,
        compute_seconds=0.01,
    )
    # a step from the model it was given: the next global model is a new one, written as a
    # real round writes it (the same model again would skip that statement)
    stepped = {name: values + STEP for name, values in tensors.decode(model).items()}
    update = tensors.encode(stepped, meta)
    return coordinator.update_answer(site_id, task.task_id, update, tensors.sha256(update))


def _evaluation(spec: JobSpec) -> Evaluation:
    """Held-out figures of the rows the job holds out beside ``TRAIN_ROWS``, as a site
    computes them."""
    fraction = spec.evaluation.holdout
    held_out = next(e for e in range(1, TRAIN_ROWS) if holdout_size(TRAIN_ROWS + e, fraction) == e)
    label = np.arange(held_out) % 2
    return binary_evaluation(label, np.linspace(-1.0, 1.0, held_out), None)
