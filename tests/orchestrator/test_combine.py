"""Answers and task requests that arrive together are served together (``combine``): one
transaction for a batch, every caller its own result, and an error fails only its own caller
(SQLite and PostgreSQL)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sqlalchemy import event, select

from oncofed.orchestrator.combine import Combiner, Pending
from oncofed.orchestrator.db import Job, Task
from oncofed.orchestrator.errors import Conflict
from oncofed.orchestrator.rounds import Answer, Recorded
from oncofed.wire.messages import ResultAck, StatsResult
from tests.orchestrator.test_rounds import (
    global_model,
    make_spec,
    post_update,
    stats,
    take,
    through_stats,
    weights_like,
)
from tests.sites import enrol
from tests.support import State


def test_calls_queued_while_one_is_served_are_served_together() -> None:
    batches: list[list[int]] = []
    started, release = threading.Event(), threading.Event()

    def serve(_: object, batch: list[Pending[int, int]]) -> None:
        batches.append([item.request for item in batch])
        started.set()
        release.wait(10)
        for item in batch:
            item.result = item.request * 10

    combiner: Combiner[int, int] = Combiner(serve)  # type: ignore[arg-type]
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(combiner, "job", 0)
        assert started.wait(10)
        rest = [pool.submit(combiner, "job", n) for n in range(1, 8)]
        while sum(len(q) for q in combiner._queues.values()) < 7:  # all queued behind it
            time.sleep(0.01)
        release.set()
        results = [first.result(10), *(f.result(10) for f in rest)]
    assert results == [n * 10 for n in range(8)]
    assert batches == [[0], list(range(1, 8))]


def test_an_error_serving_a_batch_reaches_every_caller_in_it() -> None:
    def serve(_: object, batch: list[Pending[int, int]]) -> None:
        raise OSError("disk full")

    combiner: Combiner[int, int] = Combiner(serve)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        combiner("job", 1)
    assert not combiner._queues and not combiner._serving  # nothing left behind


def captured(state: State, posts: list[Callable[[], object]]) -> list[Answer]:
    """The answers the ``posts`` would queue, captured unrecorded so a test can record them
    as one batch."""
    coordinator, answers = state.coordinator, []
    queue = coordinator._answers

    def capture(_: object, answer: Answer) -> Recorded:
        answers.append(answer)
        return ResultAck(task_id=answer.task_id, status="accepted"), frozenset()

    coordinator._answers = capture  # type: ignore[assignment]
    try:
        for post in posts:
            post()
    finally:
        coordinator._answers = queue
    return answers


def captured_answers(state: State, posts: list[tuple[str, str, StatsResult]]) -> list[Answer]:
    """The answers ``accept_result`` would queue for ``posts`` (site, task id, result)."""
    accept = state.coordinator.accept_result
    return captured(state, [functools.partial(accept, state.sites[s], t, r) for s, t, r in posts])


def record(state: State, job_id: str, answers: list[Answer]) -> list[Pending[Answer, Recorded]]:
    batch = [Pending[Answer, Recorded](answer) for answer in answers]
    state.coordinator._record(job_id, batch)
    return batch


def accepted(state: State, job_id: str) -> list[str]:
    with state.sessions() as session:
        tasks = session.scalars(select(Task).join(Task.round).where(Task.status == "accepted"))
        return sorted(t.site.name for t in tasks if t.round.job_id == job_id)


def test_a_refused_answer_in_a_batch_leaves_the_others_recorded(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    a, b = take(state, "alpha"), take(state, "beta")
    state.coordinator.accept_result(state.sites["alpha"], a.task_id, stats(30))
    answers = captured_answers(
        state, [("alpha", a.task_id, stats(31)), ("beta", b.task_id, stats(20))]
    )
    again, first = record(state, job.id, answers)
    with pytest.raises(Conflict, match="different accepted result"):
        again.outcome()
    assert first.outcome()[0].status == "accepted"
    assert accepted(state, job.id) == ["alpha", "beta"]
    with state.sessions() as session:  # the round closed with both: the job moved on
        row = session.get(Job, job.id)
        assert row is not None and row.pooled_json is not None
        assert '"n":50' in row.pooled_json.replace(" ", "")


def test_an_unforeseen_error_fails_only_its_own_answer(state: State) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    a, b = take(state, "alpha"), take(state, "beta")
    good = captured_answers(
        state, [("alpha", a.task_id, stats(30)), ("beta", b.task_id, stats(20))]
    )

    def broken(*_: object) -> ResultAck:
        raise RuntimeError("a bug")

    bad = Answer("no-such-task", broken)
    first, failed, second = record(state, job.id, [good[0], bad, good[1]])
    with pytest.raises(RuntimeError, match="a bug"):
        failed.outcome()
    assert [first.outcome()[0].status, second.outcome()[0].status] == ["accepted", "accepted"]
    assert accepted(state, job.id) == ["alpha", "beta"]  # each once


def test_updates_of_a_batch_rolled_back_are_folded_once_when_recorded_alone(
    state: State,
) -> None:
    job = state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    a, b = take(state, "alpha"), take(state, "beta")
    good = captured(
        state,
        [
            functools.partial(post_update, state, "alpha", a, weights_like(1.0), 30),
            functools.partial(post_update, state, "beta", b, weights_like(5.0), 10),
        ],
    )

    def broken(*_: object) -> ResultAck:
        raise RuntimeError("a bug")

    first, failed, second = record(
        state, job.id, [good[0], Answer("no-such-task", broken), good[1]]
    )
    with pytest.raises(RuntimeError, match="a bug"):
        failed.outcome()
    assert [first.outcome()[0].status, second.outcome()[0].status] == ["accepted", "accepted"]
    for array in global_model(state, job.id).values():  # the update files were in the store
        np.testing.assert_allclose(array, 2.0, rtol=1e-6)  # (30*1 + 10*5) / 40, each once


def test_many_sites_answering_at_once_are_each_counted_once(state: State) -> None:
    names = [f"site{i:02d}" for i in range(24)]
    enrol(state, names)
    job = state.coordinator.submit(make_spec(rounds=1, sites=names), state.admin_id)
    coordinator = state.coordinator
    batches: list[int] = []
    serve: Callable[..., None] = coordinator._answers.serve

    def counting(key: object, batch: list[Pending[Answer, Recorded]]) -> None:
        batches.append(len(batch))
        serve(key, batch)

    coordinator._answers.serve = counting  # type: ignore[method-assign]
    with ThreadPoolExecutor(12) as pool:
        tasks = list(pool.map(lambda name: take(state, name), names))
        assert len({t.task_id for t in tasks}) == len(names)
        acks = list(
            pool.map(
                lambda pair: coordinator.accept_result(
                    state.sites[pair[0]], pair[1].task_id, stats(20 + len(pair[0]))
                ),
                zip(names, tasks, strict=True),
            )
        )
    assert [ack.status for ack in acks] == ["accepted"] * len(names)
    assert sum(batches) == len(names)
    assert accepted(state, job.id) == names
    with state.sessions() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.pooled_json is not None
        assert f'"n":{sum(20 + len(n) for n in names)}' in row.pooled_json.replace(" ", "")
    # The round closed once, and every site got the train round's task with its ack or poll.
    assert all(take(state, name).kind == "train" for name in names)


def test_a_task_that_cannot_be_handed_out_fails_only_its_own_site(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sites asking together are served in one batch: an error building one site's task (a
    job's state no check foresaw) fails that site's request alone."""
    state.coordinator.submit(make_spec(rounds=1), state.admin_id)
    coordinator, build = state.coordinator, state.coordinator._assignment

    def broken(session: object, task: Task, *args: object) -> object:
        if task.site_id == state.sites["beta"]:
            raise ValueError("a stored state out of today's bounds")
        return build(session, task, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(coordinator, "_assignment", broken)
    batch = [Pending[int, object](state.sites[name]) for name in ("alpha", "beta")]
    coordinator._deliver("tasks", batch)  # type: ignore[arg-type]
    alpha, beta = batch
    assert alpha.outcome().kind == "stats"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="out of today's bounds"):
        beta.outcome()
    monkeypatch.undo()
    assert take(state, "beta").kind == "stats"  # handed out again once it can be


