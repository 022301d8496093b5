"""The edge's own record of what it was asked and what it released: ``ledger.db`` in the edge
directory (SQLite in WAL mode), which nothing the orchestrator sends can reset.

Everything it records before anything leaves the site survives a power cut: a task's writes
are committed without a sync of their own (``synchronous=NORMAL``), and the audit entry that
precedes every message sent (``audit``, ``synchronous=FULL``) syncs the write-ahead log, which
holds them all, before the message goes. One fsync per task, not one per write; what a power
cut could take is only what never left. The notes that only follow what a task did (when it was
answered, the last global model seen) are not even committed on their own: they are written in
the next audit entry's transaction (``_later``), a transaction less for each.

It holds, per job: the tasks run (id, kind, round, SHA-256 of the task's content, when received
and answered), the pinned spec hash, the pooled totals and standardisation first accepted, the
last Newton parameters, and the last global model seen (a safetensors file under ``jobs/``,
removed once the job's evaluation is answered). For secure aggregation: the rounds this site
sent a masked input for, the shares it released per peer, and the peers' pinned identity keys.
And the cohort of every job's exact releases (``oncofed.edge.releases``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    Connection,
    CursorResult,
    Executable,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    sessionmaker,
)

from oncofed import _db
from oncofed._db import UTCDateTime, utcnow
from oncofed._files import private_dir, write_over
from oncofed.audit import AuditLog, CheckpointColumns, EntryColumns
from oncofed.edge.errors import PolicyViolation
from oncofed.privacy.secagg.identity import fingerprint
from oncofed.wire.analysis import AnalysisParams
from oncofed.wire.messages import Standardization, StatsResult

log = logging.getLogger("oncofed.edge")
LEDGER = "ledger.db"
MODELS = "jobs"
SLOTS = ("model-a.safetensors", "model-b.safetensors")
"""The two files a job's last global models take turns in, under ``jobs/<job>/``."""
MIGRATIONS = Path(__file__).parent / "migrations"
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""Job and task ids this edge accepts (a job id names a folder under ``jobs/``)."""
M = TypeVar("M", StatsResult, Standardization, AnalysisParams)
KEPT_JOBS = 64
"""Jobs whose records a ledger keeps in memory (the most recently used)."""
KEPT_MODEL_BYTES = 1 << 20
"""Bytes of last global models a ledger keeps in memory (the most recently written, each no
larger): the next round's checks read them there, not from their file."""


@dataclass
class _Slot:
    """Where a job's last global model is: its SHA-256, its file, and its bytes while kept."""

    sha256: str
    name: str
    data: bytes | None


class Base(DeclarativeBase):
    metadata = _db.metadata()


class JobRow(Base):
    """A job as this site has seen it; its first task pinned the spec."""

    __tablename__ = "job"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    pooled_json: Mapped[str | None] = mapped_column(Text)
    scaling_json: Mapped[str | None] = mapped_column(Text)
    model_round: Mapped[int | None] = mapped_column(Integer)
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    params_round: Mapped[int | None] = mapped_column(Integer)
    params_json: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TaskRow(Base):
    """One task this site ran; a job has at most one per round."""

    __tablename__ = "task"
    __table_args__ = (UniqueConstraint("job_id", "round"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"))
    kind: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(16))


class SecureMasked(Base):
    """A secure round this site sent its masked input for (once, ever)."""

    __tablename__ = "secure_masked"
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    masked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ShareRelease(Base):
    """The kind of share this site released for one peer in one secure round."""

    __tablename__ = "share_release"
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    peer: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    released_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PeerKey(Base):
    """A peer site's long-term Ed25519 identity key, pinned when first seen."""

    __tablename__ = "peer_key"
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))  # hex of the 32 raw bytes
    fingerprint: Mapped[str] = mapped_column(String(16))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    kind: str
    round: int
    content_sha256: str
    outcome: str | None = None  # once answered: update, result, declined or failed


@dataclass(frozen=True)
class JobRecord:
    """What this site remembers of one job."""

    spec_sha256: str
    tasks: tuple[TaskRecord, ...]
    pooled: StatsResult | None
    scaling: Standardization | None
    model_round: int | None
    model_sha256: str | None
    params_round: int | None
    params: AnalysisParams | None


