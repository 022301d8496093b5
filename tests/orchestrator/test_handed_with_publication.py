"""A round's tasks are handed out by the transaction that opens it, to the sites waiting for one
(their long polls, and the acknowledgements of the answers that closed the round before): no
second transaction between a round's close and the next round's work. A site that stopped
waiting meanwhile is handed its task again when it next asks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import cast

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from oncofed.orchestrator.db import Task
from oncofed.orchestrator.notifier import Notifier
from oncofed.wire.messages import TaskAssignment
from tests.orchestrator.test_rounds import make_spec, stats, take
from tests.support import State, auth

TASK = cast(TaskAssignment, object())
"""What the notifier passes on, whatever it is."""


def test_a_task_handed_with_a_publication_goes_to_one_poll_that_waited_before_it() -> None:
    notifier = Notifier()
    since = notifier.generations([1, 2])
    notifier.notify([1, 2], {1: TASK})
    assert notifier.handed(2, since[2]) is None  # published for, handed nothing
    assert notifier.handed(1, since[1]) is TASK
    assert notifier.handed(1, since[1]) is None  # taken once


def test_a_poll_that_began_after_a_publication_does_not_take_its_task() -> None:
    """It asks the database, which hands the task out again."""
    notifier = Notifier()
    notifier.notify([1], {1: TASK})
    assert notifier.handed(1, notifier.generations([1])[1]) is None


def test_a_later_publication_drops_a_task_no_poll_took() -> None:
    notifier = Notifier()
    since = notifier.generations([1])[1]
    notifier.notify([1], {1: TASK})
    notifier.notify([1])  # e.g. a secure round's next phase: nothing handed with it
    assert notifier.handed(1, since) is None


def test_the_sites_waiting_are_those_with_a_poll_waiting_now() -> None:
    notifier = Notifier()
    with notifier.waiting_for(1):
        with notifier.waiting_for(1), notifier.waiting_for(2):
            assert notifier.waiting() == {1, 2}
        assert notifier.waiting() == {1}
    assert notifier.waiting() == set()


@contextmanager
def transactions(engine: Engine) -> Iterator[list[list[str]]]:
    """The statements sent meanwhile, one list per transaction committed."""
    committed: list[list[str]] = []
    current: dict[int, list[str]] = {}
    lock = threading.Lock()

    def executed(conn: object, _cursor: object, statement: str, *_: object) -> None:
        with lock:
            current.setdefault(id(conn), []).append(" ".join(statement.split()))

    def commit(conn: object) -> None:
        with lock:
            committed.append(current.pop(id(conn), []))

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine, "commit", commit)
    try:
        yield committed
    finally:
        event.remove(engine, "before_cursor_execute", executed)
        event.remove(engine, "commit", commit)


def hands_out(statements: list[str]) -> bool:
    return any(s.startswith("UPDATE task SET status=") and "delivered_at" in s for s in statements)


def test_the_answer_that_closes_a_round_hands_the_next_one_out_in_its_transaction(
    state: State,
) -> None:
    """Beta's answer closes the statistics round. Its transaction opens the first training
    round and hands it out to beta (whose acknowledgement brings it) and to alpha (waiting);
    alpha, gone before it took its task, is handed the same task when it next asks."""
    coordinator = state.coordinator
    coordinator.submit(make_spec(rounds=1), state.admin_id)
    a, b = take(state, "alpha"), take(state, "beta")
    coordinator.accept_result(state.sites["alpha"], a.task_id, stats(30))
    notifier: Notifier = coordinator._notifier
    since = notifier.generations([state.sites["alpha"]])[state.sites["alpha"]]
    engine = state.sessions.kw["bind"]
    with notifier.waiting_for(state.sites["alpha"]), transactions(engine) as committed:
        ack = coordinator.accept_result(state.sites["beta"], b.task_id, stats(10))
    assert len(committed) == 1 and hands_out(committed[0])  # one transaction did it all
    assert ack.next_task is not None and ack.next_task.kind == "train"
    handed = notifier.handed(state.sites["alpha"], since)
    assert handed is not None and handed.kind == "train" and handed.round == 1
    with state.sessions() as session:
        task = session.get(Task, handed.task_id)
        assert task is not None and task.status == "delivered" and task.delivered_at is not None
    assert take(state, "alpha").task_id == handed.task_id  # asked again: the same task


def test_a_site_not_waiting_is_not_handed_its_task_before_it_asks(state: State) -> None:
    coordinator = state.coordinator
    coordinator.submit(make_spec(rounds=1), state.admin_id)
    a, b = take(state, "alpha"), take(state, "beta")
    coordinator.accept_result(state.sites["alpha"], a.task_id, stats(30))
    coordinator.accept_result(state.sites["beta"], b.task_id, stats(10))
    with state.sessions() as session:
        alpha = session.query(Task).filter_by(site_id=state.sites["alpha"]).all()
        assert sorted(t.status for t in alpha) == ["accepted", "pending"]


def test_a_waiting_long_poll_gets_the_task_its_publication_handed_out(
    api: TestClient, state: State
) -> None:
    """Alpha's poll waits; the job's submission opens round 0 and hands alpha's task out in its
    transaction; the poll answers with it without asking the database again."""
    app = cast(FastAPI, api.app)
    notifier: Notifier = app.state.notifier
    engine = app.state.sessions.kw["bind"]
    alpha = auth(state.credentials["alpha"])

    def poll() -> httpx.Response:
        return api.get("/tasks/next", params={"wait": 20}, headers=alpha)

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(poll)
        deadline = time.monotonic() + 10
        while state.sites["alpha"] not in notifier.waiting():
            assert time.monotonic() < deadline and not waiting.done(), "the poll never waited"
            time.sleep(0.01)
        with transactions(engine) as committed:
            job = api.post(
                "/jobs", json=make_spec().model_dump(mode="json"), headers=auth(state.admin_token)
            )
            response = waiting.result(10)
    assert job.status_code == 201 and response.status_code == 200
    assert response.json()["kind"] == "stats" and response.json()["job_id"] == job.json()["id"]
    creating = [i for i, t in enumerate(committed) if any("INSERT INTO round" in s for s in t)]
    assert len(creating) == 1 and hands_out(committed[creating[0]])
    assert not any(hands_out(t) for t in committed[creating[0] + 1 :])  # nor asked again
