"""Answers and task requests that arrive together are served together (``combine``): one
transaction for a batch, every caller its own result, and an error fails only its own caller
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sqlalchemy import event, select

from oncofed.orchestrator.combine import Combiner, Pending
from oncofed.orchestrator.db import Job, Task
from oncofed.orchestrator.errors import Conflict
from oncofed.orchestrator.rounds import Answer, Handout, Recorded, Submission
from oncofed.wire.messages import JobCreated, ResultAck, StatsResult
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
        return ResultAck(task_id=answer.task_id, status="accepted"), Handout(frozenset(), {})

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

    bad = Answer(state.sites["alpha"], "no-such-task", broken)
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
        state, job.id, [good[0], Answer(state.sites["alpha"], "no-such-task", broken), good[1]]
    )
    with pytest.raises(RuntimeError, match="a bug"):
        failed.outcome()
    assert [first.outcome()[0].status, second.outcome()[0].status] == ["accepted", "accepted"]
    for array in global_model(state, job.id).values():  # the update files were in the store
        np.testing.assert_allclose(array, 2.0, rtol=1e-6)  # (30*1 + 10*5) / 40, each once


def in_threads(state: State, answers: list[Submission]) -> list[ResultAck]:
    """Each answer recorded by a thread of its own (12 at a time), as ``accept_result`` is."""
    with ThreadPoolExecutor(12) as pool:
        return list(pool.map(state.coordinator.record, answers))


def on_an_event_loop(state: State, answers: list[Submission]) -> list[ResultAck]:
    """Each answer recorded by a request handler waiting on the event loop."""

    async def answer_all() -> list[ResultAck]:
        return await asyncio.gather(*map(state.coordinator.record_soon, answers))

    return asyncio.run(answer_all())


def counted_job(state: State, names: list[str]) -> tuple[JobCreated, list[int]]:
    """A one-round job at ``names``, enrolled, and the sizes of the batches its answers are
    recorded in (as they are served)."""
    enrol(state, names)
    job = state.coordinator.submit(make_spec(rounds=1, sites=names), state.admin_id)
    answers, batches = state.coordinator._answers, []
    serve: Callable[..., None] = answers.serve

    def counting(key: object, batch: list[Pending[Answer, Recorded]]) -> None:
        batches.append(len(batch))
        serve(key, batch)

    answers.serve = counting  # type: ignore[assignment]
    return job, batches


@pytest.mark.parametrize("answer_all", [in_threads, on_an_event_loop])
def test_many_sites_answering_at_once_are_each_counted_once(
    state: State, answer_all: Callable[[State, list[Submission]], list[ResultAck]]
) -> None:
    names = [f"site{i:02d}" for i in range(24)]
    job, batches = counted_job(state, names)
    coordinator = state.coordinator
    with ThreadPoolExecutor(12) as pool:
        tasks = list(pool.map(lambda name: take(state, name), names))
    assert len({t.task_id for t in tasks}) == len(names)
    answers = [
        coordinator.result_answer(state.sites[name], task.task_id, stats(20 + len(name)))
        for name, task in zip(names, tasks, strict=True)
    ]
    acks = answer_all(state, answers)
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


class Waves:
    """A combiner whose batch n is held until wave n is let go; it records what each batch
    held, the thread that served it and the thread that made each call."""

    def __init__(self, count: int = 3) -> None:
        self.served: list[tuple[list[int], int]] = []
        self.go = [threading.Event() for _ in range(count)]  # set when wave n may finish
        self.serving = [threading.Event() for _ in range(count)]  # wave n's batch is served
        self.threads: dict[int, int] = {}  # request -> the thread that made it
        self.combiner: Combiner[int, int] = Combiner(self._serve)  # type: ignore[arg-type]

    def _serve(self, _: object, batch: list[Pending[int, int]]) -> None:
        wave = len(self.served)
        self.served.append(([item.request for item in batch], threading.get_ident()))
        self.serving[wave].set()
        self.go[wave].wait(10)
        for item in batch:
            item.result = item.request * 10

    def call(self, n: int) -> int:
        self.threads[n] = threading.get_ident()
        return self.combiner("job", n)

    def queued(self, count: int) -> None:
        while sum(len(q) for q in self.combiner._queues.values()) < count:
            time.sleep(0.01)

    def release(self, wave: int) -> None:
        """Let wave ``wave`` finish and wait until the next batch is being served."""
        self.go[wave].set()
        assert self.serving[wave + 1].wait(10)

    def batches(self) -> list[list[int]]:
        assert not self.combiner._queues and not self.combiner._serving  # none left behind
        return [batch for batch, _ in self.served]


def test_the_next_batch_is_served_by_a_caller_queued_behind_the_one_serving() -> None:
    """A batch served wakes its own callers and hands the key to the first caller queued
    meanwhile, who serves everything queued by then; callers queued while that batch is
    served make the batch after it."""
    waves = Waves()
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(waves.call, 0)]
        assert waves.serving[0].wait(10)
        futures += [pool.submit(waves.call, n) for n in range(1, 5)]
        waves.queued(4)
        waves.release(0)
        futures += [pool.submit(waves.call, n) for n in range(5, 8)]
        waves.queued(3)
        waves.release(1)
        waves.go[2].set()
        assert [f.result(10) for f in futures] == [n * 10 for n in range(8)]
    assert waves.batches() == [[0], [1, 2, 3, 4], [5, 6, 7]]
    served = waves.served
    assert served[1][1] == waves.threads[1] and served[2][1] == waves.threads[5]


def recorded_with_statements(
    state: State, job_id: str, answers: list[Answer]
) -> tuple[list[Pending[Answer, Recorded]], list[str]]:
    """``record``, and the SQL statements it sent (whitespace folded)."""
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(" ".join(statement.split()))

    engine = state.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        return record(state, job_id, answers), statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_batch_of_answers_reads_its_tasks_once(state: State) -> None:
    """The tasks of a batch are read in one query and found there by each answer (not read
    again one by one: the session holds loaded rows only weakly)."""
    names = ["alpha", "beta", "gamma"]
    enrol(state, ["gamma"])
    job = state.coordinator.submit(make_spec(rounds=1, sites=names), state.admin_id)
    answers = captured_answers(
        state, [(name, take(state, name).task_id, stats(20 + i)) for i, name in enumerate(names)]
    )
    batch, statements = recorded_with_statements(state, job.id, answers)
    assert [item.outcome()[0].status for item in batch] == ["accepted"] * 3
    by_id = [s for s in statements if "FROM task" in s and "WHERE task.id =" in s]
    assert by_id == [], by_id
    assert sum("FROM task" in s and "task.id IN" in s for s in statements) == 1
    assert sum("FROM dataset_profile" in s for s in statements) == 1  # the sites' limits


def test_callers_on_an_event_loop_wait_there_and_are_served_in_batches() -> None:
    """A caller on the loop that finds nobody serving starts a thread to serve; those queued
    meanwhile wait on the loop (no thread each) and make the next batch."""
    batches: list[tuple[list[int], int]] = []  # each batch, and the thread that served it
    started, release = threading.Event(), threading.Event()

    def serve(_: object, batch: list[Pending[int, int]]) -> None:
        batches.append(([item.request for item in batch], threading.get_ident()))
        started.set()
        release.wait(10)
        for item in batch:
            item.result = item.request * 10

    combiner: Combiner[int, int] = Combiner(serve)  # type: ignore[arg-type]

    async def callers() -> list[int]:
        first = asyncio.ensure_future(combiner.submit("job", 0))
        assert await asyncio.to_thread(started.wait, 10)
        rest = [asyncio.ensure_future(combiner.submit("job", n)) for n in range(1, 8)]
        while sum(len(q) for q in combiner._queues.values()) < 7:
            await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(callers()) == [n * 10 for n in range(8)]
    assert [batch for batch, _ in batches] == [[0], list(range(1, 8))]
    assert batches[0][1] == batches[1][1] != threading.get_ident()  # one thread went on
    assert not combiner._queues and not combiner._serving


def test_a_caller_on_the_loop_hears_of_an_error_and_one_that_leaves_is_still_served() -> None:
    served: list[int] = []
    started, release = threading.Event(), threading.Event()

    def serve(_: object, batch: list[Pending[int, int]]) -> None:
        started.set()
        release.wait(10)
        served.extend(item.request for item in batch)
        if any(item.request == 2 for item in batch):
            raise OSError("disk full")

    combiner: Combiner[int, int] = Combiner(serve)  # type: ignore[arg-type]

    async def callers() -> None:
        leaving = asyncio.ensure_future(combiner.submit("job", 1))
        assert await asyncio.to_thread(started.wait, 10)
        leaving.cancel()  # its request stays queued: the batch it is in goes on
        with pytest.raises(asyncio.CancelledError):
            await leaving
        release.set()
        with pytest.raises(OSError, match="disk full"):
            await combiner.submit("job", 2)

    asyncio.run(callers())
    assert served == [1, 2]
    assert not combiner._queues and not combiner._serving  # nothing left behind


def test_a_thread_serving_goes_on_for_callers_on_a_loop_and_hands_over_to_a_thread() -> None:
    """Callers on a loop have no thread to take the key over: the thread that served the
    batch before theirs serves them too; a caller in a thread queued first takes over."""
    waves = Waves()

    async def on_the_loop(numbers: range) -> list[int]:
        return await asyncio.gather(*(waves.combiner.submit("job", n) for n in numbers))

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(waves.call, 0)
        assert waves.serving[0].wait(10)
        loop_callers = pool.submit(asyncio.run, on_the_loop(range(1, 4)))
        waves.queued(3)
        waves.release(0)  # batch 0 done: its thread goes on with the loop's callers
        last = pool.submit(waves.call, 4)
        waves.queued(1)
        waves.release(1)  # batch 1 done: the caller queued in a thread takes over
        waves.go[2].set()
        assert [first.result(10), *loop_callers.result(10), last.result(10)] == [
            n * 10 for n in range(5)
        ]
    assert waves.batches() == [[0], [1, 2, 3], [4]]
    served = waves.served
    assert served[1][1] == waves.threads[0] and served[2][1] == waves.threads[4]


def test_a_batch_of_updates_reads_what_their_counts_are_checked_against_once(
    state: State,
) -> None:
    """The patients each site reported in the stats round, and the patients its profile
    declares, are read for the whole batch in one query each."""
    names = ["alpha", "beta", "gamma"]
    enrol(state, ["gamma"])
    job = state.coordinator.submit(make_spec(rounds=1, sites=names), state.admin_id)
    sizes = {name: 10 * (i + 1) for i, name in enumerate(names)}
    through_stats(state, job.id, sizes)
    posts = [
        functools.partial(post_update, state, name, take(state, name), weights_like(1.0), n)
        for name, n in sizes.items()
    ]
    answers = captured(state, posts)
    batch, statements = recorded_with_statements(state, job.id, answers)
    assert [item.outcome()[0].status for item in batch] == ["accepted"] * 3
    assert sum("FROM dataset_profile" in s for s in statements) == 1
    reported = "SELECT task.site_id, task.result_json FROM task"  # of the stats round
    assert sum(s.startswith(reported) for s in statements) == 1


def holding(serve_log: list[list[int]], hold: float, until: int) -> Combiner[int, int]:
    """A combiner whose patient callers may wait ``hold`` seconds until ``until`` are queued."""

    def serve(_: object, batch: list[Pending[int, int]]) -> None:
        serve_log.append([item.request for item in batch])
        for item in batch:
            item.result = item.request * 10

    def held(_: object, queued: list[int]) -> float:
        return hold if len(queued) < until else 0.0

    return Combiner(serve, hold=held)  # type: ignore[arg-type]


async def staggered(combiner: Combiner[int, int], patient: list[bool]) -> list[int]:
    """A caller for each of ``patient``, one every 20 ms, all waiting on the loop."""
    calls = []
    for n, each in enumerate(patient):
        calls.append(asyncio.ensure_future(combiner.submit("job", n, patient=each)))
        await asyncio.sleep(0.02)
    return await asyncio.gather(*calls)


async def one_by_one(combiner: Combiner[int, int], count: int) -> list[int]:
    """``count`` impatient callers, each coming once the one before is served (callers that
    come while one is served may share the next batch: on a slow machine, 20 ms apart did)."""
    return [await combiner.submit("job", n, patient=False) for n in range(count)]


def test_patient_callers_wait_for_the_others_and_the_last_has_them_served_at_once() -> None:
    """Callers arriving one after another make one batch each; patient ones make one batch,
    served as soon as the last expected one joins (long before the hold is up)."""
    batches: list[list[int]] = []
    began = time.monotonic()
    results = asyncio.run(one_by_one(holding(batches, 30.0, 4), 4))
    assert results == [0, 10, 20, 30] and batches == [[0], [1], [2], [3]]

    batches.clear()
    results = asyncio.run(staggered(holding(batches, 30.0, 4), [True] * 4))
    assert results == [0, 10, 20, 30] and batches == [[0, 1, 2, 3]]
    assert time.monotonic() - began < 10.0  # not the 30 s hold


def test_a_hold_ends_when_its_time_is_up_or_an_impatient_caller_joins() -> None:
    batches: list[list[int]] = []
    began = time.monotonic()
    assert asyncio.run(staggered(holding(batches, 0.3, 99), [True] * 3)) == [0, 10, 20]
    assert batches == [[0, 1, 2]] and time.monotonic() - began >= 0.3

    batches.clear()
    began = time.monotonic()
    results = asyncio.run(staggered(holding(batches, 30.0, 99), [True, True, False]))
    assert results == [0, 10, 20] and batches == [[0, 1, 2]]
    assert time.monotonic() - began < 10.0


def test_a_patient_caller_that_leaves_the_hold_as_it_was_wakes_nobody() -> None:
    """The thread serving a held queue wakes when the hold ends, not as each caller joins:
    it asks ``hold`` when it starts and once more when the last expected caller comes (the
    callers ask it as they join, on the loop)."""
    asked: list[bool] = []  # for each time hold was asked: whether in the loop's thread
    loop_thread = threading.get_ident()

    def held(_: object, queued: Sequence[int]) -> float:
        asked.append(threading.get_ident() == loop_thread)
        return 30.0 if len(queued) < 6 else 0.0

    batches: list[list[int]] = []

    def serve(_: object, batch: Sequence[Pending[int, int]]) -> None:
        batches.append([item.request for item in batch])

    combiner = Combiner[int, int](serve, hold=held)
    began = time.monotonic()
    asyncio.run(staggered(combiner, [True] * 6))
    assert asked.count(False) <= 2  # the server's: as it starts, and when the sixth joins
    assert batches == [[0, 1, 2, 3, 4, 5]]  # all six served together,
    assert time.monotonic() - began < 10.0  # when the sixth came, not when the 30 s were up


@pytest.mark.parametrize("hold", [30.0, 0.0])
def test_patient_answers_to_a_round_are_recorded_together_once_all_are_in(
    state: State, hold: float
) -> None:
    """How many answers a round awaits is known from its opening: its patient answers, the
    first included, wait for each other and are recorded in one transaction as soon as the
    last comes (not after the hold); the round closes then, and its next round, awaiting as
    many, is handed out. Without a hold (``answer_hold_seconds`` 0) each is recorded as it
    comes: alone, when the one before has been (answers that come while one is recorded may
    share the next transaction, so they come one by one here)."""
    names = [f"site{i}" for i in range(6)]
    job, batches = counted_job(state, names)
    coordinator = state.coordinator
    coordinator.hold_seconds = hold
    assert coordinator._left[job.id] == len(names)  # as the submission opened round 0
    tasks = [take(state, name) for name in names]
    answers = [
        coordinator.result_answer(state.sites[name], task.task_id, stats(30))
        for name, task in zip(names, tasks, strict=True)
    ]

    async def answer_all() -> list[ResultAck]:
        calls = []
        for answer in answers:
            calls.append(asyncio.ensure_future(coordinator.record_soon(answer, patient=True)))
            if not hold:
                await calls[-1]  # recorded before the next comes
            await asyncio.sleep(0.02)
        return await asyncio.gather(*calls)

    began = time.monotonic()
    acks = asyncio.run(answer_all())
    assert time.monotonic() - began < 10.0  # not the 30 s hold
    assert [ack.status for ack in acks] == ["accepted"] * len(names)
    assert batches == ([len(names)] if hold else [1] * len(names))
    assert accepted(state, job.id) == names
    assert coordinator._left[job.id] == len(names)  # round 1's, as it opened
    assert all(take(state, name).kind == "train" for name in names)
