"""Differentially private analyses: what one patient can change in a site's secure
contribution, the noise each site adds to it in shares, and the orchestrator's reading of the
noisy sums.

Every number a site sends is put on a grid of step ``unit`` (1 for counts), rounded to it,
and given a share of Skellam noise in grid steps (:mod:`oncofed.privacy.noise`); only the sum
over the sites, noise included, is unmasked. A round costs the Skellam mechanism's curve
(:func:`oncofed.privacy.accounting.skellam_rdp`) for the L1 and L2 sensitivities of the whole
contribution in grid steps, and the variance is calibrated so that the job's rounds together
cost its ``epsilon`` at each site. One patient added or removed changes:

- counts: one cell of the table (L1 = L2 = 1);
- summary: one cell of the histogram, and the sum and sum of squares of y = (x - c) / h, the
  value moved into the bins' range [e_0, e_m] and scaled to [-1, 1] (c its middle, h its
  half-width): L2 = sqrt 3 in real units (on the grid as below); the orchestrator takes the
  sums back to x (the mean and standard deviation are those of the values moved into range);
- Kaplan-Meier: the bin the patient leaves the risk set in and the event there (L1 = 2,
  L2 = sqrt 2; the sites send the patients leaving each bin, not those at risk, which would
  change every bin up to it);
- logistic regression, one Newton round: ``n``, ``events``, and the gradient and Hessian in
  scaled columns z' = A z (:func:`scaling`), each within [-1, 1] once a numeric covariate is
  moved into its range, so the gradient changes by at most sqrt(p) and the Hessian by p / 4
  (Frobenius): L2 = sqrt(2 + p + p^2 / 16) in real units. Real numbers go on a grid of
  ``L2 / 1024`` or finer (a power of two), and rounding two neighbouring sums can move each
  number by one step more, so the L2 sensitivity in steps is L2 / unit + sqrt(d) for d numbers,
  and L1 at most sqrt(d) times it.

The orchestrator turns the noisy sums back (post-processing, which costs nothing): counts
rounded and cut at zero; the regression's derivatives taken back to the model's columns,
g = A^-1 g' and H = A^-1 H' A^-T, after minus the scaled Hessian is made positive definite
(eigenvalues raised to a floor of about the noise's own size, :data:`FLOOR`); a categorical
level whose information in the first round is within two noise deviations of none fails the
analysis (:func:`uninformed`). The loop runs
exactly ``newton_rounds`` rounds; the last step's coefficients are reported, with a covariance
that adds the noise's own, (-H)^-1 Sigma_g (-H)^-1 for the gradient noise Sigma_g (the
Hessian's noise is not in it: at small epsilons the intervals are too narrow, see
``docs/privacy.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oncofed.analytics.design import Design
from oncofed.analytics.logistic import logistic_derivatives
from oncofed.analytics.summary import summary_cells
from oncofed.privacy import accounting
from oncofed.privacy.noise import skellam_share
from oncofed.privacy.secagg.layout import SITES
from oncofed.wire.analysis import (
    AnalysisSpec,
    CountsAnalysis,
    KaplanMeierAnalysis,
    LogisticAnalysis,
    SummaryAnalysis,
    covariate_ranges,
)
from oncofed.wire.spec import JobSpec

STEPS_PER_SENSITIVITY = 1024
"""Real numbers are sent on a grid at least this much finer than their L2 sensitivity."""
FLOOR = 0.5
"""Minus the noisy Hessian's eigenvalues are raised to at least this times sqrt(p v) for noise
variance v: higher floors shrink the steps (five rounds no longer reach the estimate), lower
ones let noise make steps without bound. Of 0.1, 0.3, 0.5, 1 and 2, tried on the demo's four
GBSG2 hospitals at epsilon 1 to 4, 0.5 gave the least bias and the most honest intervals."""


@dataclass(frozen=True)
class Mechanism:
    """How a differentially private analysis's contributions are noised: numbers on a grid of
    ``unit``; sensitivities ``l1`` and ``l2`` of one contribution in grid steps; ``rounds``
    contributions per job."""

    unit: float
    l1: float
    l2: float
    rounds: int

    def variance(self, epsilon: float, delta: float) -> float:
        """The noise variance (grid steps squared, in the sum over sites) whose ``rounds``
        releases cost ``epsilon`` at ``delta``."""
        return accounting.calibrate_skellam(epsilon, delta, self.l1, self.l2, self.rounds)

    def round_rdp(self, variance: float) -> np.ndarray:
        """The cost of one round with noise of ``variance``."""
        return accounting.skellam_rdp(variance, self.l1, self.l2)


def private_analysis(spec: JobSpec | AnalysisSpec) -> bool:
    """A differentially private analysis, which releases no exact number: each release is
    charged to the site's budget instead (a training job's statistics and metrics are exact)."""
    return isinstance(spec, AnalysisSpec) and spec.privacy.differential_privacy is not None


def mechanism(spec: AnalysisSpec) -> Mechanism:
    """The mechanism of a differentially private analysis (see the module docstring);
    ``ValueError`` for one without differential privacy or without a mechanism."""
    a, dp = spec.analysis, spec.privacy.differential_privacy
    if dp is None:
        raise ValueError("the analysis is not differentially private")
    if isinstance(a, CountsAnalysis):
        return Mechanism(1.0, 1.0, 1.0, 1)
    if isinstance(a, KaplanMeierAnalysis):
        return Mechanism(1.0, 2.0, math.sqrt(2.0), 1)
    if isinstance(a, SummaryAnalysis):
        return _on_grid(math.sqrt(3.0), len(a.bins) + 4, 1)
    if isinstance(a, LogisticAnalysis):
        p = len(scaling(a, spec)[0])
        return _on_grid(math.sqrt(2 + p + p * p / 16), 2 + p + p * p, dp.newton_rounds)
    raise ValueError(f"a {a.type} analysis cannot be differentially private in this version")


def _on_grid(l2: float, numbers: int, rounds: int) -> Mechanism:
    """A mechanism for ``numbers`` reals of L2 sensitivity ``l2``, on a grid at least
    :data:`STEPS_PER_SENSITIVITY` times finer, with a step per number for rounding."""
    unit = 2.0 ** math.floor(math.log2(l2 / STEPS_PER_SENSITIVITY))
    steps = l2 / unit + math.sqrt(numbers)
    return Mechanism(unit, math.sqrt(numbers) * steps, steps, rounds)


def summary_values(analysis: SummaryAnalysis, values: np.ndarray) -> dict[str, np.ndarray]:
    """A site's exact contribution to a private summary: the histogram of its ``values`` (NaN
    when missing) and the sums of y and y squared (see the module docstring)."""
    centre, half = _centre(analysis)
    complete = values[np.isfinite(values)]
    y = (np.clip(complete, analysis.bins[0], analysis.bins[-1]) - centre) / half
    return {
        "histogram": summary_cells(analysis, values),
        "scaled_total": np.array(y.sum()),
        "scaled_squares": np.array((y**2).sum()),
    }


def summary_sums(
    analysis: SummaryAnalysis, n: int, scaled_total: float, scaled_squares: float
) -> tuple[float, float]:
    """The sum and sum of squares of ``n`` values from their noisy scaled sums, first held to
    what ``n`` values within [-1, 1] can reach (post-processing): the mean within the bins'
    range, the standard deviation within half its width."""
    centre, half = _centre(analysis)
    scaled_total = min(max(scaled_total, -float(n)), float(n))
    least = scaled_total**2 / n if n else 0.0
    scaled_squares = min(max(scaled_squares, least), float(n))
    total = half * scaled_total + centre * n
    squares = half**2 * scaled_squares + 2 * centre * half * scaled_total + centre**2 * n
    return total, squares


def _centre(analysis: SummaryAnalysis) -> tuple[float, float]:
    low, high = analysis.bins[0], analysis.bins[-1]
    return (low + high) / 2, (high - low) / 2


def scaling(analysis: LogisticAnalysis, spec: AnalysisSpec) -> tuple[np.ndarray, np.ndarray]:
    """The range of every design column (intercept 1, a level's indicator 0 to 1, a numeric
    covariate its range, ``covariate_ranges``) as a (p, 2) array, and the matrix A taking a
    design row z to z' = A z with every entry within [-1, 1]: a numeric column is centred on its
    range's middle and divided by its half-width."""
    dp = spec.privacy.differential_privacy
    assert dp is not None
    numeric = covariate_ranges(analysis, dp)
    dummies = sum(f.width for f in analysis.covariates if f.levels is not None)
    ranges = np.array([(1.0, 1.0), *numeric, *[(0.0, 1.0)] * dummies])
    p = len(ranges)
    a = np.eye(p)
    for column, (low, high) in enumerate(numeric, start=1):
        half = (high - low) / 2
        a[column, column], a[column, 0] = 1 / half, -(low + half) / half
    return ranges, a


