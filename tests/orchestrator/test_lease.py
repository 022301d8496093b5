"""One orchestrator process per database, and deadlines that do not count its downtime:
after an outage longer than a round's timeout, open rounds get back the time it was down;
a second process on the same database refuses to start while the first lives."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text, update

from oncofed.demo.federation import free_port
from oncofed.orchestrator import Settings, create_app
from oncofed.orchestrator.db import Round, Service, make_engine, utcnow
from oncofed.orchestrator.lease import ADVISORY_KEY, Lease, ServiceRunning
from tests.orchestrator.test_rounds import take, through_stats
from tests.support import State, make_spec

TIMEOUT = timedelta(seconds=60)  # the jobs' round_timeout_s


def open_round(state: State) -> int:
    """A training round whose two sites both took their task."""
    job = state.coordinator.submit(
        make_spec(rounds=1, round_timeout_s=TIMEOUT.total_seconds()), state.admin_id
    )
    through_stats(state, job.id, {"alpha": 30, "beta": 10})
    take(state, "alpha"), take(state, "beta")
    with state.sessions() as session:
        rnd = session.query(Round).filter_by(job_id=job.id, status="open").one()
        return rnd.id


def set_times(state: State, round_id: int, deadline: datetime, beat: datetime) -> None:
    with state.sessions.begin() as session:
        session.execute(update(Round).where(Round.id == round_id).values(deadline=deadline))
        session.execute(update(Service).values(beat_at=beat, holder=None))


def deadline_and_tasks(state: State, round_id: int) -> tuple[datetime, str, list[str]]:
    with state.sessions() as session:
        rnd = session.get(Round, round_id)
        assert rnd is not None
        return rnd.deadline, rnd.status, [t.status for t in rnd.tasks]


def service(state: State) -> Service:
    with state.sessions() as session:
        row = session.get(Service, 1)
        assert row is not None
        return row


def test_an_outage_longer_than_a_round_does_not_expire_it(state: State) -> None:
    """Down for twice the round's timeout, 10 s after the round opened: the round gets the
    outage back, so it has its last 50 s after the restart, and the edges are not expired."""
    outage = 2 * TIMEOUT
    round_id = open_round(state)
    now = utcnow()
    beat = now - outage
    set_times(state, round_id, beat + TIMEOUT - timedelta(seconds=10), beat)
    with TestClient(create_app(Settings.load(state.home))):
        state.coordinator.expire()
        deadline, status, tasks = deadline_and_tasks(state, round_id)
        assert status == "open" and tasks == ["delivered", "delivered"]
        left = deadline - utcnow()
        assert timedelta(seconds=45) < left <= timedelta(seconds=50)
        credited = service(state).credited_seconds
        assert credited is not None and abs(credited - outage.total_seconds()) < 5


def test_a_round_whose_deadline_passed_while_up_still_expires(state: State) -> None:
    round_id = open_round(state)
    beat = utcnow() - 2 * TIMEOUT
    set_times(state, round_id, beat - timedelta(seconds=5), beat)
    with TestClient(create_app(Settings.load(state.home))):
        state.coordinator.expire()
        _, status, tasks = deadline_and_tasks(state, round_id)
        assert status != "open" and tasks == ["expired", "expired"]


def test_a_start_that_crashed_after_crediting_does_not_credit_again(state: State) -> None:
    """The credit and the new beat are one transaction: a process killed right after its
    start (no beat since) gives the next start nothing more to credit."""
    round_id = open_round(state)
    beat = utcnow() - 2 * TIMEOUT
    set_times(state, round_id, beat + TIMEOUT, beat)
    engine = make_engine(Settings.load(state.home).url)
    try:
        crashed = Lease.acquire(engine, beat_seconds=1.0)
        credited, _, _ = deadline_and_tasks(state, round_id)
        crashed._lock.release()  # as its death would: no last beat, no release
        Lease.acquire(engine, beat_seconds=1.0).release()
    finally:
        engine.dispose()
    deadline, _, _ = deadline_and_tasks(state, round_id)
    assert abs(credited - (beat + TIMEOUT) - 2 * TIMEOUT) < timedelta(seconds=5)
    assert timedelta(0) <= deadline - credited < timedelta(seconds=2)


def test_the_heartbeat_keeps_the_last_time_up(state: State) -> None:
    settings = Settings.load(state.home).model_copy(update={"beat_seconds": 0.05})
    with TestClient(create_app(settings)):
        first = service(state)
        time.sleep(0.3)
        beat = service(state)
        assert beat.holder == first.holder and beat.holder is not None
        assert beat.beat_at is not None and first.beat_at is not None
        assert beat.beat_at > first.beat_at
    stopped = service(state)
    assert stopped.holder is None and stopped.beat_at is not None
    assert stopped.beat_at >= beat.beat_at


def test_a_second_app_on_the_database_refuses_until_the_first_stops(state: State) -> None:
    settings = Settings.load(state.home)
    refused = pytest.raises(ServiceRunning, match=r"another orchestrator process .* serves")
    with TestClient(create_app(settings)), refused:
        create_app(settings)
    with TestClient(create_app(settings)) as api:
        assert api.get("/v1/health").status_code == 200


@pytest.mark.postgres
def test_a_process_that_lost_its_lock_stops(postgres_url: str, tmp_path: Path) -> None:
    """A lock connection merely cut is taken again; cut and its lock taken by another
    process meanwhile, the first process stops."""
    from oncofed.orchestrator.setup import initialise

    initialise(tmp_path, postgres_url)
    engine = make_engine(postgres_url)
    lost = threading.Event()
    lease = Lease.acquire(engine, beat_seconds=0.05, on_lost=lost.set)
    try:
        _cut_lock_connection(engine)
        assert lease._lock.keep()  # taken again on a new connection
        _cut_lock_connection(engine)
        other = Lease.acquire(engine, beat_seconds=1.0)
        try:
            lease.start()
            assert lost.wait(5)
        finally:
            other.release()
    finally:
        lease.release()
        engine.dispose()


def _cut_lock_connection(engine: Engine) -> None:
    """Terminate the server session holding the orchestrator's advisory lock on this
    database, and wait until it is gone."""
    key = ADVISORY_KEY & 0xFFFFFFFFFFFFFFFF  # pg_locks shows a bigint key as two oids
    with engine.begin() as conn:
        cut = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND classid = :hi AND objid = :lo "
                "AND objsubid = 1 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
        ).all()
    assert cut == [(True,)]


@contextmanager
def serving(home: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``oncofed orchestrator serve`` on ``home`` as a process of its own, once healthy;
    stopped (SIGTERM) at the end unless the test killed it already."""
    process = subprocess.Popen(
        [sys.executable, "-m", "oncofed", "orchestrator", "serve", "--dir", str(home),
         "--port", str(port), "--log-level", "warning", "--plain-http"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        give_up = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < give_up, "the orchestrator did not start"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.communicate(timeout=30)


def test_a_second_serve_refuses_and_a_new_one_starts_after_a_kill(state: State) -> None:
    """Two real ``serve`` processes: the second exits at once with one clear line; after the
    first is killed (SIGKILL: no clean release), a new one starts at once."""
    second = [sys.executable, "-m", "oncofed", "orchestrator", "serve", "--dir", str(state.home)]
    with serving(state.home, free_port()) as first:
        refused = subprocess.run(
            [*second, "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "80"},
        )
        assert refused.returncode == 1
        said = " ".join(refused.stderr.split())  # one message, wrapped at 80 columns
        assert "is in use by another oncofed orchestrator serve" in said  # its directory lock
        assert "Traceback" not in refused.stderr
        first.kill()
    with serving(state.home, free_port()):
        assert service(state).holder is not None


def test_serve_stops_within_two_seconds_of_sigterm_answering_its_long_polls(
    state: State,
) -> None:
    """A site long-polling for 60 s would hold uvicorn's graceful shutdown that long: SIGTERM
    first wakes every poll (answered 204 at once), then the server stops."""
    port = free_port()
    answers: list[tuple[int, float]] = []

    def poll() -> None:
        headers = {"Authorization": f"Bearer {state.credentials['alpha']}"}
        response = httpx.get(
            f"http://127.0.0.1:{port}/v1/tasks/next", params={"wait": 60}, headers=headers,
            timeout=90,
        )  # fmt: skip
        answers.append((response.status_code, time.monotonic()))

    with serving(state.home, port) as server:
        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(1.0)  # the poll is waiting
        assert not answers
        stopped = time.monotonic()
        server.terminate()
        server.communicate(timeout=30)
        took = time.monotonic() - stopped
        poller.join(timeout=30)
    assert answers and answers[0][0] == 204
    assert answers[0][1] - stopped < 2.0 and took < 2.0, (answers, took)