def test_the_next_batch_is_served_by_a_caller_queued_behind_the_one_serving() -> None:
    """A batch served wakes its own callers and hands the key to the first caller queued
    meanwhile, who serves everything queued by then; callers queued while that batch is
    served make the batch after it."""
    served: list[tuple[list[int], int]] = []  # each batch, and the thread that served it
    waves = [threading.Event() for _ in range(3)]  # set when wave n may finish
    serving = [threading.Event() for _ in range(3)]  # set when wave n's batch is being served

    def serve(_: object, batch: list[Pending[int, int]]) -> None:
        wave = len(served)
        served.append(([item.request for item in batch], threading.get_ident()))
        serving[wave].set()
        waves[wave].wait(10)
        for item in batch:
            item.result = item.request * 10

    combiner: Combiner[int, int] = Combiner(serve)  # type: ignore[arg-type]
    callers: dict[int, int] = {}  # request -> the thread that made it

    def call(n: int) -> int:
        callers[n] = threading.get_ident()
        return combiner("job", n)

    def queued(count: int) -> None:
        while sum(len(q) for q in combiner._queues.values()) < count:
            time.sleep(0.01)

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(call, 0)]
        assert serving[0].wait(10)
        futures += [pool.submit(call, n) for n in range(1, 5)]
        queued(4)
        waves[0].set()
        assert serving[1].wait(10)
        futures += [pool.submit(call, n) for n in range(5, 8)]
        queued(3)
        waves[1].set()
        assert serving[2].wait(10)
        waves[2].set()
        assert [f.result(10) for f in futures] == [n * 10 for n in range(8)]
    assert [batch for batch, _ in served] == [[0], [1, 2, 3, 4], [5, 6, 7]]
    assert served[1][1] == callers[1] and served[2][1] == callers[5]
    assert not combiner._queues and not combiner._serving


def test_a_batch_of_answers_reads_its_tasks_once(state: State) -> None:
    """The tasks of a batch are read in one query and found there by each answer (not read
    again one by one: the session holds loaded rows only weakly)."""
    names = ["alpha", "beta", "gamma"]
    enrol(state, ["gamma"])
    job = state.coordinator.submit(make_spec(rounds=1, sites=names), state.admin_id)
    answers = captured_answers(
        state, [(name, take(state, name).task_id, stats(20 + i)) for i, name in enumerate(names)]
    )
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(" ".join(statement.split()))

    engine = state.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        batch = record(state, job.id, answers)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert [item.outcome()[0].status for item in batch] == ["accepted"] * 3
    by_id = [s for s in statements if "FROM task" in s and "WHERE task.id =" in s]
    assert by_id == [], by_id
    assert sum("FROM task" in s and "task.id IN" in s for s in statements) == 1
