"""The coefficients a Newton round sends (the pooled fit's, and in a plain round this site's
own), against bounds this site can defend: zeros in round 0; no coefficient whose effect across
one standard deviation of its covariate here exceeds ``max_coefficient_effect``; for logistic
regression a linear predictor at this site's mean patient within twice that; and each move from
the previous round's coefficients of the same fit bounded the same way by ``max_newton_step``.

Under differential privacy the coefficients are checked against the declared ranges, never
this site's rows: their form (one per term, zeros in round 0, every round after the one
before), and a linear predictor within ``MAX_PREDICTOR`` everywhere in the box of the ranges
(beyond it a site's sums are no longer finite numbers). The noise is calibrated to what one
patient can change whatever the coefficients (every covariate is moved into its declared
range), and a refusal read off this site's spread would tell something exact of its rows,
uncharged.

A secure round carries no coefficients of this site's own: the site fits its own model itself
(``analytics.site.own_fit``) and computes nothing at coefficients chosen for it alone. Own
coefficients in a secure round are refused.

The intercept has no spread (its effect is 0): it is bounded through the linear predictor at the
mean. A Cox model has no intercept and its linear predictor's level cancels from the partial
likelihood, so only the per-coefficient effects are bounded.

A secure unstratified Cox round sums every patient's exp(x'b - c) with a public offset c, in
fixed point: a c far from this site's linear predictors would leave all but the patients with
the highest x'b below the encoding's resolution, and their sums would describe those patients
alone. Every patient's term must lie within e^-40 and e^40 here (``OFFSET_RANGE``); no other
round carries an offset."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from oncofed.analytics.design import Design
from oncofed.edge.config import EdgePolicy
from oncofed.edge.errors import PolicyViolation
from oncofed.wire.analysis import AnalysisParams


def params_sha256(pooled: Sequence[float]) -> str:
    """SHA-256 of the pooled coefficients as little-endian float64: what every site of the
    round can compare."""
    return hashlib.sha256(np.asarray(pooled, dtype="<f8").tobytes()).hexdigest()


MAX_PREDICTOR = 1e6
"""Under differential privacy, the largest linear predictor a round's coefficients may give
anywhere in the declared ranges: far beyond any fit (probabilities are 0 or 1 from about 40),
and far below where a site's log-likelihood and derivatives overflow."""

OFFSET_RANGE = 40.0
"""How far from the offset a patient's linear predictor may be in a secure unstratified Cox
round: its term exp(x'b - c) stays within e^-40 (4e-18, far above the encoding's 1e-29)."""


def check_params(
    policy: EdgePolicy,
    round_number: int,
    params: AnalysisParams,
    previous: AnalysisParams | None,
    data: Design,
    *,
    secure: bool = False,
    risk_sets: bool = False,
    ranges: np.ndarray | None = None,
) -> None:
    """PolicyViolation naming the fit, term and policy limit the coefficients break (see the
    module docstring); ``previous`` is this site's last round's, None in round 0; ``secure``:
    a secure round, which carries no own coefficients; ``risk_sets``: a secure unstratified Cox
    round, whose offset is checked; ``ranges``: a differentially private round's declared range
    of each design column, (p, 2), against which alone its coefficients are bounded."""
    width = len(data.names)
    if secure and params.own:
        raise PolicyViolation(
            "a secure round carries no coefficients of this site's own (it fits its own model "
            "itself)"
        )
    if len(params.pooled) != width or len(params.own) != (0 if secure else width):
        raise PolicyViolation(f"the coefficients must be one per term ({width} terms)")
    if risk_sets:
        eta = data.x @ np.asarray(params.pooled) - params.offset
        if not np.all(np.abs(eta) <= OFFSET_RANGE):  # an overflow's NaN is refused too
            raise PolicyViolation(
                "the offset of the risk-set sums is too far from this site's linear predictors "
                "for every patient's term to be encoded"
            )
    elif params.offset:
        raise PolicyViolation("only a secure unstratified Cox round carries an offset")
    if round_number == 0:
        if any(params.pooled) or any(params.own):
            raise PolicyViolation("a Newton loop starts from coefficients 0")
        return
    if previous is None:
        raise PolicyViolation(
            f"Newton round {round_number} comes without the earlier rounds at this site"
        )
    if ranges is not None:
        with np.errstate(over="ignore"):  # an overflow is refused just below
            widest = np.abs(ranges).max(axis=1) @ np.abs(np.asarray(params.pooled))
        if not widest <= MAX_PREDICTOR:  # an overflow's inf or NaN is refused too
            raise PolicyViolation(
                f"the pooled coefficients put the linear predictor beyond {MAX_PREDICTOR:g} "
                "within the declared ranges"
            )
        return
    spread = data.x.std(axis=0)
    mean = data.x.mean(axis=0)
    at_mean = "intercept" in data.names  # a logistic model: bound its level too
    fits = [("pooled", params.pooled, previous.pooled)]
    if not secure:
        fits.append(("own", params.own, previous.own))
    for fit, now, before in fits:
        beta = np.asarray(now)
        move = beta - np.asarray(before)
        for what, value, limit, name in (
            ("coefficient", beta, policy.max_coefficient_effect, "max_coefficient_effect"),
            ("move", move, policy.max_newton_step, "max_newton_step"),
        ):
            effects = np.abs(value) * spread
            worst = int(np.argmax(effects))
            if effects[worst] > limit:
                raise PolicyViolation(
                    f"the {fit} {what} of {data.names[worst]!r} changes the linear predictor "
                    f"by more than policy {name} ({limit:g}) across one standard deviation here"
                )
            if at_mean and abs(float(mean @ value)) > 2 * limit:
                raise PolicyViolation(
                    f"the {fit} {what} puts the linear predictor at this site's mean patient "
                    f"beyond twice policy {name} ({2 * limit:g})"
                )
