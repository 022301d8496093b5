"""``AuditLog.append`` on a database: each entry written chained, in a session's transaction or
a connection's, an entry left pending chained first, and a checkpoint signed every ``every``
entries (the first at once)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oncofed.audit import Filters
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
