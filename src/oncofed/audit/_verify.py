"""Verification of a chain and its checkpoints: pure, on entries already read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from oncofed.audit._format import GENESIS, Entry
from oncofed.audit._sign import Checkpoint, signature_holds

Kind = Literal["edited", "deleted", "inserted", "reordered", "unlinked", "checkpoint", "rewritten",
               "truncated"]  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """The first bad entry (``seq``), what is wrong with it and why we think so."""

    kind: Kind
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"entry #{self.seq}: {self.kind}: {self.reason}"


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: the chain's extent, how far it is signed, and its first problem."""

    entries: int
    last_seq: int
    checkpoints: int
    signed_to: int  # the last entry covered by a valid checkpoint (0: none)
    pending: int  # entries recorded but not chained yet
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(
    entries: Sequence[Entry],
    checkpoints: Sequence[Checkpoint],
    public: Ed25519PublicKey,
    pending: int = 0,
) -> Verdict:
    """Check ``entries`` (chained, by ``seq``) and ``checkpoints`` (by ``seq``) against the
    trusted ``public`` key; the problem reported is the one at the lowest entry."""
    found = [p for p in (_walk(entries), _signed(entries, checkpoints, public)) if p]
    problem = min(found, key=lambda p: p.seq, default=None)
    valid = [c.seq for c in checkpoints if signature_holds(public, c)]
    last = entries[-1].seq if entries else 0
    return Verdict(len(entries), last or 0, len(checkpoints), max(valid, default=0), pending,
                   problem)  # fmt: skip


def _walk(entries: Sequence[Entry]) -> Problem | None:
    """The first entry whose position, link or hash is wrong, named with the likeliest cause."""
    position = {e.hash: i for i, e in enumerate(entries)}
    previous, expected = GENESIS, 1
    for i, entry in enumerate(entries):
        seq = entry.seq or 0
        if seq > expected:
            gap = f"#{expected}" if seq == expected + 1 else f"#{expected} to #{seq - 1}"
            return Problem("deleted", expected, f"{gap} missing from the chain")
        if seq < expected:
            return Problem("inserted", seq, f"#{seq} appears twice in the chain")
        linked, intact = entry.prev_hash == previous, entry.computed_hash() == entry.hash
        if linked and intact:
            previous, expected = entry.hash or "", expected + 1
            continue
        after = entries[i + 1] if i + 1 < len(entries) else None
        found = position.get(entry.prev_hash or "")
        if not linked and found is not None and found > i:
            return Problem("reordered", seq, f"it follows #{entries[found].seq}, which comes later")
        if after is not None and after.prev_hash == previous:
            return Problem("inserted", seq, f"#{after.seq} follows the entry before it")
        if not linked and found is not None and found < i - 1:
            first = entries[found + 1].seq or 0
            return Problem(
                "inserted",
                first,
                f"#{seq} follows #{entries[found].seq}: what lies between was added",
            )
        if linked:
            return Problem("edited", seq, "its content no longer matches its hash")
        return Problem(
            "unlinked",
            seq,
            "it does not follow the entry before it: that one was changed and re-hashed, or "
            "entries between them were deleted",
        )
    return None


def _signed(
    entries: Sequence[Entry], checkpoints: Sequence[Checkpoint], public: Ed25519PublicKey
) -> Problem | None:
    """The first checkpoint that is not signed by ``public`` or no longer matches its entry."""
    by_seq = {e.seq: e for e in entries}
    last = (entries[-1].seq or 0) if entries else 0
    good = 0
    for checkpoint in checkpoints:
        if not signature_holds(public, checkpoint):
            return Problem(
                "checkpoint",
                checkpoint.seq,
                "its checkpoint is not signed by the trusted key (forged, or another key)",
            )
        entry = by_seq.get(checkpoint.seq)
        if entry is None and checkpoint.seq > last:
            return Problem(
                "truncated",
                last + 1,
                f"the chain ends at #{last} but a checkpoint signed it up to #{checkpoint.seq}",
            )
        if entry is None or entry.hash != checkpoint.hash:
            return Problem(
                "rewritten",
                good + 1,
                f"entries #{good + 1} to #{checkpoint.seq} were changed: the signed checkpoint "
                f"at #{checkpoint.seq} no longer matches",
            )
        good = checkpoint.seq
    return None
