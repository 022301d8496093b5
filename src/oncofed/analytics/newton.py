"""The orchestrator's federated Newton-Raphson loop, kept as plain data (JSON) between rounds.

Each plain round the orchestrator sends every site the pooled coefficients and the site's own
(:meth:`NewtonState.params`); each site answers with the derivatives of its log-likelihood at
both. :func:`newton_step` takes the pooled derivatives (stratified Cox and logistic: the sum of
the sites' shares; unstratified Cox: :func:`oncofed.analytics.cox.breslow_from_sums`) and each
site's own, and moves every fit by one round. The pooled fit gives the report; each site's own
fit (its rows alone) gives the per-site estimates and the heterogeneity check.

Under secure aggregation the orchestrator runs the pooled fit only: derivatives of one site at
coefficients the orchestrator chose, sent in the clear, would be that site's summand (at 0 in
the first round), and the pooled sum less the summands of the others would give away a site
that keeps its own. A site instead runs the same fit on its own rows to its end
(:func:`fit_alone`) and sends the result once (``NewtonState.local``).

One fit, from coefficients 0:

- Newton step delta = (-H)^-1 g from the last accepted coefficients (the anchor), evaluated
  next round. When the log-likelihood there is below the anchor's, the step is halved instead.
- Converged when max |delta| < tolerance: the coefficients are anchor + delta, with standard
  errors from the Hessian at the anchor (as lifelines and statsmodels do). Also converged, at
  the anchor, when halving brings the step below the tolerance.
- Separation: a coefficient's information (minus the Hessian's diagonal entry) has fallen below
  1e-6 of its value at the first round while the gradient still pushes it away from 0: the
  outcome is (almost) perfectly predicted by that covariate and its estimate grows without bound.
- Singular Hessian: minus the Hessian scaled to unit diagonal has an eigenvalue below 1e-10 (or
  a zero diagonal): a covariate is constant (for the stratified Cox model: within every site) or
  collinear with others, or a level is empty. The message names the covariates involved.
- Every round counts as an iteration, halvings included; a fit still moving after
  ``max_iterations`` rounds fails.

A failed pooled fit ends the analysis with a :class:`NewtonFailure`; a failed site fit only
leaves that site out of the per-site estimates and the heterogeneity check.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.stats import chi2, norm

from oncofed.analytics.cox import breslow_from_sums
from oncofed.wire.analysis import (
    AnalysisParams,
    CoxAnalysis,
    Derivatives,
    Heterogeneity,
    OwnEstimate,
    Regression,
    RegressionPart,
    RegressionReport,
    RiskSetPart,
    Term,
)

Part = RegressionPart | RiskSetPart

_SEPARATION = 1e-6  # information left, relative to the first round's
_SINGULAR = 1e-10  # smallest eigenvalue of minus the Hessian scaled to unit diagonal
_NOISE = 1e-12  # log-likelihood drop (relative) taken as rounding, not as a worse point


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Fit(_Plain):
    """One Newton fit (pooled, or one site's own) between rounds."""

    beta: list[float]
    """Where the next derivatives are evaluated; the estimate once converged."""
    anchor: list[float] | None = None
    """The last accepted coefficients."""
    loglik: float | None = None
    hessian: list[list[float]] | None = None
    """At the anchor."""
    information: list[float] | None = None
    """Minus the Hessian's diagonal at the first round (for the separation check)."""
    iterations: int = 0
    halvings: int = 0
    status: Literal["running", "converged", "failed"] = "running"
    message: str | None = None


SENT_NONE = OwnEstimate(withheld="it sent none")
"""A site's own estimate under secure aggregation until it sends one."""


class NewtonState(_Plain):
    """The pooled fit with the model's term names; the sites of the loop with their own fits
    (plain rounds) or the estimates of their own they sent (secure aggregation); and the offset
    of the unstratified Cox model's risk-set sums under secure aggregation (0 otherwise)."""

    names: list[str]
    pooled: Fit
    own: dict[str, Fit]
    """Plain rounds: each site's own fit, moved beside the pooled one. Empty under secure
    aggregation."""
    local: dict[str, OwnEstimate] | None = None
    """Secure aggregation: each site of the loop with the fit of its own rows it sent beside
    the first round, or why it has none (``SENT_NONE`` until then). None in plain rounds."""
    offset: float = 0.0

    @classmethod
    def start(cls, names: Sequence[str], sites: Iterable[str], secure: bool = False) -> NewtonState:
        """Every fit at coefficients 0; under secure aggregation the pooled fit alone."""
        zero = Fit(beta=[0.0] * len(names))
        if secure:
            return cls(
                names=list(names), pooled=zero, own={}, local=dict.fromkeys(sites, SENT_NONE)
            )
        return cls(names=list(names), pooled=zero, own=dict.fromkeys(sites, zero))

    @property
    def sites(self) -> list[str]:
        """The sites of the loop."""
        return list(self.own if self.local is None else self.local)

    def params(self, site: str) -> AnalysisParams:
        """What the next round sends ``site`` (no coefficients of its own under secure
        aggregation)."""
        own = self.own[site].beta if self.local is None else []
        return AnalysisParams(pooled=self.pooled.beta, own=own, offset=self.offset)

    def only(self, sites: Collection[str]) -> NewtonState:
        """The state with the sites of the loop not in ``sites`` left out."""
        own = {site: fit for site, fit in self.own.items() if site in sites}
        local = None if self.local is None else {s: e for s, e in self.local.items() if s in sites}
        return self.model_copy(update={"own": own, "local": local})

    @property
    def done(self) -> bool:
        """The pooled fit converged and every site's own fit converged or failed."""
        running = any(fit.status == "running" for fit in self.own.values())
        return self.pooled.status == "converged" and not running

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> NewtonState:
        return cls.model_validate_json(text)


class NewtonFailure(_Plain):
    """Why the pooled fit has no answer, in plain words."""

    message: str
    iterations: int


def _listed(names: Sequence[str], where: Iterable[int]) -> str:
    return ", ".join(names[int(i)] for i in where)


def _separated(
    beta: np.ndarray, gradient: np.ndarray, information: np.ndarray, first: np.ndarray
) -> np.ndarray:
    """Coefficients whose information has collapsed while the gradient pushes them outwards."""
    collapsed = information < _SEPARATION * first
    outwards = (beta != 0) & (gradient * beta >= 0)
    return np.flatnonzero(collapsed & outwards)


def _singular(hessian: np.ndarray) -> np.ndarray:
    """The covariates involved when minus the Hessian is (numerically) singular, else none."""
    scale = np.sqrt(np.clip(-np.diag(hessian), 0.0, None))
    if np.any(scale == 0):
        return np.flatnonzero(scale == 0)
    values, vectors = np.linalg.eigh(-hessian / np.outer(scale, scale))
    if values[0] >= _SINGULAR:
        return np.empty(0, dtype=np.int64)
    weight = np.abs(vectors[:, 0])
    return np.flatnonzero(weight >= 0.1 * weight.max())


def _halve(fit: Fit, names: Sequence[str], tolerance: float, max_iterations: int) -> Fit:
    """The next round of a fit whose last step lowered the log-likelihood: half that step."""
    assert fit.anchor is not None  # set with the log-likelihood
    anchor = np.asarray(fit.anchor)
    step = (np.asarray(fit.beta) - anchor) / 2
    update = {"iterations": fit.iterations + 1, "halvings": fit.halvings + 1}
    if np.max(np.abs(step)) < tolerance:
        return fit.model_copy(update=update | {"beta": fit.anchor, "status": "converged"})
    halved = fit.model_copy(update=update | {"beta": (anchor + step).tolist()})
    return _limit(halved, step, names, max_iterations)


def _advance(
    fit: Fit, at: Derivatives, names: Sequence[str], tolerance: float, max_iterations: int
) -> Fit:
    """One round of one fit, given the derivatives at ``fit.beta``."""
    if fit.status != "running":
        return fit
    if fit.loglik is not None and at.loglik < fit.loglik - _NOISE * max(1.0, abs(fit.loglik)):
        return _halve(fit, names, tolerance, max_iterations)
    beta = np.asarray(fit.beta)
    iterations = fit.iterations + 1
    gradient, hessian = np.asarray(at.gradient), np.asarray(at.hessian)
    first = np.asarray(fit.information) if fit.information is not None else -np.diag(hessian)
    update: dict[str, object] = {"iterations": iterations, "information": first.tolist()}
    separated = _separated(beta, gradient, -np.diag(hessian), first)
    if separated.size:
        return fit.model_copy(
            update=update
            | {
                "status": "failed",
                "message": "separation: the outcome is (almost) perfectly predicted by "
                f"{_listed(names, separated)}, whose coefficient grows without bound; "
                "drop the covariate or merge the level",
            }
        )
    singular = _singular(hessian)
    if singular.size:
        return fit.model_copy(
            update=update
            | {
                "status": "failed",
                "message": "singular Hessian: a covariate is constant or collinear, or a level is "
                f"empty ({_listed(names, singular)})",
            }
        )
    delta = np.linalg.solve(-hessian, gradient)
    accepted = fit.model_copy(
        update=update
        | {
            "beta": (beta + delta).tolist(),
            "anchor": fit.beta,
            "loglik": at.loglik,
            "hessian": at.hessian,
        }
    )
    if np.max(np.abs(delta), initial=0.0) < tolerance:
        return accepted.model_copy(update={"status": "converged"})
    return _limit(accepted, delta, names, max_iterations)


def _limit(fit: Fit, step: np.ndarray, names: Sequence[str], max_iterations: int) -> Fit:
    """``fit`` failed when it has used its rounds without converging."""
    if fit.iterations < max_iterations:
        return fit
    largest = int(np.argmax(np.abs(step)))
    return fit.model_copy(
        update={
            "status": "failed",
            "message": f"did not converge in {fit.iterations} iterations (the last step changed "
            f"{names[largest]} by {step[largest]:.3g})",
        }
    )


def pooled_derivatives(parts: Sequence[Part], beta: Sequence[float]) -> Derivatives:
    """The pooled derivatives at ``beta`` (the pooled coefficients sent this round): the sum of
    the sites' shares, or for the unstratified Cox model the Breslow fit of their risk sets."""
    risk_sets = [part for part in parts if isinstance(part, RiskSetPart)]
    if risk_sets:
        return breslow_from_sums(risk_sets, np.asarray(beta, dtype=np.float64))
    shares = [part.pooled for part in parts if isinstance(part, RegressionPart)]
    return Derivatives(
        loglik=sum(share.loglik for share in shares),
        gradient=np.sum([share.gradient for share in shares], axis=0).tolist(),
        hessian=np.sum([share.hessian for share in shares], axis=0).tolist(),
    )


def newton_step(
    state: NewtonState,
    pooled: Derivatives,
    own: Mapping[str, Derivatives],
    tolerance: float,
    max_iterations: int,
) -> NewtonState | NewtonFailure:
    """Move every fit by one round, given the derivatives at the coefficients sent (``own``:
    one entry per site whose own fit is still running)."""
    fit = _advance(state.pooled, pooled, state.names, tolerance, max_iterations)
    if fit.status == "failed":
        return NewtonFailure(message=str(fit.message), iterations=fit.iterations)
    sites = {
        site: _advance(site_fit, own[site], state.names, tolerance, max_iterations)
        if site_fit.status == "running"
        else site_fit
        for site, site_fit in state.own.items()
    }
    return state.model_copy(update={"pooled": fit, "own": sites})


def fit_alone(
    names: Sequence[str],
    at: Callable[[np.ndarray], Derivatives],
    tolerance: float,
    max_iterations: int,
) -> Fit:
    """One fit from coefficients 0 to its end (converged or failed) over derivatives computed in
    place (``at``: a site's own at the given coefficients): the rounds of a site's own fit in a
    plain loop, with the same steps, halvings, diagnoses and iteration limit, without the round
    trips."""
    fit = Fit(beta=[0.0] * len(names))
    while fit.status == "running":
        fit = _advance(fit, at(np.asarray(fit.beta)), names, tolerance, max_iterations)
    return fit


def terms(
    names: Sequence[str],
    beta: Sequence[float],
    hessian: Sequence[Sequence[float]],
    confidence: float,
) -> list[Term]:
    """Each coefficient with its standard error (from the inverse of minus the Hessian), Wald z,
    two-sided p, confidence interval, and the ratio exp(coef) (HR or OR) with its interval."""
    coef = np.asarray(beta, dtype=np.float64)
    se = np.sqrt(np.diag(np.linalg.inv(-np.asarray(hessian, dtype=np.float64))))
    z = coef / se
    p = 2.0 * norm.sf(np.abs(z))
    half = norm.ppf(0.5 + confidence / 2) * se
    return [
        Term(
            name=name,
            coef=c,
            se=s,
            lower=c - h,
            upper=c + h,
            z=zz,
            p=pp,
            ratio=float(np.exp(c)),
            ratio_lower=float(np.exp(c - h)),
            ratio_upper=float(np.exp(c + h)),
        )
        for name, c, s, h, zz, pp in zip(
            names, coef.tolist(), se.tolist(), half.tolist(), z.tolist(), p.tolist(), strict=True
        )
    ]


def heterogeneity(site_terms: Mapping[str, Sequence[Term]]) -> list[Heterogeneity]:
    """Cochran's Q of each coefficient across the sites' own estimates b_s with standard errors
    s_s: Q = sum w_s (b_s - b)^2 with w_s = 1 / s_s^2 and b = sum w_s b_s / sum w_s (the
    fixed-effect estimate), df = sites - 1, p from chi-squared(df), I^2 = max(0, (Q - df) / Q).
    Empty with fewer than two sites."""
    if len(site_terms) < 2:
        return []
    rows = list(site_terms.values())
    coef = np.array([[t.coef for t in row] for row in rows])
    weight = np.array([[t.se for t in row] for row in rows]) ** -2.0
    fixed = (weight * coef).sum(axis=0) / weight.sum(axis=0)
    q = (weight * (coef - fixed) ** 2).sum(axis=0)
    df = len(rows) - 1
    i2 = 1.0 - df / np.maximum(q, df)  # (Q - df) / Q, and 0 when Q <= df
    return [
        Heterogeneity(name=t.name, q=float(qq), df=df, p=float(chi2.sf(qq, df)), i2=float(ii))
        for t, qq, ii in zip(rows[0], q, i2, strict=True)
    ]


def fit_terms(fit: Fit, names: Sequence[str], confidence: float) -> list[Term]:
    """The terms of a converged fit."""
    assert fit.hessian is not None  # a converged fit has accepted a point
    return terms(names, fit.beta, fit.hessian, confidence)


def regression_report(
    analysis: Regression, state: NewtonState, parts: Iterable[Part]
) -> RegressionReport:
    """The report of a finished loop (``state.done``, :func:`newton_report`) with the patients
    and events (label 1 for logistic) of the sites' last ``parts``."""
    listed = list(parts)
    events = sum(
        part.events if isinstance(part, RegressionPart) else sum(part.events) for part in listed
    )
    return newton_report(analysis, state, sum(part.n for part in listed), events)


def _site_estimates(
    state: NewtonState, confidence: float
) -> tuple[dict[str, list[Term]], dict[str, str]]:
    """Each site's own terms, and why the others have none: from the own fits the loop ran
    (plain), or from what the sites sent of the fits they ran (secure aggregation)."""
    if state.local is None:
        sites = {
            site: fit_terms(fit, state.names, confidence)
            for site, fit in state.own.items()
            if fit.status == "converged"
        }
        failed = {
            site: f"its own fit failed: {fit.message}"
            for site, fit in state.own.items()
            if fit.status == "failed"
        }
        return sites, failed
    sites, without = {}, {}
    for site, sent in state.local.items():
        if sent.terms is not None:
            sites[site] = sent.terms
        elif sent.failed is not None:
            without[site] = f"its own fit failed: {sent.failed}"
        else:
            without[site] = f"no estimates of its own: {sent.withheld}"
    return sites, without


def newton_report(
    analysis: Regression, state: NewtonState, n: int, events: int
) -> RegressionReport:
    """The report of a finished loop (``state.done``) over ``n`` patients with ``events``: the
    pooled terms, each site's own terms and the heterogeneity of the coefficients across them;
    the sites in the pooled fit without terms of their own are ``pooled_only``, with why (no
    log-likelihood under differential privacy)."""
    sites, without = _site_estimates(state, analysis.confidence)
    return RegressionReport(
        model=analysis.type,
        stratified=isinstance(analysis, CoxAnalysis) and analysis.stratified,
        ratio_name="HR" if analysis.type == "cox" else "OR",
        confidence=analysis.confidence,
        n=n,
        events=events,
        loglik=state.pooled.loglik,
        iterations=state.pooled.iterations,
        terms=fit_terms(state.pooled, state.names, analysis.confidence),
        sites=sites,
        pooled_only=without,
        heterogeneity=heterogeneity(sites),
    )
