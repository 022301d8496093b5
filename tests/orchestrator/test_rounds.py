"""The round state machine, driven directly: aggregation, rejection, idempotency, restart."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from oncofed.learning.data import holdout_size
from oncofed.learning.registry import initial_weights, parameter_shapes
from oncofed.orchestrator import updates
from oncofed.orchestrator.db import Job, Round, utcnow, written
from oncofed.orchestrator.errors import Conflict, Forbidden, NotFound
from oncofed.wire import tensors
from oncofed.wire.messages import (
    EvaluateResult,
    Evaluation,
    StatsResult,
    TaskAssignment,
    TrainResult,
)
from oncofed.wire.spec import JobSpec
from tests import support
from tests.sites import enrol
from tests.support import State


def make_spec(**overrides: object) -> JobSpec:
    """``support.make_spec`` with a clip norm that the toy models posted here (far from the
    initial model) all fit under: the orchestrator's clipping is tested in
    ``test_robust_rounds.py``."""
    return support.make_spec(**{"local": {"clip_norm": 1e6}, **overrides})


SHAPES = parameter_shapes(make_spec().model, 2)


def take(state: State, site: str) -> TaskAssignment:
    task = state.coordinator.next_task(state.sites[site])
    assert task is not None, f"no task for {site}"
    return task


def stats(n: int) -> StatsResult:
    return StatsResult(n=n, sums=[float(n), 2.0 * n], sumsq=[2.0 * n, 5.0 * n])


def weights_like(value: float) -> tensors.Weights:
    return {k: np.full(s, value, dtype=np.float32) for k, s in SHAPES.items()}


def held_out(n_train: int) -> int:
    """The held-out count that goes with ``n_train`` training rows at the default 25%."""
    return next(e for e in range(1, n_train) if holdout_size(n_train + e, 0.25) == e)


def encoded_update(
    task: TaskAssignment,
    weights: tensors.Weights,
    n: int,
    n_train: int | None = None,
    *,
    scored: bool = True,
) -> bytes:
    """A site's update for ``task``: ``weights``, trained on ``n_train`` (or ``n``) rows, with
    the held-out figures of a ``scored`` round."""
    meta = TrainResult(
        task_id=task.task_id,
        n_train=n_train or n,
        train_loss=0.5,
        evaluation=Evaluation(n_eval=held_out(n), metrics={"auc": 0.6}) if scored else None,
        compute_seconds=0.01,
    )
    return tensors.encode(weights, meta)


def post_update(
    state: State,
    site: str,
    task: TaskAssignment,
    weights: tensors.Weights,
    n: int,
    n_train: int | None = None,
    *,
    scored: bool = True,
    spooled: bool = True,
) -> tuple[str, str]:
    """Post an update through the coordinator: ``spooled`` to a file, as the route hands over
    one of unknown or large length, or as bytes, as it hands over a small one."""
    data = encoded_update(task, weights, n, n_train, scored=scored)
    body: Path | bytes = data
    if spooled:
        body = state.coordinator.blobs.tmp / f"{task.task_id}.part"
        body.write_bytes(data)
    ack = state.coordinator.accept_update(
        state.sites[site], task.task_id, body, tensors.sha256(data)
    )
    return ack.status, ack.detail


def global_model(state: State, job_id: str) -> tensors.Weights:
    with state.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.model_sha is not None
        return tensors.decode(state.coordinator.blobs.read(job.model_sha))


def job_row(state: State, job_id: str) -> Job:
    with state.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def through_stats(state: State, job_id: str, sizes: dict[str, int]) -> None:
    for site, n in sizes.items():
        task = take(state, site)
        assert task.kind == "stats" and task.job_id == job_id
        state.coordinator.accept_result(state.sites[site], task.task_id, stats(n))


def test_fedavg_round_is_the_sample_weighted_mean(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    assert job.sites == ["alpha", "beta"]
    through_stats(state, job.id, {"alpha": 30, "beta": 10})

    a, b = take(state, "alpha"), take(state, "beta")
    assert a.kind == b.kind == "train" and a.round == 1
    assert a.standardization is not None
    assert a.standardization.mean == pytest.approx([1.0, 2.0])  # pooled sums / pooled n
    assert a.standardization.std == pytest.approx([1.0, 1.0])  # sqrt(2 - 1), sqrt(5 - 4)
    initial = initial_weights(a.spec.model, 2, a.spec.seed)
    assert a.model_sha256 is not None
    sent = tensors.decode(state.coordinator.blobs.read(a.model_sha256))  # read by safetensors
    assert sent.keys() == initial.keys()
    for name, array in initial.items():
        np.testing.assert_array_equal(sent[name], array)

    assert post_update(state, "alpha", a, weights_like(1.0), 30) == ("accepted", "")
    assert post_update(state, "beta", b, weights_like(5.0), 10) == ("accepted", "")
    expected = (30 * 1.0 + 10 * 5.0) / 40
    for array in global_model(state, job.id).values():
        np.testing.assert_allclose(array, expected, rtol=1e-6)

    final = take(state, "alpha")
    assert final.kind == "evaluate" and final.round == 2
    for site, n in (("alpha", 30), ("beta", 10)):
        evaluation = Evaluation(n_eval=held_out(n), metrics={"auc": 0.7})
        task_id = final.task_id if site == "alpha" else take(state, site).task_id
        result = EvaluateResult(evaluation=evaluation, compute_seconds=0)
        state.coordinator.accept_result(state.sites[site], task_id, result)
    assert job_row(state, job.id).status == "completed"


def test_duplicate_post_is_acknowledged_and_never_counted_twice(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    update = weights_like(1.0)
    assert post_update(state, "alpha", a, update, 30)[0] == "accepted"
    assert post_update(state, "alpha", a, update, 30)[0] == "duplicate"
    with pytest.raises(Conflict, match="different accepted result"):
        post_update(state, "alpha", a, weights_like(9.0), 30)
    post_update(state, "beta", b, weights_like(5.0), 10)
    for array in global_model(state, job.id).values():
        np.testing.assert_allclose(array, 2.0, rtol=1e-6)  # (30*1 + 10*5) / 40


@pytest.mark.parametrize("hint", [0, 1, 2, 99, None])
def test_the_hint_of_tasks_left_never_closes_a_round_early_or_keeps_it_open(
    state: State, hint: int | None
) -> None:
    """Whether a batch reads the round's tasks or counts its open ones follows a hint in
    memory (``Coordinator._left``); a wrong one changes neither outcome."""
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")

    def answer(site: str, task: TaskAssignment, value: float, n: int) -> None:
        if hint is None:
            state.coordinator._left.pop(job.id, None)
        else:
            state.coordinator._left[job.id] = hint
        assert post_update(state, site, task, weights_like(value), n)[0] == "accepted"

    answer("alpha", a, 1.0, 30)
    with state.sessions() as session:  # one of two answered: still open
        assert session.scalars(select(Round.status).where(Round.job_id == job.id)).all() == [
            "closed",
            "open",
        ]
    answer("beta", b, 5.0, 10)
    for array in global_model(state, job.id).values():
        np.testing.assert_allclose(array, 2.0, rtol=1e-6)
    assert take(state, "alpha").kind == "evaluate"


def test_a_rounds_close_writes_rounds_and_job_by_statements_that_the_database_holds(
    state: State,
) -> None:
    """The close of a training round, its job's next model and the next round are written by
    statements (``db.written``, ``Progress.open_round``), not by the session's unit of work;
    what the objects hold is what the database holds, and the next round is handed out."""
    job = state.coordinator.submit(make_spec(rounds=2), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    flushed: list[object] = []

    def before_flush(session: Session, *_: object) -> None:
        flushed.extend(o for o in [*session.new, *session.dirty] if isinstance(o, Job | Round))

    event.listen(state.sessions, "before_flush", before_flush)
    try:
        post_update(state, "alpha", a, weights_like(1.0), 30)
        post_update(state, "beta", b, weights_like(5.0), 10)  # round 1 closes: round 2 opens
    finally:
        event.remove(state.sessions, "before_flush", before_flush)
    assert flushed == []
    with state.sessions() as session:
        rounds = session.scalars(
            select(Round).where(Round.job_id == job.id).order_by(Round.number)
        ).all()
        first, second = rounds[1], rounds[2]
        model_sha = session.get_one(Job, job.id).model_sha
    assert (first.status, second.status, second.number) == ("closed", "open", 2)
    assert first.closed_at is not None and first.closed_at <= second.opened_at
    assert model_sha is not None and model_sha != first.input_sha
    assert second.input_sha == model_sha and second.announced_sha is not None
    again = take(state, "alpha")
    assert (again.round, again.model_sha256) == (2, model_sha)
    for array in global_model(state, job.id).values():
        np.testing.assert_allclose(array, 2.0, rtol=1e-6)


def test_written_sends_nothing_for_values_held_and_leaves_nothing_to_flush(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    statements: list[str] = []
    engine = state.sessions.kw["bind"]

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    with state.sessions.begin() as session:
        row = session.get_one(Job, job.id)
        event.listen(engine, "before_cursor_execute", seen)
        try:
            written(session, row, model_sha=row.model_sha, error=row.error)
            assert statements == []
            written(session, row, model_sha="f" * 64, error="noted")
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert len(statements) == 1 and statements[0].lstrip().upper().startswith("UPDATE")
        assert (row.model_sha, row.error) == ("f" * 64, "noted")
        assert not session.dirty
    with state.sessions() as session:
        stored = session.get_one(Job, job.id)
        assert (stored.model_sha, stored.error) == ("f" * 64, "noted")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({k: np.full(s, np.nan, np.float32) for k, s in SHAPES.items()}, "NaN or infinite"),
        ({k: np.full(s, np.inf, np.float32) for k, s in SHAPES.items()}, "NaN or infinite"),
        ({k: np.zeros((3, *s), np.float32) for k, s in SHAPES.items()}, "shape"),
        ({"layers.0.weight": np.zeros((1, 2), np.float32)}, "names differ"),
    ],
)
def test_bad_update_is_rejected_and_the_round_goes_on(
    state: State, bad: tensors.Weights, message: str
) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    status, detail = post_update(state, "alpha", a, bad, 30)
    assert status == "rejected" and message in detail
    assert post_update(state, "beta", b, weights_like(5.0), 10)[0] == "accepted"
    for array in global_model(state, job.id).values():
        np.testing.assert_allclose(array, 5.0)  # only beta counted
    assert take(state, "alpha").kind == "evaluate"  # alpha stays in the job


def test_garbage_bytes_are_rejected(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a = take(state, "alpha")
    path = state.coordinator.blobs.tmp / "garbage"
    path.write_bytes(b"\x00" * 7)
    ack = state.coordinator.accept_update(state.sites["alpha"], a.task_id, path, "0" * 64)
    assert ack.status == "rejected" and "safetensors" in ack.detail


@pytest.mark.parametrize("held", [True, False], ids=["held", "read-each-time"])
def test_a_rounds_global_model_is_held_while_it_is_open(
    state: State, monkeypatch: pytest.MonkeyPatch, held: bool
) -> None:
    """Each update is measured from the round's global model: held in memory from the
    round's first update to its close (``updates.held_start``), or, past ``HELD_START``
    elements, read from its file for each; the next model is the same."""
    if not held:
        monkeypatch.setattr(updates, "HELD_START", 1)
    held_now = state.coordinator._starts  # round id -> the held model (None: read each time)
    job = state.coordinator.submit(make_spec(rounds=2), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    for number in (1, 2):
        a, b = take(state, "alpha"), take(state, "beta")
        assert post_update(state, "alpha", a, weights_like(0.1 * number), 30)[0] == "accepted"
        assert [held_now[r] is not None for r in held_now] == [held]  # this round's only
        assert post_update(state, "beta", b, weights_like(0.5 * number), 10)[0] == "accepted"
        assert held_now == {}  # dropped at its close
        for array in global_model(state, job.id).values():
            np.testing.assert_allclose(array, 0.2 * number, rtol=1e-6)


def test_restart_mid_round_rebuilds_the_sum_from_accepted_updates(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    post_update(state, "alpha", a, weights_like(1.0), 30)
    state.restart()  # the running sum in memory is gone
    again = take(state, "beta")
    assert again.task_id == b.task_id  # a delivered, unanswered task is delivered again
    post_update(state, "beta", b, weights_like(5.0), 10)
    for array in global_model(state, job.id).values():
        np.testing.assert_allclose(array, 2.0, rtol=1e-6)


def reads_of_round_tasks(state: State, post: Callable[[], object]) -> int:
    """How many times ``post`` read a round's tasks (``Round.tasks``, loaded when asked)."""
    reads: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        folded = " ".join(statement.split())
        if "FROM task WHERE" in folded and "= task.round_id" in folded:  # either dialect
            reads.append(folded)

    engine = state.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        post()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    return len(reads)


