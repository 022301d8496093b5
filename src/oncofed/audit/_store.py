"""The log in a database: column mixins both databases share, recording, chaining, reading.

Recording adds an unchained row inside the caller's own transaction, so the entry commits (or
rolls back) with what it records. Chaining (``AuditLog.chain``) gives the rows still pending
their ``seq``, ``prev_hash`` and ``hash`` in the order they became visible, each by an UPDATE
that only matches an unchained row (a second chainer fails instead of rewriting), and signs a
checkpoint every ``every`` entries or ``period`` seconds. Chained columns are never written
again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import (
    Connection,
    Integer,
    Select,
    String,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from oncofed._db import UTCDateTime, utcnow
from oncofed.audit._format import (
    GENESIS,
    MAX_NAME,
    MAX_TEXT,
    AuditError,
    Detail,
    Entry,
    canonical,
    check_action,
    check_detail,
    check_text,
)
from oncofed.audit._sign import Checkpoint, sign
from oncofed.audit._verify import Verdict, verify
from oncofed.privacy.secagg.identity import public_bytes

CHECKPOINT_EVERY = 100
"""Entries between two checkpoints at most."""
CHECKPOINT_SECONDS = 60.0
"""Seconds an entry waits for its checkpoint at most (when the chainer runs that often)."""


class EntryColumns:
    """An audit entry's columns; a database's class adds ``__tablename__`` and its ``Base``."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # the order rows became visible
    seq: Mapped[int | None] = mapped_column(Integer, unique=True)  # its place in the chain
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(MAX_TEXT))
    action: Mapped[str] = mapped_column(String(48), index=True)
    project: Mapped[str | None] = mapped_column(String(MAX_NAME), index=True)
    site: Mapped[str | None] = mapped_column(String(MAX_NAME), index=True)
    user: Mapped[str | None] = mapped_column(String(MAX_NAME), index=True)
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))

    def entry(self) -> Entry:
        """The row as an ``Entry`` (a detail that is no longer JSON is kept as its text, so
        its hash no longer matches)."""
        try:
            detail = json.loads(self.detail)
        except ValueError:
            detail = {"unreadable": self.detail}
        return Entry(self.at, self.actor, self.action, self.project, self.site, self.user,
                     detail, self.seq, self.prev_hash, self.hash)  # fmt: skip


