"""Identity keys: a private PEM file, never replaced, refused when others can read it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oncofed.privacy.secagg import (
    IdentityError,
    fingerprint,
    load_identity,
    new_identity,
    public_bytes,
    save_identity,
)


def test_an_identity_round_trips_through_a_private_file(tmp_path: Path) -> None:
    key = new_identity()
    path = tmp_path / "identity.pem"
    save_identity(key, path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_identity(path)
    assert public_bytes(loaded) == public_bytes(key) == public_bytes(key.public_key())
    assert len(public_bytes(key)) == 32
    assert fingerprint(public_bytes(key)) == hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def test_an_identity_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "identity.pem"
    save_identity(new_identity(), path)
    before = path.read_bytes()
    with pytest.raises(IdentityError, match="exists already; an identity key is never replaced"):
        save_identity(new_identity(), path)
    assert path.read_bytes() == before


def test_unsafe_or_wrong_identity_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.pem"
    save_identity(new_identity(), path)
    path.chmod(0o644)
    with pytest.raises(IdentityError, match=f"open to other users .* chmod 600 {path}"):
        load_identity(path)
    other = tmp_path / "x25519.pem"
    other.write_bytes(
        X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    other.chmod(0o600)
    with pytest.raises(IdentityError, match="holds a X25519PrivateKey, not an Ed25519 key"):
        load_identity(other)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(IdentityError, match="does not hold an unencrypted PEM private key"):
        load_identity(garbage)
    with pytest.raises(IdentityError, match="cannot read the identity key"):
        load_identity(tmp_path / "missing.pem")
