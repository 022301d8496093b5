"""Checkpoints: the log's owner signs the hash of its latest entry with its Ed25519 identity
key. Whoever holds the public half can then tell that no entry up to there was changed, even
by someone who recomputed every hash after their change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOMAIN = b"oncofed audit checkpoint v1\x00"
"""Prefixed to what is signed, so no other message signed with the same key can pass for a
checkpoint (the key also signs secure aggregation's survivor lists and key adverts)."""


@dataclass(frozen=True)
class Checkpoint:
    """A signature over the entry ``seq`` of the chain and its ``hash``."""

    seq: int
    hash: str
    at: datetime
    key: str  # the signer's raw public key, hex (informative: verify with a trusted key)
    signature: str  # hex


def signed_bytes(seq: int, entry_hash: str) -> bytes:
    return DOMAIN + seq.to_bytes(8, "big") + bytes.fromhex(entry_hash)


def sign(key: Ed25519PrivateKey, seq: int, entry_hash: str) -> str:
    """The signature of a checkpoint at entry ``seq`` (hex)."""
    return key.sign(signed_bytes(seq, entry_hash)).hex()


def signature_holds(public: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    try:
        public.verify(
            bytes.fromhex(checkpoint.signature), signed_bytes(checkpoint.seq, checkpoint.hash)
        )
    except (InvalidSignature, ValueError, OverflowError):
        return False
    return True
