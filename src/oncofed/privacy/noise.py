"""Distributed noise: each site adds a share of a release's Skellam noise before secure
aggregation masks its numbers, so the orchestrator unmasks only the noisy sum.

A Skellam variable (the difference of two Poisson variables of mean V/2) has variance V, and
independent ones add up to a Skellam variable (Agarwal, Kairouz and Liu 2021): shares of
variance V/m from m or more sites sum to at least the variance V the release was calibrated to.
A site's secure client never releases its unmasking shares for a sum of fewer than its
policy's ``min_secure_sites`` sites, so a site that divides by that number is covered by any
sum its numbers are unmasked in, as long as the other sites in it add their shares too.
"""

from __future__ import annotations

import numpy as np


def share_variance(variance: float, min_sites: int) -> float:
    """The variance of one site's share: ``variance`` spread over the fewest sites (``min_sites``)
    any sum of this site's numbers holds."""
    if not (variance > 0.0 and min_sites >= 1):
        raise ValueError("a noise share needs a variance > 0 and at least one site")
    return variance / min_sites


def skellam_share(rng: np.random.Generator, variance: float, shape: tuple[int, ...]) -> np.ndarray:
    """Integer Skellam noise of ``variance`` per element, as int64."""
    mean = variance / 2.0
    return rng.poisson(mean, shape).astype(np.int64) - rng.poisson(mean, shape).astype(np.int64)