class Ledger:
    """The edge's persistent record (see the module docstring)."""

    def __init__(self, root: Path, trusted_peers: Mapping[str, str] | None = None) -> None:
        """Open (creating and migrating when needed) ``root/ledger.db``; ``trusted_peers``
        (site -> key fingerprint), when given, is the only set of peer keys accepted."""
        private_dir(root)  # the database is created owner-only too (``_db``)
        url = f"sqlite:///{root / LEDGER}"
        _db.migrate(url, MIGRATIONS)
        # the audit log's commits sync the write-ahead log (``_db.synced``): every write
        # before them with it
        self._engine = _db.make_engine(url, synchronous="NORMAL")
        self._sessions = _db.session_factory(self._engine)
        self._models = root / MODELS
        # What job() read, kept up to date by this ledger's own writes: one edge process holds
        # a site's directory (its lock file), so nothing else changes these rows under it.
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()
        self._jobs_lock = threading.Lock()
        self._ids = self._recorded_ids()  # every job recorded: a new one is not looked for
        self._rehearsing: Connection | None = None  # the transaction of ``rehearsal``
        self._pending: list[_Later] = []  # written with the next audit entry (``_later``)
        self._slots: dict[str, _Slot] = {}  # job -> its last model, least recently written first
        self.trust(trusted_peers)

    def trust(self, trusted_peers: Mapping[str, str] | None) -> None:
        """Accept only these peer keys from now on (a re-read policy's), or with None each
        peer's key pinned when first seen."""
        self._trusted = dict(trusted_peers) if trusted_peers is not None else None

    def close(self) -> None:
        """Write the notes still pending (``_later``), sync what was written since the last
        audit entry (a checkpoint syncs the log and the database), then close."""
        with contextlib.suppress(OperationalError):
            with self._noting():
                pass
            with self._engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the audit log -------------------------------------------------------------------

    def audit(self, key: Ed25519PrivateKey, action: str, **fields: Any) -> None:
        """Record an event in this site's audit log (``AUDIT.record``'s ``fields``), chained
        and signed with the site's identity ``key`` in the same transaction; its commit is
        synced, and with it every ledger write before it (see the module docstring) and the
        notes pending (``_later``)."""
        with self._noting() as connection:
            AUDIT.append(connection, key, action, every=1, **fields)

    def _later(
        self,
        job_id: str,
        change: Callable[[JobRecord], JobRecord],
        statement: Executable,
        params: dict[str, Any],
    ) -> None:
        """A note on ``job_id`` (``statement``), written in the next audit entry's transaction
        (or at ``close``): one follows each task before its answer leaves. The job's record
        has it at once (``change``). A crash before loses only the note, as it would have
        lost it before a commit of its own. In a ``rehearsal``, written at its end in a
        transaction rolled back."""
        with self._jobs_lock:
            self._pending.append(_Later(job_id, change, statement, params))
            if (kept := self._jobs.get(job_id)) is not None:
                self._jobs[job_id] = change(kept)

    @contextmanager
    def _noting(self) -> Iterator[Connection]:
        """A synced transaction (``synchronous=FULL``) that writes the pending notes first;
        should it fail, their jobs are read again when next asked."""
        with self._jobs_lock:
            pending, self._pending = self._pending, []
        try:
            with _db.synced(self._engine) as connection:
                for note in pending:
                    connection.execute(note.statement, note.params)
                yield connection
        except BaseException:
            with self._jobs_lock:
                for note in pending:
                    self._jobs.pop(note.job_id, None)
            raise

    @property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions on the ledger (the audit commands read the log with them)."""
        return self._sessions

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction on the ledger for Core statements (no session to pay for), committed
        without a sync of its own (see the module docstring); in a ``rehearsal``, its
        transaction."""
        if self._rehearsing is not None:
            yield self._rehearsing
            return
        with self._engine.begin() as connection:
            yield connection

    def _recorded_ids(self) -> set[str]:
        with self._engine.connect() as connection:
            return set(connection.scalars(_JOB_IDS))

    @contextmanager
    def rehearsal(self) -> Iterator[None]:
        """Every write of the block (``begin``) in one transaction, rolled back at its end,
        then its notes (``_later``) in another: nothing is written, and the jobs the block
        recorded are forgotten in memory. Run before the site polls (``TaskRunner.warm_up``),
        it compiles the statements of a job's first task: SQLAlchemy keeps compiled statements
        per engine, each site's ledger has its own, and a site's first task compiling them
        took a quarter of its CPU, in the round. Only while nothing else uses the ledger."""
        try:
            with self._engine.connect() as connection:
                transaction = connection.begin()
                self._rehearsing = connection
                try:
                    yield
                finally:
                    self._rehearsing = None
                    transaction.rollback()
        finally:
            with self._jobs_lock:
                notes, self._pending = self._pending, []
                self._jobs.clear()
                self._ids = self._recorded_ids()
            with self._engine.connect() as connection, connection.begin() as transaction:
                for note in notes:  # their statements compiled where they will run
                    connection.execute(note.statement, note.params)
                transaction.rollback()

    # -- jobs and tasks ------------------------------------------------------------------

    def job(self, job_id: str) -> JobRecord | None:
        with self._jobs_lock:
            if (kept := self._jobs.get(job_id)) is not None:
                self._jobs.move_to_end(job_id)
                return kept
            if job_id not in self._ids:
                return None
        with self._engine.connect() as connection:
            row = connection.execute(_JOB_ROW, {"b_job": job_id}).first()
            if row is None:
                return None
            tasks = tuple(TaskRecord(*t) for t in connection.execute(_TASKS, {"b_job": job_id}))
        record = JobRecord(
            spec_sha256=row.spec_sha256,
            tasks=tasks,
            pooled=_parsed(StatsResult, row.pooled_json),
            scaling=_parsed(Standardization, row.scaling_json),
            model_round=row.model_round,
            model_sha256=row.model_sha256,
            params_round=row.params_round,
            params=_parsed(AnalysisParams, row.params_json),
        )
        with self._jobs_lock:  # notes not written yet (``_later``)
            for note in self._pending:
                if note.job_id == job_id:
                    record = note.change(record)
        self._keep(job_id, record)
        return record

    def _keep(self, job_id: str, record: JobRecord) -> None:
        with self._jobs_lock:
            self._jobs[job_id] = record
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > KEPT_JOBS:
                self._jobs.popitem(last=False)

    @contextmanager
    def _writing(
        self, job_id: str, change: Callable[[JobRecord], JobRecord]
    ) -> Iterator[Connection]:
        """A transaction changing ``job_id``'s rows (Core statements on a connection: no
        session or unit of work to pay for); once committed, ``change`` brings the job's record
        in memory up to date (any failure forgets it: read again when next asked)."""
        try:
            with self.begin() as connection:
                yield connection
        except BaseException:
            with self._jobs_lock:
                self._jobs.pop(job_id, None)
            raise
        with self._jobs_lock:
            if (kept := self._jobs.get(job_id)) is not None:
                self._jobs[job_id] = change(kept)

    def record_task(self, job_id: str, spec_sha256: str, task: TaskRecord) -> None:
        """Record a task as run; the job's first task pins its spec hash."""
        first = JobRecord(spec_sha256, (), None, None, None, None, None, None)

        def added(record: JobRecord) -> JobRecord:
            tasks = sorted((*record.tasks, task), key=lambda t: t.round)
            return replace(record, tasks=tuple(tasks))

        try:
            with self._writing(job_id, added) as connection:
                with self._jobs_lock:
                    new = job_id not in self._ids
                if new:
                    connection.execute(_NEW_JOB, {"id": _safe(job_id), "spec_sha256": spec_sha256})
                    self._keep(job_id, first)  # then brought up to date with its task
                row = {"id": task.task_id, "job_id": job_id, "kind": task.kind,
                       "round": task.round, "content_sha256": task.content_sha256}  # fmt: skip
                connection.execute(_RECORD, row)
        except IntegrityError as exc:  # another process recorded it first
            raise PolicyViolation(
                f"task {task.task_id} (round {task.round} of job {job_id}) was already run here"
            ) from exc
        if new:
            with self._jobs_lock:
                self._ids.add(job_id)

    def answered(self, job_id: str, task_id: str, outcome: str) -> None:
        """Note when and how a task was answered (``result``, ``update``, ``declined``, ...)."""

        def noted(record: JobRecord) -> JobRecord:
            tasks = (
                replace(t, outcome=outcome) if t.task_id == task_id else t for t in record.tasks
            )
            return replace(record, tasks=tuple(tasks))

        answer = {"b_task": task_id, "b_at": utcnow(), "b_outcome": outcome}
        self._later(job_id, noted, _ANSWERED, answer)

    def pin_scaling(self, job_id: str, pooled: StatsResult, scaling: Standardization) -> None:
        """Keep the pooled totals and standardisation a job's tasks must all carry."""
        pinned = functools.partial(replace, pooled=pooled, scaling=scaling)
        with self._writing(job_id, pinned) as connection:
            _set(
                connection,
                job_id,
                pooled_json=pooled.model_dump_json(),
                scaling_json=scaling.model_dump_json(),
            )

    def save_params(self, job_id: str, round_number: int, params: AnalysisParams) -> None:
        """Keep the Newton parameters of a round: the next round's may move only so far."""
        saved = functools.partial(replace, params_round=round_number, params=params)
        with self._writing(job_id, saved) as connection:
            _set(
                connection, job_id, params_round=round_number, params_json=params.model_dump_json()
            )

    # -- the last global model seen ------------------------------------------------------

    def last_model(self, job_id: str) -> tuple[int, Path | bytes] | None:
        """The round and bytes (or, when not kept in memory, file) of the last global model
        this site saw in the job, when kept whole (a file whose bytes are not its SHA-256, as
        a power cut may leave it, is none: the model checks then bound the step from the
        initial model)."""
        record = self.job(job_id)
        if record is None or record.model_round is None or record.model_sha256 is None:
            return None
        slot = self._named(job_id, record)
        if slot is not None and slot.data is not None:
            return record.model_round, slot.data
        folder = self._models / _safe(job_id)
        for name in SLOTS if slot is None else (slot.name,):
            path = folder / name
            try:
                whole = hashlib.sha256(path.read_bytes()).hexdigest() == record.model_sha256
            except OSError:
                continue
            if whole:
                self._slots[job_id] = _Slot(record.model_sha256, name, None)
                return record.model_round, path
        return None

    def save_model(self, job_id: str, round_number: int, sha: str, data: bytes) -> None:
        """Keep ``data`` (a global model, whose SHA-256 is ``sha``) as the job's last model.

        A job's models take turns in two files (``SLOTS``): each is written over the one the
        ledger does not name, then named (a note, ``_later``), so a crash of the process
        leaves the named file whole. Written over in place (``write_over``), not created:
        creating a file cost the kernel 0.3 ms of CPU a task, writing an existing one's bytes
        0.01. It is not synced: ``last_model`` reads it back only when whole, after a restart;
        until then it gives the bytes kept in memory (``KEPT_MODEL_BYTES``)."""
        folder = self._models / _safe(job_id)
        record = self.job(job_id)
        if record is None:
            raise PolicyViolation(f"job {job_id} has no task recorded here")
        slot = self._named(job_id, record)
        if slot is None:  # not located yet (after a restart): look for it once
            self.last_model(job_id)
            slot = self._named(job_id, record)
        if slot is None or slot.sha256 != sha:
            if slot is None:  # the job's first model (private_dir checks each folder)
                private_dir(folder)
            name = SLOTS[slot is not None and slot.name == SLOTS[0]]
            write_over(folder / name, data)
            self._slots.pop(job_id, None)
            self._slots[job_id] = _Slot(sha, name, data)
            self._forget_models()
        saved = functools.partial(replace, model_round=round_number, model_sha256=sha)
        named_now = {"b_job": job_id, "b_round": round_number, "b_sha": sha}
        self._later(job_id, saved, _MODEL, named_now)

    def _forget_models(self) -> None:
        """Keep at most ``KEPT_JOBS`` slots, and the bytes of the most recently written models
        up to ``KEPT_MODEL_BYTES`` (the others are read from their files)."""
        if len(self._slots) > KEPT_JOBS:  # the least recently written: found again
            del self._slots[next(iter(self._slots))]
        budget = KEPT_MODEL_BYTES
        for slot in reversed(self._slots.values()):
            if slot.data is not None and len(slot.data) > budget:
                slot.data = None
            elif slot.data is not None:
                budget -= len(slot.data)

    def _named(self, job_id: str, record: JobRecord) -> _Slot | None:
        """The slot of the model the job's record names, once located."""
        slot = self._slots.get(job_id)
        return slot if slot is not None and slot.sha256 == record.model_sha256 else None

    def drop_model(self, job_id: str) -> None:
        """Remove the job's model files (its evaluation is answered: no model comes after)."""
        self._slots.pop(job_id, None)
        shutil.rmtree(self._models / _safe(job_id), ignore_errors=True)

    # -- secure aggregation --------------------------------------------------------------

    def mask_once(self, job_id: str, round_number: int) -> None:
        """Record that this site sends its masked input for a secure round; refused the second
        time (two masked inputs for one round could let two different sums be unmasked)."""
        try:
            with self._sessions.begin() as session:
                session.add(SecureMasked(job_id=job_id, round=round_number))
        except IntegrityError as exc:
            raise PolicyViolation(
                f"this site already sent its masked input for round {round_number} of job {job_id}"
            ) from exc

    def record(self, job_id: str, round_number: int, releases: Mapping[str, str]) -> None:
        """Record, in one transaction, the release of a share of each peer's secrets of the
        kind given; refused, recording none, when the other kind was released for one of the
        peers in that round (both would unmask it)."""
        with self._sessions.begin() as session:
            for peer, kind in releases.items():
                key = {"job_id": job_id, "round": round_number, "peer": peer}
                row = session.get(ShareRelease, key)
                if row is None:
                    session.add(ShareRelease(**key, kind=kind))
                elif row.kind != kind:
                    raise PolicyViolation(
                        f"this site released the {row.kind} share of {peer} in round "
                        f"{round_number} of job {job_id}; it never releases the {kind} share too"
                    )

    def pin(self, keys: Mapping[str, bytes]) -> None:
        """Accept each key as its site's identity key, in one transaction: the one listed in
        the policy's ``trusted_peers`` when given (strict), else the one pinned when first
        seen. One refused key refuses them all."""
        with self._sessions.begin() as session:
            for site, key in keys.items():
                self._pin(session, site, key)

    def _pin(self, session: Session, site: str, key: bytes) -> None:
        found = fingerprint(key)
        row = session.get(PeerKey, site)
        if self._trusted is not None and self._trusted.get(site) != found:
            raise PolicyViolation(
                f"identity key {found} of site {site!r} is not in this site's trusted_peers"
            )
        if row is None:
            session.add(PeerKey(site=site, public_key=key.hex(), fingerprint=found))
        elif row.public_key != key.hex():
            if self._trusted is None:
                raise PolicyViolation(
                    f"site {site!r} presented identity key {found}, but key {row.fingerprint} "
                    "is pinned for it here"
                )
            row.public_key, row.fingerprint = key.hex(), found  # the admin listed a new key

    def peers(self) -> list[tuple[str, str, datetime]]:
        """The pinned peer keys: site, fingerprint and when first seen, by site."""
        with self._sessions() as session:
            rows = session.scalars(select(PeerKey).order_by(PeerKey.site))
            return [(row.site, row.fingerprint, row.first_seen_at) for row in rows]


