"""Chaos (issue 10): a 5-site, 10-round training job on real processes while edges and the
orchestrator are killed (SIGKILL) and restarted, a proxy drops, delays and truncates the
edges' requests and responses, and one site answers every task with malformed numbers (four
demo hospitals run real edges; the fifth site is played by this test, ``tests.chaos.Rogue``).

The job must complete, and every round must have aggregated exactly the results the database
records as accepted: the pooled statistics are recomputed from the accepted rows, and each
training round's next global model from the accepted updates (the proxy kept every update
body; the orchestrator deletes them once a round closes). With a fixed seed and no faults,
two runs of the same job give a bit-identical final model, one before the chaos and one
after. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from oncofed.client import Client, ClientError
from oncofed.demo.data import demo_specs, write_exports
from oncofed.learning.aggregate import Clipped, WeightedMean, clip_scale
from oncofed.learning.data import pooled_stats
from oncofed.learning.registry import parameter_shapes
from oncofed.learning.strategies import build_strategy
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.db import Job, Round, Task, make_engine, session_factory
from oncofed.orchestrator.settings import Settings
from oncofed.wire.messages import JobPublic, RoundPublic, StatsResult, TrainResult
from oncofed.wire.spec import JobSpec
from oncofed.wire.stream import TensorFile
from tests.chaos import FAULTS, TRAIN_ATTACKS, ChaosFederation, Rogue, running

pytestmark = pytest.mark.slow
SEED = 20261210
HONEST = ("north", "south", "east", "west")
ROGUE = "mallory"
JOB_TIMEOUT_S = 240.0
Weights = dict[str, np.ndarray]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def federation(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChaosFederation]:
    """The four demo hospitals' edges, each importing its own export, behind a fault proxy
    (faults off until a test turns them on)."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    exports = write_exports(tmp_path / "exports")
    fed = ChaosFederation(tmp_path, exports, database_url=url, proxy_seed=SEED)
    with fed:
        yield fed


def training_spec(sites: Sequence[str], round_timeout_s: float) -> JobSpec:
    """The demo's logistic model for 10 training rounds, seed 7; a round closes without the
    sites that have not answered within ``round_timeout_s``, and two sites are enough."""
    spec = demo_specs()[1]
    changes = {"rounds": 10, "round_timeout_s": round_timeout_s, "min_sites": 2}
    return spec.model_copy(update={**changes, "sites": list(sites), "name": "chaos"})