def declared_ranges(spec: JobSpec | AnalysisSpec) -> np.ndarray | None:
    """A differentially private logistic analysis's range of every design column (``scaling``),
    against which alone a site bounds its coefficients; None for any other job."""
    if isinstance(spec, AnalysisSpec) and isinstance(spec.analysis, LogisticAnalysis):
        return scaling(spec.analysis, spec)[0] if private_analysis(spec) else None
    return None


def stated_noise(spec: AnalysisSpec, shares: Sequence[float | None]) -> float:
    """The noise variance of each number of a sum from what its sites state of their shares,
    each held to at most the whole calibrated variance (what a site adds when it has not pinned
    its peers, ``EdgePolicy.noise_split``): a site cannot widen the report's intervals at will.
    0 for an exact analysis."""
    dp = spec.privacy.differential_privacy
    if dp is None:
        return 0.0
    rule = mechanism(spec)
    most = rule.variance(dp.epsilon, dp.delta) * rule.unit**2
    return sum(min(share or 0.0, most) for share in shares)


def regression_values(
    analysis: LogisticAnalysis, spec: AnalysisSpec, data: Design, beta: np.ndarray
) -> dict[str, np.ndarray]:
    """A site's exact contribution to a private logistic round: its patients and events, and
    the gradient and Hessian at ``beta`` over its rows moved into the covariates' ranges, in
    scaled columns."""
    ranges, a = scaling(analysis, spec)
    x = np.clip(data.x, ranges[:, 0], ranges[:, 1])
    at = logistic_derivatives(x, data.label, beta)
    gradient, hessian = np.asarray(at.gradient), np.asarray(at.hessian)
    return {
        "n": np.array(float(len(data))),
        "events": np.array(float(data.label.sum())),
        "gradient": a @ gradient,
        "hessian": a @ hessian @ a.T,
    }


