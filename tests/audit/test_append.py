"""``AuditLog.append`` on a database: each entry written chained, in a session's transaction or
a connection's, an entry left pending chained first, and a checkpoint signed every ``every``
entries (the first at once)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oncofed.audit import AuditError, Entry, Filters, _store
from oncofed.edge.ledger import AUDIT, Ledger

KEY = Ed25519PrivateKey.generate()


def test_append_chains_in_a_session_or_on_a_connection_and_signs_every_few(
    tmp_path: Path,
) -> None:
    with Ledger(tmp_path) as ledger:
        engine = ledger.sessions.kw["bind"]
        for n in range(4):
            with engine.begin() as connection:
                AUDIT.append(connection, KEY, "egress", actor="edge", detail={"n": n}, every=3)
        with ledger.sessions.begin() as session:
            AUDIT.append(session, KEY, "egress", actor="edge", detail={"n": 4}, every=3)
        with ledger.sessions.begin() as session:  # left pending, as an older edge's crash may
            AUDIT.record(session, "task.refused", actor="edge", detail={"n": 5})
        with engine.begin() as connection:
            AUDIT.append(connection, KEY, "egress", actor="edge", detail={"n": 6}, every=3)
        with ledger.sessions() as session:
            verdict = AUDIT.verify(session, KEY.public_key())
            signed = [checkpoint.seq for checkpoint in AUDIT.signed(session)]
            chain = [entry.detail["n"] for entry in AUDIT.read(session, Filters())]
    assert verdict.ok and verdict.pending == 0 and verdict.last_seq == verdict.signed_to == 7
    assert signed == [1, 4, 7]
    assert chain == list(range(7))


def test_a_chainer_that_finds_entries_chained_meanwhile_refuses_and_chains_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two chainers of one log (a second process): the one that finds, as it writes, an
    entry the other chained since it read them raises, and its transaction changes none."""
    with Ledger(tmp_path) as ledger:
        engine = ledger.sessions.kw["bind"]
        with ledger.sessions.begin() as session:
            for n in range(3):
                AUDIT.record(session, "task.refused", actor="edge", detail={"n": n})
        linked: list[Entry] = []

        def meanwhile(entry: Entry, **changes: object) -> Entry:
            if not linked:  # the other chainer takes the last entry first
                table = AUDIT.entries.__table__
                with engine.begin() as connection:
                    last = connection.execute(sa.select(sa.func.max(table.c.id))).scalar_one()
                    connection.execute(
                        sa.update(table).where(table.c.id == last).values(seq=99, hash="x")
                    )
            linked.append(entry)
            return replace(entry, **changes)  # type: ignore[arg-type]

        monkeypatch.setattr(_store, "replace", meanwhile)
        with pytest.raises(AuditError, match="another process"), ledger.sessions.begin() as s:
            AUDIT.chain(s, KEY)
        with engine.connect() as connection:
            table = AUDIT.entries.__table__
            seqs = connection.execute(sa.select(table.c.seq).order_by(table.c.id)).scalars()
            assert list(seqs) == [None, None, 99]  # only the other chainer's change stays
    assert len(linked) == 3