@dataclass(frozen=True)
class _Later:
    """A note written with the next audit entry (``Ledger._later``)."""

    job_id: str
    change: Callable[[JobRecord], JobRecord]
    statement: Executable
    params: dict[str, Any]


def _set(connection: Connection, job_id: str, **values: Any) -> None:
    """Update the job's row; refused when the job has no task recorded here."""
    statement = update(JobRow).where(JobRow.id == job_id).values(**values)
    _changed(connection.execute(statement), job_id)


def _changed(result: Any, job_id: str) -> None:
    if cast(CursorResult[Any], result).rowcount == 0:
        raise PolicyViolation(f"job {job_id} has no task recorded here")


# A task's statements, built once (their construction costs more than their run).
_JOB_IDS = select(JobRow.id)
_JOB_ROW = select(
    JobRow.spec_sha256, JobRow.pooled_json, JobRow.scaling_json, JobRow.model_round,
    JobRow.model_sha256, JobRow.params_round, JobRow.params_json,
).where(JobRow.id == bindparam("b_job"))  # fmt: skip
_TASKS = (
    select(TaskRow.id, TaskRow.kind, TaskRow.round, TaskRow.content_sha256, TaskRow.outcome)
    .where(TaskRow.job_id == bindparam("b_job"))
    .order_by(TaskRow.round)
)
_NEW_JOB = insert(JobRow)
_RECORD = insert(TaskRow)
_ANSWERED = (
    update(TaskRow)
    .where(TaskRow.id == bindparam("b_task"))
    .values(answered_at=bindparam("b_at", type_=UTCDateTime()), outcome=bindparam("b_outcome"))
)
_MODEL = (
    update(JobRow)
    .where(JobRow.id == bindparam("b_job"))
    .values(model_round=bindparam("b_round"), model_sha256=bindparam("b_sha"))
)


def _safe(job_id: str) -> str:
    if not SAFE_ID.match(job_id):
        raise PolicyViolation("a job id must be 1 to 64 letters, digits, '_' or '-'")
    return job_id


def _parsed(model: type[M], text: str | None) -> M | None:
    return model.model_validate_json(text) if text else None


class AuditEntry(EntryColumns, Base):
    """One event of this site's audit log (``oncofed.audit``): every payload that left the
    site, every task refused, the enrolment."""

    __tablename__ = "audit_entry"


class AuditCheckpoint(CheckpointColumns, Base):
    """A checkpoint of the site's audit log, signed with its identity key."""

    __tablename__ = "audit_checkpoint"


AUDIT = AuditLog(AuditEntry, AuditCheckpoint)
"""The edge's audit log."""

# Tables other modules keep in ledger.db, registered on ``Base`` so that its metadata is the
# schema the migrations build; imported last, as they build on ``Base``.
import oncofed.edge.budget  # noqa: E402
import oncofed.edge.releases  # noqa: E402, F401