# -- the chaos ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """Kill (SIGKILL) and restart one process once the job reaches ``round``; with ``hold``,
    the orchestrator, in a training round that has accepted an update while that site's edge
    is held back by the proxy (so the restarted process must rebuild the round's sum)."""

    round: int
    target: str  # "orchestrator" or an edge's site
    hold: str | None = None


def chaos_plan(rng: random.Random) -> list[Action]:
    """Two orchestrator kills (one in a half-aggregated round) and four edge kills, at random
    rounds of the job."""
    first, second = rng.sample(range(1, 8), 2)  # a half-aggregated round follows the first
    kills = [Action(first, "orchestrator", rng.choice(HONEST)), Action(second, "orchestrator")]
    kills += [Action(rng.randrange(0, 10), rng.choice(HONEST)) for _ in range(4)]
    return sorted(kills, key=lambda a: a.round)


def reached(number: int, rnd: RoundPublic) -> bool:
    return rnd.number >= number


def half_aggregated(rnd: RoundPublic) -> bool:
    """A training round still open that has accepted an update."""
    accepted = any(s.status == "accepted" for s in rnd.sites.values())
    return rnd.kind == "train" and rnd.status == "open" and accepted


def watch(
    client: Client, job_id: str, ready: Callable[[RoundPublic], bool], give_up: float
) -> JobPublic:
    """The job once its newest round is ``ready``, or once it has ended."""
    while True:
        job = client.job(job_id)
        if job.status != "running" or ready(job.rounds[-1]):
            return job
        assert time.monotonic() < give_up, f"job {job_id} stalled in round {job.rounds[-1]}"
        time.sleep(0.05)


def unleash(
    fed: ChaosFederation, client: Client, job_id: str, plan: list[Action], rng: random.Random
) -> list[str]:
    """Carry out ``plan`` while the job runs; what was done, and in which round."""
    give_up, done = time.monotonic() + JOB_TIMEOUT_S, []
    for action in plan:
        job = watch(client, job_id, functools.partial(reached, action.round), give_up)
        if job.status != "running":
            break
        if action.hold is not None:
            with fed.holding(action.hold):
                job = watch(client, job_id, half_aggregated, give_up)
                if job.status != "running":
                    break
                fed.kill_orchestrator()
                fed.start_orchestrator()
            rnd = job.rounds[-1]
            accepted = sorted(s for s, t in rnd.sites.items() if t.status == "accepted")
            done.append(f"killed the orchestrator in round {rnd.number} after {accepted}")
            continue
        time.sleep(rng.uniform(0.0, 1.0))  # into the round: edges training, uploading
        if action.target == "orchestrator":
            fed.kill_orchestrator()
            fed.start_orchestrator()
        else:
            fed.kill_edge(action.target)
            fed.start_edge(action.target)
        done.append(f"killed {action.target} in round {job.rounds[-1].number} or later")
    return done


def finished(client: Client, job_id: str, fed: ChaosFederation) -> JobPublic:
    """The job once it has ended; on a timeout, the logs say why."""
    try:
        return client.wait(job_id, timeout=JOB_TIMEOUT_S, poll=0.2)
    except ClientError as exc:
        logs = "\n".join(
            f"--- {name}\n{fed.log_tail(name)}"
            for name in ["orchestrator", *(f"edge-{site}" for site in HONEST)]
        )
        raise AssertionError(f"{exc}\n{logs}") from exc


def run_calm(fed: ChaosFederation, client: Client, spec: JobSpec) -> tuple[JobPublic, bytes]:
    """The job with no faults; it ends completed, every site accepted in every round."""
    job = finished(client, client.submit(spec).id, fed)
    assert job.status == "completed", job.error
    states = {(r.number, s): t.status for r in job.rounds for s, t in r.sites.items()}
    assert set(states.values()) == {"accepted"}, states
    return job, client.model_bytes(job.id)


# -- what the database recorded -------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One site's task in one round, as stored."""

    site: str
    status: str
    detail: str | None
    result_sha: str | None
    result_json: str | None


@dataclass(frozen=True)
class RoundRecord:
    number: int
    kind: str
    status: str
    input_sha: str | None
    tasks: list[Recorded]  # in site id order, as the orchestrator reads them

    @property
    def accepted(self) -> list[Recorded]:
        return [t for t in self.tasks if t.status == "accepted"]


def job_record(fed: ChaosFederation, job_id: str) -> tuple[Job, list[RoundRecord]]:
    """The job's row and every round with its tasks, read straight from the database."""
    engine = make_engine(Settings.load(fed.state_dir).url)
    try:
        session: Session
        with session_factory(engine)() as session:
            job = session.get(Job, job_id)
            assert job is not None
            rounds = session.scalars(
                select(Round)
                .where(Round.job_id == job_id)
                .order_by(Round.number)
                .options(selectinload(Round.tasks).selectinload(Task.site))
            ).all()
            records = [
                RoundRecord(
                    r.number,
                    r.kind,
                    r.status,
                    r.input_sha,
                    [
                        Recorded(t.site.name, t.status, t.detail, t.result_sha, t.result_json)
                        for t in sorted(r.tasks, key=lambda t: t.site_id)
                    ],
                )
                for r in rounds
            ]
            session.expunge(job)
            return job, records
    finally:
        engine.dispose()


def aggregate(spec: JobSpec, start: bytes, updates: Sequence[tuple[bytes, float]]) -> Weights:
    """The next global model from the round's model ``start`` and the sites' updates with
    their sample counts: each clipped to the job's norm, their weighted mean, the strategy."""
    shapes = parameter_shapes(spec.model, spec.n_inputs)
    total = WeightedMean(shapes)
    refuse = spec.local.over_clip == "refuse"
    with TensorFile(start) as begin:
        for body, weight in updates:
            with TensorFile(body) as update:
                scale = clip_scale(update, begin, shapes, spec.local.clip_norm, refuse)
                total.add_chunks(Clipped(update, begin, scale).chunks(shapes), weight)
        strategy = build_strategy(spec.strategy)
        model = {}
        for name, shape in shapes.items():
            mean = np.concatenate([piece for _, piece in total.mean_chunks(name)])
            new, _ = strategy.update(begin.read(name).astype(np.float64), mean, {})
            model[name] = new.astype(np.float32).reshape(shape)
    return model


def tensors_of(blob: bytes) -> Weights:
    with TensorFile(blob) as tensors:
        return {name: tensors.read(name).reshape(e.shape) for name, e in tensors.entries.items()}


def check_training_round(
    spec: JobSpec, start: bytes, after: bytes, rnd: RoundRecord, sent: Mapping[str, bytes]
) -> None:
    """The model after ``rnd`` is the aggregate of exactly its accepted updates, to the bit.
    The orchestrator folds them in the order they arrived (after a restart, the ones accepted
    before it in site order), this test in site order: float32 weights times sample counts,
    summed in float64, come to the same float32 mean in any order."""
    updates = []
    for task in rnd.accepted:
        assert task.result_sha is not None and task.result_json is not None
        body = sent.get(task.result_sha)
        assert body is not None, f"round {rnd.number}: {task.site}'s update never went out"
        stored = TrainResult.model_validate_json(task.result_json)
        with TensorFile(body) as update:
            assert update.meta(TrainResult) == stored, f"round {rnd.number}: {task.site}"
        updates.append((body, float(stored.n_train)))
    expected, actual = aggregate(spec, start, updates), tensors_of(after)
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(
            actual[name], expected[name], f"round {rnd.number}: not its accepted updates' mean"
        )


def check_records(
    fed: ChaosFederation, job_id: str, spec: JobSpec, sent: Mapping[str, bytes]
) -> list[RoundRecord]:
    """Every round closed once with one task per site; the pooled statistics and each next
    global model are what the accepted results make, and nothing else."""
    job, rounds = job_record(fed, job_id)
    kinds = ["stats", *["train"] * spec.rounds, "evaluate"]
    assert [(r.number, r.kind, r.status) for r in rounds] == [
        (i, kind, "closed") for i, kind in enumerate(kinds)
    ]
    for rnd in rounds:
        sites = [t.site for t in rnd.tasks]
        assert sorted(sites) == sorted([*HONEST, ROGUE]), (rnd.number, sites)
        shas = [t.result_sha for t in rnd.accepted]
        assert len(set(shas)) == len(shas), f"round {rnd.number} holds a result twice"
        assert len(rnd.accepted) >= spec.min_sites, rnd
    stats = [StatsResult.model_validate_json(t.result_json or "") for t in rounds[0].accepted]
    assert job.pooled_json is not None
    assert StatsResult.model_validate_json(job.pooled_json) == pooled_stats(stats)
    blobs = BlobStore(Settings.load(fed.state_dir).blob_dir)
    model = [blobs.read(r.input_sha or "") for r in rounds[1:]]  # what each round was sent
    assert rounds[-1].input_sha == job.model_sha
    for rnd, start, after in zip(rounds[1:-1], model[:-1], model[1:], strict=True):
        check_training_round(spec, start, after, rnd, sent)
    return rounds


def check_rogue(rogue: Rogue, rounds: Sequence[RoundRecord]) -> None:
    """Each malformed answer was refused (422) and recorded as the rogue's failure of its
    task, in every round (a post repeated after a lost answer finds its task closed: 409);
    the bodies with a lying SHA-256 header were refused (400) and not recorded."""
    assert rogue.errors == []
    for rnd in rounds:
        [task] = [t for t in rnd.tasks if t.site == ROGUE]
        assert task.status == "rejected" and task.detail, (rnd.number, task)
        answers = [a for a in rogue.answers if a.round == rnd.number]
        assert answers, f"the rogue never answered round {rnd.number}"
        for answer in answers:
            if answer.status_code != 409:
                assert (answer.status_code, answer.ack.get("status")) == (422, "rejected"), answer
                assert answer.ack["detail"] == task.detail
    assert rogue.lies_refused and set(rogue.lies_refused) == {400}, rogue.lies_refused
    assert {a.attack for a in rogue.answers if a.kind == "train"} == set(TRAIN_ATTACKS)


def test_a_job_survives_chaos_and_calm_runs_are_bit_identical(
    federation: ChaosFederation,
) -> None:
    """A calm run; the same job with a rogue fifth site, under faults and kills; the calm run
    again, which must give the first one's model to the bit."""
    fed, rng = federation, random.Random(SEED)
    calm_spec = training_spec(HONEST, round_timeout_s=120.0)  # no site ever left out
    credential = fed.enrol_site(ROGUE)
    with fed.client() as client:
        before, model_before = run_calm(fed, client, calm_spec)

        fed.proxy.faulty = True
        spec = training_spec([*HONEST, ROGUE], round_timeout_s=30.0)
        plan = chaos_plan(rng)
        with running(Rogue(fed.url, credential, SEED)) as rogue:
            job_id = client.submit(spec).id
            done = unleash(fed, client, job_id, plan, rng)
            job = finished(client, job_id, fed)
        fed.proxy.faulty = False
        story = f"{done}; faults {dict(fed.proxy.faults)} in {fed.proxy.exchanges} exchanges"
        print(story)  # shown when the test fails
        assert job.status == "completed", f"{job.error}; {story}"
        assert len(done) == len(plan), story
        assert all(fed.proxy.faults[f] > 0 for f in FAULTS), story
        rounds = check_records(fed, job_id, spec, fed.proxy.updates)
        check_rogue(rogue, rounds)
        model_chaos = client.model_bytes(job_id)
        everyone = all(sorted(t.site for t in r.accepted) == sorted(HONEST) for r in rounds)

        after, model_after = run_calm(fed, client, calm_spec)
    assert after.model_sha256 == before.model_sha256
    assert model_after == model_before
    if everyone:  # every honest update of every round counted once, whatever happened meanwhile
        assert model_chaos == model_before, story
