"""Database: typed SQLAlchemy 2 models, engine set-up and Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    Update,
    bindparam,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.orm.attributes import set_committed_value

from oncofed import _db
from oncofed._db import UTCDateTime, utcnow
from oncofed._db import make_engine as make_engine  # the orchestrator's callers import them here
from oncofed._db import session_factory as session_factory
from oncofed.audit import AuditLog, CheckpointColumns, EntryColumns

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    metadata = _db.metadata()


class Principal(Base):
    """A person calling the API: the operator, a researcher, or one site's admin."""

    __tablename__ = "principal"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # operator | researcher | site_admin
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))  # a site admin's site
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    site: Mapped[Site | None] = relationship()


class AccessToken(Base):
    """A principal's bearer token, stored as its hash: it expires, and can be revoked."""

    __tablename__ = "access_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principal.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    principal: Mapped[Principal] = relationship()


class Project(Base):
    """A study: its declared scope never changes once sites may have approved it."""

    __tablename__ = "project"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(Text)
    principal_investigator: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("principal.id"))
    scope_json: Mapped[str] = mapped_column(Text)
    scope_sha: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    owner: Mapped[Principal] = relationship()
    members: Mapped[list[Principal]] = relationship(
        secondary="project_member", order_by="Principal.name"
    )
    decisions: Mapped[list[ProjectSite]] = relationship(order_by="ProjectSite.site_id")


class ProjectMember(Base):
    __tablename__ = "project_member"
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principal.id"), primary_key=True)


class ProjectSite(Base):
    """A site's decision on a project, as its edge reported it."""

    __tablename__ = "project_site"
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # approved | declined
    dataset: Mapped[str | None] = mapped_column(String(64))
    policy_version: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    site: Mapped[Site] = relationship()


class Site(Base):
    __tablename__ = "site"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    enrolment_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    credential_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    identity_key: Mapped[str | None] = mapped_column(String(64))  # Ed25519 public key, hex
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # its credential's
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # no tasks, no polls
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # gone from listings


