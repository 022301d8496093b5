"""The audit log the orchestrator and every edge keep: append-only, hash-chained, with
checkpoints signed by the owner's Ed25519 identity key.

Each database mixes ``EntryColumns`` and ``CheckpointColumns`` into two tables and wraps them
in an ``AuditLog`` (``oncofed.orchestrator.db.AUDIT``, ``oncofed.edge.ledger.AUDIT``). At each
event, in the transaction that does what it records::

    AUDIT.record(session, "token.revoked", actor="operator:alice", user="bob",
                 detail={"token": 12})

``chain``/``chain_pending`` then give pending entries their place in the chain and sign
checkpoints; ``verify`` names the first bad entry. Details hold ids, hashes, names, counts and
short reasons only (``check_detail``): never a patient value, a metric or an aggregate.
"""

from oncofed.audit._format import (
    GENESIS,
    MAX_TEXT,
    AuditError,
    Detail,
    Entry,
    canonical,
    check_detail,
    clip,
    iso,
    sha256_of,
)
from oncofed.audit._sign import DOMAIN, Checkpoint, sign
from oncofed.audit._store import (
    CHECKPOINT_EVERY,
    CHECKPOINT_SECONDS,
    AuditLog,
    CheckpointColumns,
    EntryColumns,
    Filters,
    describe,
)
from oncofed.audit._verify import Problem, Verdict, verify

__all__ = [
    "CHECKPOINT_EVERY",
    "CHECKPOINT_SECONDS",
    "DOMAIN",
    "GENESIS",
    "MAX_TEXT",
    "AuditError",
    "AuditLog",
    "Checkpoint",
    "CheckpointColumns",
    "Detail",
    "Entry",
    "EntryColumns",
    "Filters",
    "Problem",
    "Verdict",
    "actor",
    "canonical",
    "check_detail",
    "clip",
    "describe",
    "iso",
    "sha256_of",
    "sign",
    "verify",
]


def actor(role: str, name: str) -> str:
    """Who acted, as entries name them: ``operator:alice``, ``site:bergen``."""
    return clip(f"{role}:{name}")
