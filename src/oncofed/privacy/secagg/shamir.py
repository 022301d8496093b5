"""Shamir secret sharing (Shamir 1979) of 32-byte secrets over GF(p), p = 2**521 - 1.

A secret s is f(0) of a random polynomial f of degree t - 1; site i holds f(x_i), x_i its
1-based position in the roster. Any t shares give s by Lagrange interpolation at 0; fewer
give no information about it, since every value of s fits them equally well.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache

from oncofed.privacy.secagg.errors import ProtocolError, ReconstructionError, ThresholdError
from oncofed.wire.secagg import SHARE_BYTES

PRIME = 2**521 - 1
"""A Mersenne prime, larger than any 256-bit secret."""
SECRET_BYTES = 32
_TOLERANCE = 1e-9


def threshold_for(sites: int, fraction: float) -> int:
    """t = floor(fraction * n) + 1, at least a majority and at most n.

    A product within 1e-9 of an integer counts as that integer (2/3 of 3 sites is 2, so t = 3).
    What t buys: an orchestrator that signs different survivor lists for different sites needs
    t shares of each kind of a target, and each honest site gives one kind only (the never-both
    rule), so it unmasks one site's input only with at least 2t - n colluding sites: n/3 at a
    threshold of 2/3, n/2 at 3/4. At most n - t sites may drop out.
    """
    above = math.floor(fraction * sites + _TOLERANCE) + 1
    return min(sites, max(above, sites // 2 + 1))


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> dict[int, int]:
    """Shares f(x) for every x of ``xs``, with f(0) = ``secret`` and t - 1 random coefficients."""
    if len(secret) != SECRET_BYTES or not 1 <= threshold <= len(xs):
        raise ValueError("a 32-byte secret and 1 <= threshold <= number of shares")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in xs:
        value = 0
        for coefficient in reversed(coefficients):  # Horner's rule
            value = (value * x + coefficient) % PRIME
        shares[x] = value
    return shares


def combine(shares: Mapping[int, int], threshold: int, what: str) -> bytes:
    """f(0) from at least t shares. With more than t, the first t and the last t must agree
    (together they cover every share, since t > n/2); the secret must fit 32 bytes."""
    xs = sorted(shares)
    if len(xs) < threshold:
        raise ThresholdError(
            f"only {len(xs)} shares of {what} arrived and {threshold} are needed; the round "
            "cannot be unmasked"
        )
    secret = _at_zero(shares, tuple(xs[:threshold]))
    consistent = len(xs) == threshold or _at_zero(shares, tuple(xs[-threshold:])) == secret
    if not consistent or secret.bit_length() > 8 * SECRET_BYTES:
        raise ReconstructionError(
            f"the shares of {what} do not agree: at least one site sent a wrong share; the "
            "round's sum cannot be unmasked"
        )
    return secret.to_bytes(SECRET_BYTES, "big")


def share_bytes(value: int) -> bytes:
    return value.to_bytes(SHARE_BYTES, "big")


def share_value(data: bytes, sender: str) -> int:
    """A share from the wire; it must be an element of the field."""
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ProtocolError(f"site {sender!r} sent a share outside the field")
    return value


def _at_zero(shares: Mapping[int, int], xs: tuple[int, ...]) -> int:
    return sum(shares[x] * weight for x, weight in zip(xs, _lagrange(xs), strict=True)) % PRIME


@lru_cache(maxsize=64)
def _lagrange(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange weights at 0: w_i = prod_{j != i} x_j / (x_j - x_i) mod p."""
    weights = []
    for i in xs:
        numerator, denominator = 1, 1
        for j in xs:
            if j != i:
                numerator = numerator * j % PRIME
                denominator = denominator * (j - i) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(weights)
