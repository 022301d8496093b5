"""One privacy accountant for every release: Renyi differential privacy (RDP) over a fixed grid
of orders.

A release's cost is its RDP curve: ``epsilon(alpha)`` at each order of :data:`ORDERS`. Costs
compose by adding their curves, whatever the mechanism (DP-SGD, Gaussian or Skellam noise), and
a sum converts to (epsilon, delta) at the best order (Mironov 2017, with the conversion Opacus
uses). The edge's budget ledger keeps curves, not epsilons, so composing many small releases
is as tight as RDP allows.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator

import numpy as np

ORDERS: tuple[float, ...] = tuple(
    float(alpha)
    for alpha in [
        *(1 + x / 10 for x in range(1, 100)),
        *range(12, 64),
        *(80, 96, 128, 192, 256, 512, 1024),
    ]
)
"""The orders every curve is kept at: Opacus's default grid (1.1 to 10.9 by tenths, then 12 to
63), extended to 1024 so that small epsilons (large noise) find their best order inside it.
Opacus (and with it PyTorch) is imported only by the DP-SGD functions: an orchestrator reading
noisy sums needs neither."""
_ALPHAS = np.array(ORDERS)
MAX_EPSILON = 1e6
"""Larger epsilons (no meaningful guarantee) are reported as this, never as infinity."""


def zero() -> np.ndarray:
    """The cost of releasing nothing."""
    return np.zeros(len(ORDERS))


def dpsgd_rdp(sample_rate: float, noise_multiplier: float, steps: int) -> np.ndarray:
    """The cost of ``steps`` DP-SGD steps, each on a Poisson sample at ``sample_rate``, with
    Gaussian noise of ``noise_multiplier`` times the per-sample clip norm."""
    if not (0.0 < sample_rate <= 1.0 and noise_multiplier > 0.0 and steps >= 0):
        raise ValueError("DP-SGD needs 0 < sample_rate <= 1, noise_multiplier > 0, steps >= 0")
    from opacus.accountants.analysis.rdp import compute_rdp

    rdp = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=ORDERS)
    return np.asarray(rdp, dtype=np.float64)


def gaussian_rdp(l2_sensitivity: float, sigma: float) -> np.ndarray:
    """The cost of one release with Gaussian noise of standard deviation ``sigma`` on a query
    whose L2 sensitivity (one patient added or removed) is ``l2_sensitivity``."""
    if not (sigma > 0.0 and l2_sensitivity >= 0.0):
        raise ValueError("the Gaussian mechanism needs sigma > 0 and a sensitivity >= 0")
    return _ALPHAS * l2_sensitivity**2 / (2.0 * sigma**2)


def skellam_rdp(variance: float, l1: float, l2: float) -> np.ndarray:
    """The cost of one release of an integer query with symmetric Skellam noise of total
    ``variance`` per coordinate, for L1 and L2 sensitivities ``l1`` and ``l2``.

    Agarwal, Kairouz and Liu (NeurIPS 2021, Theorem 3.5): the Gaussian term
    ``alpha l2^2 / (2 V)`` plus ``min(((2 alpha - 1) l2^2 + 6 l1) / (4 V^2), 3 l1 / (2 V))``,
    for integer orders; the other orders are left out (infinite), so a conversion never uses
    them. The sum of independent Skellam shares is Skellam: sites' shares add up to it."""
    if not (variance > 0.0 and l1 >= 0.0 and l2 >= 0.0):
        raise ValueError("the Skellam mechanism needs a variance > 0 and sensitivities >= 0")
    gaussian = _ALPHAS * l2**2 / (2.0 * variance)
    excess = np.minimum(
        ((2.0 * _ALPHAS - 1.0) * l2**2 + 6.0 * l1) / (4.0 * variance**2),
        3.0 * l1 / (2.0 * variance),
    )
    integral = np.floor(_ALPHAS) == _ALPHAS
    return np.where(integral, gaussian + excess, np.inf)


def epsilon(rdp: np.ndarray, delta: float) -> float:
    """The epsilon at ``delta`` of a (composed) cost; 0 for nothing released."""
    if not 0.0 < delta < 1.0:
        raise ValueError("delta must be between 0 and 1")
    curve = np.asarray(rdp, dtype=np.float64)
    if curve.shape != _ALPHAS.shape:
        raise ValueError(f"a cost has {len(ORDERS)} orders, not {curve.shape}")
    if not curve.any():
        return 0.0
    # Balle et al. 2020, Theorem 21 (the conversion Opacus's get_privacy_spent makes)
    alphas = _ALPHAS
    with np.errstate(invalid="ignore"):
        eps = (
            curve
            - (math.log(delta) + np.log(alphas)) / (alphas - 1)
            + np.log((alphas - 1) / alphas)
        )
    best = float(np.nanmin(eps)) if not np.isnan(eps).all() else math.inf
    return min(best, MAX_EPSILON) if math.isfinite(best) else MAX_EPSILON


def epsilon_floor(delta: float) -> float:
    """The epsilon at ``delta`` that no amount of noise gets below on this grid of orders (the
    conversion's own term at the best order): a job must ask for more."""
    alphas = _ALPHAS
    floor = -(math.log(delta) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    return max(float(floor.min()), 0.0)


def calibrate_dpsgd(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to 1%) whose ``steps`` DP-SGD steps at ``sample_rate``
    cost at most ``epsilon`` at ``delta``."""
    if not (epsilon > 0.0 and 0.0 < delta < 1.0 and steps >= 1):
        raise ValueError("calibration needs epsilon > 0, 0 < delta < 1 and steps >= 1")
    from opacus.accountants.utils import get_noise_multiplier

    with _best_order_at_an_end():
        sigma = get_noise_multiplier(
            target_epsilon=epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
            alphas=list(ORDERS),
        )
    return float(sigma)


def calibrate_skellam(target: float, delta: float, l1: float, l2: float, rounds: int = 1) -> float:
    """The smallest Skellam variance (to 1%) whose ``rounds`` releases of a query with L1 and
    L2 sensitivities ``l1`` and ``l2`` cost at most epsilon ``target`` at ``delta``."""
    if not (target > 0.0 and 0.0 < delta < 1.0 and l1 > 0.0 and l2 > 0.0 and rounds >= 1):
        raise ValueError(
            "calibration needs epsilon > 0, 0 < delta < 1, sensitivities > 0 and rounds >= 1"
        )

    def fits(variance: float) -> bool:
        return epsilon(rounds * skellam_rdp(variance, l1, l2), delta) <= target

    low, high = 1e-3, 1e-3
    while not fits(high):
        low, high = high, high * 4.0
        if high > 1e18:
            raise ValueError(f"no Skellam variance reaches epsilon {target:g}")
    while high > low * 1.01:
        middle = math.sqrt(low * high)
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


@contextlib.contextmanager
def _best_order_at_an_end() -> Iterator[None]:
    """Opacus warns when the best order is at the grid's end: the bound is then looser than a
    wider grid would give, never wrong (and this grid's ends are far from useful budgets)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Optimal order is the", UserWarning)
        yield
