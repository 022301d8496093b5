"""One serving process per database, and round deadlines that do not count its downtime.

Exclusion is exact on both databases, however the previous process ended (SIGKILL too):

- SQLite: an OS lock (``flock``) on ``DATABASE.serve-lock`` beside the database file; the
  kernel drops it when the process ends.
- PostgreSQL: a session advisory lock held on a connection of its own; the server drops it
  when that connection closes. If the connection breaks, the lock is taken again on a new
  one; if another process got it meanwhile, this one has lost the database and stops.

Uptime: a thread writes ``service.beat_at`` every ``beat_seconds``. At start the time since
the last beat is the downtime, and every open round's deadline moves by it in the
transaction that records the new beat, so a crash during start cannot credit it twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, pool, select, text, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from oncofed.orchestrator.db import Round, Service, session_factory, utcnow
from oncofed.orchestrator.errors import Conflict

log = logging.getLogger("oncofed.orchestrator")

ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"oncofed orchestrator").digest()[:8], signed=True)
"""The PostgreSQL advisory lock a serving orchestrator holds (per database)."""
SERVICE_ID = 1
"""The one ``service`` row (made by migration 0007)."""


class ServiceRunning(Conflict):
    """Another orchestrator process serves this database."""


class _Lock(Protocol):
    def take(self) -> bool:
        """Take the lock if it is free; False when another process holds it."""

    def keep(self) -> bool:
        """Still ours? False only when another process holds it now."""

    def release(self) -> None: ...


class _FileLock:
    """``flock`` on a file beside a SQLite database (none for an in-memory one)."""

    def __init__(self, database: str | None) -> None:
        in_memory = not database or database == ":memory:"
        self.path = None if in_memory else Path(f"{database}.serve-lock")
        self._fd: int | None = None

    def take(self) -> bool:
        if self.path is None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def keep(self) -> bool:
        return True  # only this process's exit drops it

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


class _AdvisoryLock:
    """``pg_try_advisory_lock`` held on a connection of its own, retaken after it breaks."""

    def __init__(self, engine: Engine) -> None:
        self._engine = create_engine(engine.url, poolclass=pool.NullPool)
        self._conn: Connection | None = None

    def take(self) -> bool:
        conn = self._engine.connect()
        held = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY})
        if not held.scalar_one():
            conn.close()
            return False
        conn.commit()  # the lock is the session's: it outlives the transaction
        self._conn = conn
        return True

    def keep(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.rollback()
                return True
            except DBAPIError:
                self._conn.close()
                self._conn = None
        log.warning("the connection holding the orchestrator's lock broke; taking it again")
        return self.take()

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the server drops a session's advisory locks with it
            self._conn = None
        self._engine.dispose()


def _stop_this_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down gracefully


class Lease:
    """This process's right to serve the database: ``acquire`` at start (crediting the
    downtime), ``start`` the heartbeat once serving, ``release`` at shutdown."""

    def __init__(
        self,
        engine: Engine,
        beat_seconds: float,
        on_lost: Callable[[], None] = _stop_this_process,
    ) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}"[:128]
        self.beat_seconds = beat_seconds
        self._engine = engine
        self._sessions = session_factory(engine)
        self._lock: _Lock = (
            _FileLock(engine.url.database)
            if engine.dialect.name == "sqlite"
            else _AdvisoryLock(engine)
        )
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._lost = False
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(
        cls,
        engine: Engine,
        beat_seconds: float,
        on_lost: Callable[[], None] = _stop_this_process,
    ) -> Lease:
        """Take the database or raise ``ServiceRunning``; then credit the downtime since the
        last beat to every open round."""
        lease = cls(engine, beat_seconds, on_lost)
        if not lease._lock.take():
            lease._lock.release()
            raise ServiceRunning(lease._refusal())
        try:
            lease._credit_downtime()
        except BaseException:
            lease._lock.release()
            raise
        return lease

    def _refusal(self) -> str:
        with self._sessions() as session:
            row = session.get(Service, SERVICE_ID)
        holder = row.holder if row is not None and row.holder else "unknown"
        return (
            f"another orchestrator process ({holder}) serves this database; "
            "stop it before starting another"
        )

    def _credit_downtime(self) -> None:
        now = utcnow()
        with self._sessions.begin() as session:
            row = session.get(Service, SERVICE_ID)
            assert row is not None  # made by migration 0007
            downtime = max(now - row.beat_at, timedelta(0)) if row.beat_at else timedelta(0)
            rounds = session.scalars(select(Round).where(Round.status == "open")).all()
            for rnd in rounds:
                rnd.deadline += downtime
            row.holder, row.started_at, row.beat_at = self.holder, now, now
            row.credited_seconds = downtime.total_seconds()
        if rounds and downtime:
            log.info(
                "down for %.1f s: gave that time back to %d open round(s)",
                downtime.total_seconds(),
                len(rounds),
            )

    def start(self) -> None:
        """Beat every ``beat_seconds`` on a thread of its own (a busy event loop or thread
        pool cannot delay it)."""
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.beat_seconds):
            try:
                if not self._lock.keep():
                    self._lost = True
                    log.critical("another orchestrator process took this database; stopping")
                    self._on_lost()
                    return
                self._beat(self.holder)
            except SQLAlchemyError as exc:  # the database is away; the next beat retries
                log.warning("heartbeat failed: %s", exc)

    def _beat(self, holder: str | None) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(Service)
                .where(Service.id == SERVICE_ID)
                .values(holder=holder, beat_at=utcnow())
            )

    def release(self) -> None:
        """Stop beating, record the last beat (the downtime starts now) and let go."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if not self._lost:  # else the row is the new holder's
                self._beat(None)
        finally:
            self._lock.release()