def test_a_round_opened_here_starts_its_sum_without_reading_its_tasks(state: State) -> None:
    """A round's first update needs no read of the round's tasks to rebuild its running sum
    when this coordinator opened it (none accepted yet); after a restart it reads them."""
    job = state.coordinator.submit(make_spec(rounds=2), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    first = functools.partial(post_update, state, "alpha", a, weights_like(1.0), 30)
    assert reads_of_round_tasks(state, first) == 0
    post_update(state, "beta", b, weights_like(5.0), 10)  # round 1 closes: 2.0
    a, b = take(state, "alpha"), take(state, "beta")
    state.restart()
    again = functools.partial(post_update, state, "alpha", a, weights_like(4.0), 30)
    assert reads_of_round_tasks(state, again) == 1  # its sum rebuilt from the database
    post_update(state, "beta", b, weights_like(8.0), 10)
    for array in global_model(state, job.id).values():
        np.testing.assert_allclose(array, 5.0, rtol=1e-6)  # (30*4 + 10*8) / 40


def test_deadline_closes_the_round_without_the_missing_site(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a = take(state, "alpha")
    post_update(state, "alpha", a, weights_like(3.0), 30)
    _expire_open_rounds(state, job.id)
    state.coordinator.expire()
    for array in global_model(state, job.id).values():
        np.testing.assert_allclose(array, 3.0)
    assert take(state, "beta").kind == "evaluate"  # beta is back in the next round


def test_too_few_sites_fails_the_job_with_the_reason(state: State) -> None:
    job = state.coordinator.submit(make_spec(min_sites=2), state.admin_id)
    state.coordinator.accept_result(state.sites["alpha"], take(state, "alpha").task_id, stats(30))
    state.coordinator.decline(state.sites["beta"], take(state, "beta").task_id, "cohort too small")
    row = job_row(state, job.id)
    assert row.status == "failed"
    assert (
        row.error is not None and "min_sites is 2" in row.error and "cohort too small" in row.error
    )


def test_a_failure_of_many_sites_names_ten_and_counts_the_rest(state: State) -> None:
    names = [f"site{i:02d}" for i in range(24)]
    enrol(state, names)
    job = state.coordinator.submit(make_spec(sites=names, min_sites=24), state.admin_id)
    for name in names:
        state.coordinator.decline(state.sites[name], take(state, name).task_id, "not today")
    error = job_row(state, job.id).error
    assert error is not None and "0 sites reported, min_sites is 24" in error
    assert error.count("declined (not today)") == 10 and error.endswith("and 14 more sites")


def test_declining_site_is_left_out_of_later_rounds(state: State) -> None:
    job = state.coordinator.submit(make_spec(), state.admin_id)
    state.coordinator.accept_result(state.sites["alpha"], take(state, "alpha").task_id, stats(30))
    state.coordinator.decline(state.sites["beta"], take(state, "beta").task_id, "not today")
    assert take(state, "alpha").kind == "train"
    assert state.coordinator.next_task(state.sites["beta"]) is None
    assert job_row(state, job.id).status == "running"


def test_a_site_cannot_answer_or_read_for_another(state: State) -> None:
    state.coordinator.submit(make_spec(), state.admin_id)
    a = take(state, "alpha")
    with pytest.raises(Forbidden):
        state.coordinator.accept_result(state.sites["beta"], a.task_id, stats(5))
    with pytest.raises(NotFound):
        state.coordinator.accept_result(state.sites["beta"], "no-such-task", stats(5))
    with pytest.raises(NotFound):
        state.coordinator.blob_for_site(state.sites["alpha"], "f" * 64)


def test_result_after_the_round_closed_is_refused(state: State) -> None:
    job = state.coordinator.submit(make_spec(), state.admin_id)
    a, b = take(state, "alpha"), take(state, "beta")
    state.coordinator.accept_result(state.sites["alpha"], a.task_id, stats(30))
    _expire_open_rounds(state, job.id)
    state.coordinator.expire()
    with pytest.raises(Conflict, match="closed"):
        state.coordinator.accept_result(state.sites["beta"], b.task_id, stats(10))


def _expire_open_rounds(state: State, job_id: str) -> None:
    with state.sessions.begin() as session:
        for rnd in session.query(Round).filter_by(job_id=job_id, status="open"):
            rnd.deadline = utcnow() - timedelta(seconds=1)


def test_a_site_cannot_claim_more_patients_than_it_reported(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a = take(state, "alpha")
    status, detail = post_update(state, "alpha", a, weights_like(1.0), 30, n_train=10**9)
    assert status == "rejected" and "differs from the 30 reported" in detail


def test_statistics_of_the_wrong_width_are_refused(state: State) -> None:
    state.coordinator.submit(make_spec(), state.admin_id)
    a = take(state, "alpha")
    bad = StatsResult(n=30, sums=[1.0, 2.0], sumsq=[1.0, 2.0, 3.0])
    ack = state.coordinator.accept_result(state.sites["alpha"], a.task_id, bad)
    assert ack.status == "rejected" and "sums of squares" in ack.detail