class Job(Base):
    __tablename__ = "job"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[int] = mapped_column(ForeignKey("principal.id"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id"), index=True)
    spec_json: Mapped[str] = mapped_column(Text)
    sites_json: Mapped[str] = mapped_column(Text)  # participating site names, in order
    status: Mapped[str] = mapped_column(String(16), default="running")  # see wire JobStatus
    error: Mapped[str | None] = mapped_column(Text)
    scaling_json: Mapped[str | None] = mapped_column(Text)
    pooled_json: Mapped[str | None] = mapped_column(Text)  # the stats round's pooled totals
    model_sha: Mapped[str | None] = mapped_column(String(64))  # latest global model
    state_sha: Mapped[str | None] = mapped_column(String(64))  # strategy state (e.g. moments)
    state_json: Mapped[str | None] = mapped_column(Text)  # an analysis's Newton state
    report_json: Mapped[str | None] = mapped_column(Text)  # an analysis's report
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rounds: Mapped[list[Round]] = relationship(back_populates="job", order_by="Round.number")
    project: Mapped[Project | None] = relationship()


class Round(Base):
    __tablename__ = "round"
    __table_args__ = (UniqueConstraint("job_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # stats | train | evaluate
    status: Mapped[str] = mapped_column(String(16), default="open")
    input_sha: Mapped[str | None] = mapped_column(String(64))
    params_json: Mapped[str | None] = mapped_column(Text)  # an analysis round's coefficients
    announced_sha: Mapped[str | None] = mapped_column(String(64))  # what every site was sent
    phase: Mapped[str | None] = mapped_column(String(16))  # a secure round's phase
    roster_json: Mapped[str | None] = mapped_column(Text)  # a secure round's signed keys
    survivors_json: Mapped[str | None] = mapped_column(Text)  # its signed survivor list
    next_roster_json: Mapped[str | None] = mapped_column(Text)  # the next round's, if made
    result_json: Mapped[str | None] = mapped_column(Text)  # its pooled numbers, once unmasked
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    job: Mapped[Job] = relationship(back_populates="rounds")
    tasks: Mapped[list[Task]] = relationship(back_populates="round", order_by="Task.site_id")


class Task(Base):
    """One site's work in one round; its id makes result posts idempotent."""

    __tablename__ = "task"
    # A site's tasks by status: handing out finds a site's unanswered ones without reading
    # every task it ever had (``rounds._DELIVERABLE``).
    __table_args__ = (Index("ix_task_site_id_status", "site_id", "status"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("round.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result_sha: Mapped[str | None] = mapped_column(String(64))
    result_json: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    bytes_received: Mapped[int | None] = mapped_column(Integer)
    round: Mapped[Round] = relationship(back_populates="tasks")
    site: Mapped[Site] = relationship()


class UpdateBody(Base):
    """An accepted update's bytes, kept with its task until its round closes, when small enough
    to travel with the transaction that accepts it (``routes.edge.INLINE_UPDATE_BYTES``): no
    file of its own, so no file to create, sync and name for every answer. A larger update
    is a blob, named by its task's ``result_sha``."""

    __tablename__ = "update_body"
    task_id: Mapped[str] = mapped_column(ForeignKey("task.id"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class SecureMessage(Base):
    """What a site posted in one phase of a secure round (its keys, its encrypted shares, its
    unmasking shares); its masked input is a blob, like an update."""

    __tablename__ = "secure_message"
    task_id: Mapped[str] = mapped_column(ForeignKey("task.id"), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DatasetProfile(Base):
    """A site's latest data quality report on one of its datasets (suppressed aggregates)."""

    __tablename__ = "dataset_profile"
    __table_args__ = (UniqueConstraint("site_id", "dataset"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    dataset: Mapped[str] = mapped_column(String(64))
    profile_json: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Service(Base):
    """The one row saying which process serves this database and when it was last seen up
    (see ``lease.py``): its beats measure the orchestrator's downtime."""

    __tablename__ = "service"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    holder: Mapped[str | None] = mapped_column(String(128))  # host:pid of the live process
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    beat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    credited_seconds: Mapped[float | None] = mapped_column(Float)  # downtime given at start


def written(session: Session, row: Job | Round, **values: Any) -> None:
    """Set ``values`` on ``row`` (a job or a round, already in the database) by one UPDATE on
    the session's connection, now: the object holds them as read, so no unit of work writes
    them again; none when each holds its value already, as the unit of work would not. For
    the hot path of a round's close; ``row`` must have no pending change to these attributes
    (it would be forgotten)."""
    if all(getattr(row, name) == value for name, value in values.items()):
        return
    session.connection().execute(_setting(type(row), tuple(values)), {"row_id": row.id, **values})
    for name, value in values.items():
        set_committed_value(row, name, value)


@lru_cache(maxsize=32)
def _setting(model: type[Job] | type[Round], columns: tuple[str, ...]) -> Update:
    table = model.__table__
    assert isinstance(table, Table)
    values: dict[str, Any] = {name: bindparam(name) for name in columns}
    return update(table).where(table.c.id == bindparam("row_id")).values(values)


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision."""
    _db.migrate(url, MIGRATIONS)


class SiteCertificate(Base):
    """A client certificate the consortium CA issued to a site (``pki.py``): its serial, the
    SHA-256 of its DER, its validity, and when it was revoked."""

    __tablename__ = "site_certificate"
    serial: Mapped[str] = mapped_column(String(40), primary_key=True)  # hex
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(EntryColumns, Base):
    """One event of the orchestrator's audit log (``oncofed.audit``): recorded unchained in
    the transaction of what it records, chained by the serving process's tick."""

    __tablename__ = "audit_entry"


class AuditCheckpoint(CheckpointColumns, Base):
    """A checkpoint of the audit log, signed with the orchestrator's identity key."""

    __tablename__ = "audit_checkpoint"


AUDIT = AuditLog(AuditEntry, AuditCheckpoint)
"""The orchestrator's audit log: ``AUDIT.record(session, action, actor=..., ...)``."""
