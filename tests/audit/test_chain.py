"""The chain format alone: each kind of tampering is named at the first bad entry, forged and
stale checkpoints are caught, and details that could carry patient values are refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oncofed.audit import GENESIS, AuditError, Checkpoint, Entry, check_detail, clip, sign, verify

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def event(i: int) -> Entry:
    return Entry(START + timedelta(seconds=i), "operator:alice", "site.created", None,
                 f"site{i}", None, {"n": i})  # fmt: skip


def chained(entries: list[Entry], first: int = 1, previous: str = GENESIS) -> list[Entry]:
    """Entries linked as the chainer links them (anyone can do this: no key needed)."""
    out = []
    for seq, entry in enumerate(entries, start=first):
        linked = replace(entry, seq=seq, prev_hash=previous)
        linked = replace(linked, hash=linked.computed_hash())
        out.append(linked)
        previous = linked.hash or ""
    return out


def checkpoint(entry: Entry, key: Ed25519PrivateKey = KEY) -> Checkpoint:
    assert entry.seq is not None and entry.hash is not None
    return Checkpoint(entry.seq, entry.hash, START, "", sign(key, entry.seq, entry.hash))


@pytest.fixture
def chain() -> list[Entry]:
    return chained([event(i) for i in range(10)])


def problem(entries: list[Entry], checkpoints: list[Checkpoint] | None = None) -> tuple[str, int]:
    verdict = verify(entries, checkpoints or [], PUBLIC)
    assert verdict.problem is not None
    return verdict.problem.kind, verdict.problem.seq


def test_an_intact_chain_verifies(chain: list[Entry]) -> None:
    verdict = verify(chain, [checkpoint(chain[4]), checkpoint(chain[9])], PUBLIC, pending=2)
    assert verdict.ok and verdict.last_seq == 10 and verdict.signed_to == 10
    assert verdict.pending == 2


def test_an_edited_entry_is_named(chain: list[Entry]) -> None:
    chain[3] = replace(chain[3], detail={"n": 99})
    assert problem(chain) == ("edited", 4)
    assert verify(chain[:3], [], PUBLIC).ok  # the entries before it are fine


def test_a_deleted_entry_is_named(chain: list[Entry]) -> None:
    del chain[5]
    assert problem(chain) == ("deleted", 6)


def test_a_deleted_entry_with_the_rest_renumbered_is_caught(chain: list[Entry]) -> None:
    rest = [replace(e, seq=(e.seq or 0) - 1) for e in chain[6:]]
    assert problem([*chain[:5], *rest]) == ("unlinked", 6)


def test_an_inserted_entry_is_named(chain: list[Entry]) -> None:
    """A forged entry slipped in at #4 with a valid link, the later ones renumbered."""
    forged = chained([event(77)], first=4, previous=chain[2].hash or "")[0]
    later = [replace(e, seq=(e.seq or 0) + 1) for e in chain[3:]]
    assert problem([*chain[:3], forged, *later]) == ("inserted", 4)


def test_reordered_entries_are_named(chain: list[Entry]) -> None:
    chain[3], chain[4] = replace(chain[4], seq=4), replace(chain[3], seq=5)
    assert problem(chain) == ("reordered", 4)


def test_a_rewritten_chain_is_caught_by_its_signed_checkpoint(chain: list[Entry]) -> None:
    """Editing #7 and recomputing every hash after it leaves a valid-looking chain; the
    checkpoint signed at #5 still holds, the one at #10 no longer matches."""
    signed = [checkpoint(chain[4]), checkpoint(chain[9])]
    rewritten = chain[:6] + chained([replace(chain[6], detail={"n": 0}), *chain[7:]], 7,
                                    chain[5].hash or "")  # fmt: skip
    assert verify(rewritten, [], PUBLIC).ok  # the naive check: no key, no detection
    assert problem(rewritten, signed) == ("rewritten", 6)


def test_truncation_below_the_last_checkpoint_is_caught(chain: list[Entry]) -> None:
    signed = [checkpoint(chain[9])]
    assert verify(chain[:7], [], PUBLIC).ok
    assert problem(chain[:7], signed) == ("truncated", 8)


def test_a_forged_checkpoint_is_caught(chain: list[Entry]) -> None:
    """A checkpoint signed with another key (say, over a rewritten chain) is refused."""
    other = Ed25519PrivateKey.generate()
    assert problem(chain, [checkpoint(chain[4]), checkpoint(chain[9], other)]) == (
        "checkpoint",
        10,
    )
    bad = replace(checkpoint(chain[4]), signature="00" * 64)
    assert problem(chain, [bad]) == ("checkpoint", 5)


def test_the_signature_covers_the_position_too(chain: list[Entry]) -> None:
    """A genuine checkpoint moved to another entry (same hash claimed at another seq) fails."""
    moved = replace(checkpoint(chain[4]), seq=6)
    assert problem(chain, [moved]) == ("checkpoint", 6)


@pytest.mark.parametrize(
    ("detail", "message"),
    [
        ({"age": 63.2}, "float"),
        ({"mean": float("nan")}, "float"),
        ({"reason": "x" * 201}, "at most 200"),
        ({"rows": {"age": 63}}, "dict"),
        ({"values": [1.5, 2.5]}, "must be text"),
        ({"Bad Key": 1}, "identifier"),
        ({"reason": "two\nlines"}, "control"),
        ({"blob": b"\x00\x01"}, "bytes"),
    ],
)
def test_details_that_could_carry_patient_values_are_refused(
    detail: dict[str, object], message: str
) -> None:
    with pytest.raises(AuditError, match=message):
        check_detail(detail)


def test_what_an_entry_may_hold() -> None:
    detail = {"job": "j1", "sites": ["a", "b"], "round": 3, "secure": True, "model": None}
    assert check_detail(detail) == detail
    assert clip("a\nreason  with\x1b[31m codes " + "y" * 300).startswith("a reason with [31m")
    assert len(clip("y" * 300)) == 200