class CheckpointColumns:
    """A signed checkpoint's columns (see ``oncofed.audit._sign``)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.seq, self.hash, self.at, self.key, self.signature)


@dataclass(frozen=True)
class Filters:
    """What ``oncofed audit show`` selects; None matches everything."""

    project: str | None = None
    site: str | None = None
    user: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditLog:
    """One database's audit log: its entry and checkpoint tables."""

    def __init__(self, entries: type[Any], checkpoints: type[Any]) -> None:
        """``entries`` and ``checkpoints``: mapped classes built on ``EntryColumns`` and
        ``CheckpointColumns``."""
        if not (issubclass(entries, EntryColumns) and issubclass(checkpoints, CheckpointColumns)):
            raise TypeError("an audit log's tables mix in EntryColumns and CheckpointColumns")
        self.entries: type[Any] = entries  # the mapped classes take the columns as keywords
        self.checkpoints: type[Any] = checkpoints
        # built once (a statement's construction costs more than its run on a small log)
        self._pending = select(entries.id).where(entries.seq.is_(None)).limit(1)
        self._head = (
            select(entries.seq, entries.hash)
            .where(entries.seq.is_not(None))
            .order_by(entries.seq.desc())
            .limit(1)
        )
        self._insert = insert(entries)
        table = cast(Any, entries).__table__  # a mapped class (checked above)
        self._chain_row = (  # its parameters are named apart from the columns it sets
            update(table)
            .where(table.c.id == bindparam("row"), table.c.seq.is_(None))
            .values(seq=bindparam("to_seq"), prev_hash=bindparam("to_prev"), hash=bindparam("to"))
        )
        self._signed = (
            select(checkpoints.seq, checkpoints.at).order_by(checkpoints.seq.desc()).limit(1)
        )
        self._sign = insert(checkpoints)
        head = select(entries.seq).where(entries.seq.is_not(None)).order_by(entries.seq.desc())
        signed = select(checkpoints.seq).order_by(checkpoints.seq.desc())
        self._state = select(  # what append needs, in one statement: each a one-row lookup
            self._pending.scalar_subquery(),
            head.limit(1).scalar_subquery(),
            head.with_only_columns(entries.hash).limit(1).scalar_subquery(),
            signed.limit(1).scalar_subquery(),
            signed.with_only_columns(checkpoints.at).limit(1).scalar_subquery(),
        )

    def record(
        self,
        session: Session,
        action: str,
        *,
        actor: str,
        project: str | None = None,
        site: str | None = None,
        user: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Add an entry to ``session``'s transaction: it is written if and only if the
        transaction commits, and chained later (``chain``).

        ``action``: a dotted name (``auth.failure``, ``token.revoked``, ``site.enrolled``);
        ``actor``: who did it, ``role:name`` (``operator:alice``, ``site:bergen``) or
        ``anonymous``/``edge``; ``project``, ``site``, ``user``: what ``oncofed audit show``
        filters on; ``detail``: ids, hashes, names, counts and short reasons only (floats,
        nested objects and text over 200 characters raise ``AuditError``: pass free text
        through ``clip``). Never a patient value, a metric or an aggregate.
        """
        columns = _columns(action, actor, project, site, user, detail)
        session.connection().execute(self._insert, columns)  # no unit of work to pay for

    def append(
        self,
        session: Session | Connection,
        key: Ed25519PrivateKey,
        action: str,
        *,
        actor: str,
        project: str | None = None,
        site: str | None = None,
        user: str | None = None,
        detail: Mapping[str, Any] | None = None,
        every: int = CHECKPOINT_EVERY,
    ) -> None:
        """``record`` then ``chain``, in the caller's transaction (a session's, or a
        connection's: no unit of work to pay for). When no entry is pending (an edge's log,
        whose every entry is chained as it is recorded), one read and one insert (and a
        checkpoint's when due): the entry is written chained."""
        connection = session.connection() if isinstance(session, Session) else session
        pending, seq, previous, signed, at = connection.execute(self._state).one()
        if pending is not None:  # chained first, in order
            with _joined(session) as joined:
                self.record(joined, action, actor=actor, project=project, site=site, user=user,
                            detail=detail)  # fmt: skip
                self.chain(joined, key, every=every)
            return
        if seq is None or previous is None:  # none chained yet (chained: both are set)
            seq, previous = 0, GENESIS
        seq += 1
        columns = _columns(action, actor, project, site, user, detail)
        entry = Entry(columns["at"], columns["actor"], columns["action"], project, site, user,
                      json.loads(columns["detail"]), seq, previous)  # fmt: skip
        digest = entry.computed_hash()
        connection.execute(
            self._insert, {**columns, "seq": seq, "prev_hash": previous, "hash": digest}
        )
        signed = signed or 0  # none signed yet
        self._sign_if_due(
            connection, key, seq, digest, signed, at, every, CHECKPOINT_SECONDS, False
        )

    def _last(self, session: Session) -> tuple[int, str]:
        """The last chained entry's ``seq`` and ``hash`` (0 and the genesis hash for none)."""
        last = session.connection().execute(self._head).first()
        if last is None or last[0] is None or last[1] is None:  # chained: both are set
            return 0, GENESIS
        return last[0], last[1]

    def chain(
        self,
        session: Session,
        key: Ed25519PrivateKey,
        *,
        every: int = CHECKPOINT_EVERY,
        period: float = CHECKPOINT_SECONDS,
        final: bool = False,
    ) -> int:
        """Chain the entries pending in ``session``'s view, in the order they became visible,
        and sign a checkpoint when ``every`` entries or ``period`` seconds went unsigned (or
        at once when ``final``, at shutdown); the number of entries chained."""
        table = self.entries
        session.flush()
        seq, previous = self._last(session)
        pending = session.scalars(select(table).where(table.seq.is_(None)).order_by(table.id))
        rows = pending.all()
        links = []
        for row in rows:
            seq += 1
            digest = replace(row.entry(), seq=seq, prev_hash=previous).computed_hash()
            links.append({"row": row.id, "to_seq": seq, "to_prev": previous, "to": digest})
            previous = digest
        if links:  # in one statement; each row still unchained, or none is
            done = session.connection().execute(self._chain_row, links)
            if done.rowcount != len(links):
                raise AuditError("another process is chaining this audit log")
            for row in rows:
                session.expire(row)
        self._checkpoint(session, key, seq, previous, every, period, final)
        return len(links)

    def chain_pending(
        self, sessions: sessionmaker[Session], key: Ed25519PrivateKey, *, final: bool = False
    ) -> int:
        """``chain`` in a transaction of its own (the orchestrator's tick, and its shutdown
        with ``final``)."""
        with sessions.begin() as session:
            return self.chain(session, key, final=final)

    def _checkpoint(
        self,
        session: Session,
        key: Ed25519PrivateKey,
        seq: int,
        entry_hash: str,
        every: int,
        period: float,
        final: bool,
    ) -> None:
        connection = session.connection()
        last = connection.execute(self._signed).first()
        signed, at = (last[0], last[1]) if last is not None else (0, None)
        self._sign_if_due(connection, key, seq, entry_hash, signed, at, every, period, final)

    def _sign_if_due(
        self,
        connection: Connection,
        key: Ed25519PrivateKey,
        seq: int,
        entry_hash: str,
        signed: int,
        at: datetime | None,
        every: int,
        period: float,
        final: bool,
    ) -> None:
        """Sign a checkpoint of entry ``seq`` when due: ``every`` entries or ``period`` seconds
        after the last one (entry ``signed``, at ``at``), or at once when ``final``."""
        if seq <= signed:
            return
        now = utcnow()
        due = at is None or now - at >= timedelta(seconds=period)
        if final or due or seq - signed >= every:
            public = public_bytes(key).hex()
            signature = sign(key, seq, entry_hash)
            row = {"seq": seq, "hash": entry_hash, "at": now, "key": public, "signature": signature}
            connection.execute(self._sign, row)

    def verify(self, session: Session, public: Ed25519PublicKey) -> Verdict:
        """Check the whole chain and its checkpoints against the trusted ``public`` key."""
        table = self.entries
        rows = session.scalars(select(table).where(table.seq.is_not(None)).order_by(table.seq))
        chain = [row.entry() for row in rows]
        pending = session.scalar(select(func.count()).where(table.seq.is_(None))) or 0
        return verify(chain, self.signed(session), public, pending)

    def signed(self, session: Session) -> list[Checkpoint]:
        """Every checkpoint, by entry."""
        table = self.checkpoints
        return [row.checkpoint() for row in session.scalars(select(table).order_by(table.seq))]

    def query(self, filters: Filters) -> Select[Any]:
        """The entries ``filters`` selects, in chain order (pending ones last)."""
        table = self.entries
        query = select(table)
        for column, value in (
            (table.project, filters.project),
            (table.site, filters.site),
            (table.user, filters.user),
            (table.action, filters.action),
        ):
            if value is not None:
                query = query.where(column == value)
        if filters.since is not None:
            query = query.where(table.at >= filters.since)
        if filters.until is not None:
            query = query.where(table.at < filters.until)
        return query.order_by(table.seq.is_(None), table.seq, table.id)

    def read(self, session: Session, filters: Filters, limit: int | None = None) -> list[Entry]:
        """The entries ``filters`` selects (the first ``limit``)."""
        return [row.entry() for row in session.scalars(self.query(filters).limit(limit))]


@contextmanager
def _joined(session: Session | Connection) -> Iterator[Session]:
    """``session``, or a session joining ``session``'s transaction when it is a connection
    (the caller commits or rolls back)."""
    if isinstance(session, Session):
        yield session
        return
    with Session(bind=session, join_transaction_mode="create_savepoint") as joined:
        yield joined
        joined.commit()  # releases the savepoint: the caller's transaction holds it all


def _columns(
    action: str,
    actor: str,
    project: str | None,
    site: str | None,
    user: str | None,
    detail: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A new entry's columns, checked (``AuditLog.record``)."""
    for name, value in (("project", project), ("site", site), ("user", user)):
        if value is not None:
            check_text(value, name, MAX_NAME)
    return {
        "at": utcnow(),
        "actor": check_text(actor, "actor"),
        "action": check_action(action),
        "project": project,
        "site": site,
        "user": user,
        "detail": canonical(check_detail(detail)).decode(),
    }


def describe(detail: Detail) -> str:
    """An entry's detail on one line: ``key=value`` pairs, lists joined by commas."""
    parts = []
    for key, value in detail.items():
        shown = ",".join(value) if isinstance(value, list) else value
        parts.append(f"{key}={shown}")
    return " ".join(parts)
