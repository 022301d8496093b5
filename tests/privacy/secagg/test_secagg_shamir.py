"""Shamir sharing: any t shares rebuild, fewer fit every secret, wrong shares are caught."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from oncofed.privacy.secagg import ProtocolError, ReconstructionError, ThresholdError
from oncofed.privacy.secagg.shamir import (
    PRIME,
    _lagrange,
    combine,
    share_bytes,
    share_value,
    split,
)


def test_any_t_of_n_shares_rebuild_the_secret() -> None:
    secret = os.urandom(32)
    shares = split(secret, 3, range(1, 6))
    for subset in itertools.combinations(shares, 3):
        assert combine({x: shares[x] for x in subset}, 3, "s") == secret
    big = split(secret, 22, range(1, 33))
    picker = random.Random(0)
    for _ in range(5):
        subset = picker.sample(sorted(big), picker.randint(22, 32))
        assert combine({x: big[x] for x in subset}, 22, "s") == secret


def test_fewer_than_t_shares_fit_every_secret() -> None:
    """For t - 1 shares and any candidate secret there is a t-th share that completes them to
    it: the t - 1 shares say nothing about the secret."""
    secret, other = os.urandom(32), os.urandom(32)
    shares = split(secret, 4, range(1, 8))
    known = {x: shares[x] for x in (2, 5, 7)}
    xs = (2, 5, 7, 3)
    weights = dict(zip(xs, _lagrange(xs), strict=True))
    partial = sum(known[x] * weights[x] for x in known) % PRIME
    completing = (int.from_bytes(other, "big") - partial) * pow(weights[3], -1, PRIME) % PRIME
    assert combine(known | {3: completing}, 4, "s") == other
    assert combine(known | {3: shares[3]}, 4, "s") == secret


def test_wrong_shares_and_too_few_shares_fail_with_a_reason() -> None:
    secret = os.urandom(32)
    shares = split(secret, 3, range(1, 6))
    wrong = dict(shares) | {4: (shares[4] + 1) % PRIME}
    with pytest.raises(ReconstructionError, match="shares of s do not agree"):
        combine(wrong, 3, "s")
    with pytest.raises(ThresholdError, match="only 2 shares of s arrived and 3 are needed"):
        combine({1: shares[1], 2: shares[2]}, 3, "s")
    random_share = {x: shares[x] for x in (1, 2)} | {3: int.from_bytes(os.urandom(64)) % PRIME}
    with pytest.raises(ReconstructionError):  # a secret above 2**256: not one that was shared
        combine(random_share, 3, "s")


def test_shares_cross_the_wire_as_field_elements() -> None:
    value = PRIME - 1
    assert share_value(share_bytes(value), "a") == value
    with pytest.raises(ProtocolError, match="site 'a' sent a share outside the field"):
        share_value(share_bytes(PRIME), "a")
