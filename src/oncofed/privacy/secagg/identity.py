"""Long-term Ed25519 identity keys of sites and of the orchestrator: created once, kept as a
PEM file only its owner can read, registered at enrolment by their raw public bytes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from oncofed.privacy.secagg.errors import IdentityError

FINGERPRINT_HEX = 16


def new_identity() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_identity(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 600; never replaces an existing file,
    since peers have pinned the key it holds."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise IdentityError(
            f"{path} exists already; an identity key is never replaced, since peers have "
            "pinned it (move the old file away only if the site is re-enrolled)"
        ) from exc
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def load_identity(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in ``path``; refused when others than its owner may read the file."""
    try:
        mode = path.stat().st_mode
        pem = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read the identity key {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"the identity key {path} is open to other users (mode {stat.S_IMODE(mode):o}); "
            f"restrict it with: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityError(f"{path} does not hold an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key, as registered and sent on the wire."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes_raw()


def fingerprint(public: bytes) -> str:
    """The first 16 hex digits of SHA-256 of the raw public key, for people to compare."""
    return hashlib.sha256(public).hexdigest()[:FINGERPRINT_HEX]