def add_noise(
    values: dict[str, np.ndarray],
    rule: Mechanism,
    variance: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``values`` on ``rule``'s grid with a Skellam share of ``variance`` (grid steps squared)
    added to every number but ``sites``, as float64 multiples of the grid."""
    noisy = {}
    for name, value in values.items():
        if name == SITES:
            noisy[name] = value
            continue
        steps = np.rint(np.asarray(value, dtype=np.float64) / rule.unit)
        noisy[name] = (steps + skellam_share(rng, variance, steps.shape)) * rule.unit
    return noisy


def uninformed(analysis: LogisticAnalysis, hessian: np.ndarray, noise: float) -> list[int]:
    """The categorical levels whose information in the first round (minus the scaled Hessian's
    diagonal at coefficients 0: a quarter of the level's patients) is below twice the noise's
    standard deviation: an empty or rare level, which the noise would estimate in its place (an
    empty one passes with probability 2.3%)."""
    dummies = sum(f.width for f in analysis.covariates if f.levels is not None)
    levels = range(len(hessian) - dummies, len(hessian))
    return [i for i in levels if -hessian[i, i] < 2.0 * math.sqrt(noise)]


def private_derivatives(
    analysis: LogisticAnalysis,
    spec: AnalysisSpec,
    gradient: np.ndarray,
    hessian: np.ndarray,
    noise: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pooled gradient and Hessian in the model's columns from their noisy sums in scaled
    columns (minus the Hessian made positive definite), and the covariance the gradient's noise
    adds to the last step's coefficients; ``noise``: the noise variance of each number of the
    sum, in real units."""
    _, a = scaling(analysis, spec)
    p = len(a)
    symmetric = -(hessian + hessian.T) / 2
    values, vectors = np.linalg.eigh(symmetric)
    floor = max(FLOOR * math.sqrt(noise * p), 1e-9 * max(float(values[-1]), 1.0))
    information = (vectors * np.maximum(values, floor)) @ vectors.T
    back = np.linalg.inv(a)
    pooled_hessian = -(back @ information @ back.T)
    inverse = np.linalg.inv(-pooled_hessian)
    added = noise * inverse @ back @ back.T @ inverse
    return back @ gradient, pooled_hessian, added
