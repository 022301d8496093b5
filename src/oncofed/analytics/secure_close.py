"""The orchestrator's side of a securely aggregated analysis round: from the sum over the sites
of their contributions (:mod:`oncofed.analytics.secure`) to the report, the next Newton round
or a failure, with disclosure control applied to the pooled numbers.

Each analysis applies to the pooled counts the rules a site applies to its own in a plain
round, with the same code, so the result equals the plain analysis of the pooled rows as if
one site held them all:

- counts: the pooled table with its margins, primary and complementary suppression
  (:func:`oncofed.analytics.counts.published_table`);
- summary: the pooled histogram, count and sums suppressed together
  (:func:`oncofed.analytics.summary.published_summary`);
- Kaplan-Meier: each group's pooled counts carried and stopped, and the pooled group sizes
  suppressed (:func:`oncofed.analytics.survival.published_groups`), then the curves and the
  log-rank test;
- regressions: the pooled groups the spec knows of (categorical levels, flags) checked as a
  site checks its own (:func:`oncofed.analytics.design.small_cells`): a count from 1 to
  T - 1 fails the analysis, naming the term; else the Newton step on the pooled derivatives
  (stratified Cox and logistic: the sums; unstratified Cox: the Breslow likelihood of the
  pooled risk-set sums, :func:`oncofed.analytics.cox.breslow`).

The orchestrator itself sees the pooled sums, the first round's pooled groups among them (a
Hessian at 0 holds them): the pooled checks keep small pooled groups out of the report, not
out of the orchestrator's hands.

A Newton loop needs the same sites in every round: the sums of two rounds over sites that
differ by one would tell that site's numbers. A site that is not in the first round's sum takes
no part; one that leaves later, or joins, fails the analysis. The loop runs the pooled fit only:
per-site estimates come from the fits the sites ran on their own rows and sent in the clear
beside the first round (:func:`oncofed.analytics.site.own_fit`), never from derivatives of one
site; the sites that sent none are in the pooled fit only (``pooled_only``), with why.

Under differential privacy the sums are noisy (:mod:`oncofed.analytics.private`): counts are
rounded and cut at zero before the rules above; the logistic loop runs ``_private_newton``.

The unstratified model's sites sum exp(x'b - c) with a public offset c (``AnalysisParams.
offset``), so that the fixed-point sums stay near 1 whatever the scale of the covariates: c is
the previous round's log of the mean pooled exp(x'b), log(S0_0 / n) + c_previous (0 in the first
round), and the log-likelihood is corrected by c times the events.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pydantic import ValidationError

from oncofed.analytics.counts import counts_report, published_table
from oncofed.analytics.cox import RiskSets, breslow
from oncofed.analytics.design import Cells, known_groups, small_cells, small_outcome
from oncofed.analytics.newton import (
    SENT_NONE,
    NewtonFailure,
    NewtonState,
    newton_report,
    newton_step,
)
from oncofed.analytics.outcome import Failed, Finished, NextRound, Outcome
from oncofed.analytics.private import private_derivatives, summary_sums, uninformed
from oncofed.analytics.secure import secure_layout, unpack
from oncofed.analytics.summary import published_summary, summary_of
from oncofed.analytics.survival import GroupCounts, pooled_survival, published_groups
from oncofed.privacy.secagg.layout import SITES
from oncofed.wire.analysis import (
    AnalysisReport,
    AnalysisSpec,
    CountsAnalysis,
    CoxAnalysis,
    Derivatives,
    KaplanMeierAnalysis,
    LogisticAnalysis,
    Noise,
    OwnEstimate,
    Regression,
    SummaryAnalysis,
    SummaryReport,
)

Sums = Mapping[str, np.ndarray]
PRIVATE_OWN = OwnEstimate(withheld="differential privacy: a site's own estimates would be exact")
_LARGEST_COEFFICIENT = 1e6
WHERE = "over all sites"
_COUNT_LIMIT = 1 << 62  # far above any count of patients, well inside int64


def _read(spec: AnalysisSpec, sums: Sums, sites: int) -> dict[str, np.ndarray]:
    """The decoded sums by segment, checked against the spec's layout: counts as int64 (whole
    and not negative), reals as finite float64. ValueError saying what does not fit."""
    layout = secure_layout(spec)
    if set(sums) != set(layout):
        raise ValueError(f"segments {sorted(sums)} are not the layout's {sorted(layout)}")
    read = {}
    for name, segment in layout.items():
        value = np.asarray(sums[name])
        if value.shape != segment.shape:
            raise ValueError(f"segment {name!r} has shape {value.shape}, not {segment.shape}")
        if segment.fraction_bits == 0:
            numbers = value.ravel().tolist()
            if not all(type(v) is int and 0 <= v < _COUNT_LIMIT for v in numbers):
                raise ValueError(f"segment {name!r} holds a value that is not a count")
            read[name] = np.array(numbers, dtype=np.int64).reshape(segment.shape)
        else:
            read[name] = value.astype(np.float64)
            if not np.isfinite(read[name]).all():
                raise ValueError(f"segment {name!r} holds a value that is not finite")
    if int(read[SITES]) != sites:
        raise ValueError(f"the sum holds {int(read[SITES])} sites, not the {sites} listed")
    return read


def secure_close(
    spec: AnalysisSpec,
    state: NewtonState | None,
    sums: Sums,
    own: Mapping[str, OwnEstimate],
    sites: Sequence[str],
    threshold: int,
    *,
    noise: float = 0.0,
) -> Outcome:
    """Turn a closed secure round into the next step (see the module docstring).

    ``sums``: the decoded sum of the contributions of the ``sites`` in it, by segment of
    :func:`oncofed.analytics.secure.secure_layout`; ``state``: the Newton state the round was
    sent with (None for one-round analyses); ``own``: what each site sent in the clear of its
    own fit (taken from the first round of a Newton loop only; a site not in it sent nothing);
    ``threshold``: the smallest count the pooled result may show, as a site's
    ``small_cell_threshold``; ``noise``: under differential privacy, the variance of the noise
    in each number of the sum (the sites' shares, as they state them)."""
    a = spec.analysis
    names = sorted(sites)
    dp = spec.privacy.differential_privacy
    noted = None if dp is None else Noise(epsilon=dp.epsilon, delta=dp.delta, sd=noise**0.5)
    try:
        pooled = _read(spec, sums, len(names))
        if dp is not None:
            counted = _COUNTED.get(a.type) or [name for name in pooled if name != SITES]
            pooled |= _denoised(pooled, counted)
        if isinstance(a, CountsAnalysis | SummaryAnalysis | KaplanMeierAnalysis):
            report = _one_round(a, pooled, threshold)
            return Finished(report.model_copy(update={"secure_sites": names, "noise": noted}))
    except ValueError as exc:  # malformed, or a site's contribution does not fit the others
        return Failed(f"the secure sum cannot be used: {exc}")
    assert state is not None  # started with the job
    if isinstance(a, LogisticAnalysis) and dp is not None and noted is not None:
        return _private_newton(spec, a, state, pooled, names, noted)
    return _newton(a, state, pooled, own, names, threshold)


_COUNTED = {"logistic": ("n", "events"), "summary": ("histogram",)}
"""The noisy segments of a private regression that are counts (every one, elsewhere)."""


def _denoised(sums: Sums, counted: Iterable[str]) -> dict[str, np.ndarray]:
    """The noisy ``counted`` segments (whole numbers, read as reals) rounded and cut at zero:
    post-processing, which costs no privacy. ValueError for a sum no count can reach."""
    denoised = {}
    for name in counted:
        value = sums[name]
        if np.any(np.abs(value) >= _COUNT_LIMIT):
            raise ValueError(f"segment {name!r} holds a value that is not a count")
        denoised[name] = np.clip(np.rint(value), 0, None).astype(np.int64)
    return denoised


def _one_round(
    analysis: CountsAnalysis | SummaryAnalysis | KaplanMeierAnalysis,
    sums: Sums,
    threshold: int,
) -> AnalysisReport:
    """The report of a one-round analysis from its pooled sums, suppressed at ``threshold``."""
    if isinstance(analysis, CountsAnalysis):
        return counts_report(analysis, published_table(sums["table"], threshold), {})
    if isinstance(analysis, SummaryAnalysis):
        noisy = "scaled_total" in sums  # of the values moved into the bins' range
        if noisy:
            n = int(sums["histogram"][:-1].sum())
            scaled = float(sums["scaled_total"]), float(sums["scaled_squares"])
            total, squares = summary_sums(analysis, n, *scaled)
        else:
            total, squares = float(sums["total"]), float(sums["total_squares"])
        part = published_summary(sums["histogram"], total, squares, threshold, noisy)
        return SummaryReport(
            variable=analysis.variable,
            bins=analysis.bins,
            pooled=summary_of(analysis, part),
            sites={},
        )
    if "leaving" in sums:  # noisy: a bin's events cut at the patients leaving it
        leaving = sums["leaving"]
        counts = GroupCounts(np.minimum(sums["events"], leaving), leaving, 0, 0)
    else:
        missing, unusable = int(sums["missing"]), int(sums["unusable"])
        counts = GroupCounts.from_at_risk(sums["at_risk"], sums["events"], missing, unusable)
    if np.any(counts.leaving < counts.events):
        raise ValueError("more events than patients leaving the risk set")
    return pooled_survival(analysis, {"pooled": published_groups(analysis, counts, threshold)})


def _pooled_check(analysis: Regression, sums: Sums, threshold: int) -> str | None:
    """Why the pooled groups the spec knows of may not be released, or None."""
    n, events = int(sums["n"]), int(sums["events"])
    labels = known_groups(analysis)
    if labels:
        cells = Cells(n, events, sums["members"], sums["member_events"], sums["both"])
        if (message := small_cells(cells, labels, threshold, WHERE)) is not None:
            return message
    return small_outcome(n, events, threshold, WHERE)


def _pooled_derivatives(analysis: Regression, state: NewtonState, sums: Sums) -> Derivatives:
    beta = np.asarray(state.pooled.beta)
    if isinstance(analysis, CoxAnalysis) and not analysis.stratified:
        sets = RiskSets(
            events=sums["bin_events"],
            s0=sums["s0"],
            s1=sums["s1"],
            s2=unpack(sums["s2"], len(beta)),
            event_x=sums["event_x"],
        )
        return breslow(sets, beta, state.offset)
    return Derivatives(
        loglik=float(sums["loglik"]),
        gradient=sums["gradient"].tolist(),
        hessian=sums["hessian"].tolist(),
    )


def _offset(state: NewtonState, sums: Sums) -> float:
    """The next round's offset: the log of this round's mean pooled exp(x'b) (module
    docstring)."""
    n, s0 = int(sums["n"]), float(sums["s0"][0])
    return state.offset + math.log(s0 / n) if n > 0 and s0 > 0 else state.offset


def _local(
    analysis: Regression, state: NewtonState, own: Mapping[str, OwnEstimate]
) -> dict[str, OwnEstimate]:
    """What each site of the loop sent of its own fit, checked against the spec (the model's
    terms in order, within its iteration limit), or why it has none."""
    local = {}
    for site in state.sites:
        sent = own.get(site, SENT_NONE)
        if sent.terms is not None and (
            [term.name for term in sent.terms] != state.names
            or (sent.iterations or 0) > analysis.max_iterations
        ):
            sent = OwnEstimate(withheld="its own fit does not fit the spec's terms or iterations")
        local[site] = sent
    return local


def _same_sites(state: NewtonState, sites: list[str]) -> NewtonState | Failed:
    """The loop's state with the sites of this round's sum: a site not in the first round's
    takes no part; one that leaves later, or joins, fails the analysis."""
    left = sorted(set(state.sites) - set(sites))
    joined = sorted(set(sites) - set(state.sites))
    iteration = state.pooled.iterations + 1
    if joined or (left and iteration > 1):
        which, how = (joined, "joined") if joined else (left, "left")
        return Failed(
            f"site(s) {', '.join(which)} {how} the analysis at Newton iteration {iteration}: a "
            "secure analysis needs the same sites in every round, else two sums differing by "
            "one site would reveal it"
        )
    return state.only(sites) if left else state


def _private_newton(
    spec: AnalysisSpec,
    analysis: LogisticAnalysis,
    state: NewtonState,
    sums: Sums,
    sites: list[str],
    noise: Noise,
) -> Outcome:
    """One round of a differentially private logistic loop: a Newton step on the noisy
    derivatives (:mod:`oncofed.analytics.private`); after ``newton_rounds`` rounds the report,
    its covariance widened by the noise of the last step."""
    dp = spec.privacy.differential_privacy
    assert dp is not None
    same = _same_sites(state, sites)
    if isinstance(same, Failed):
        return same
    iteration = same.pooled.iterations + 1
    weak = uninformed(analysis, sums["hessian"], noise.sd**2) if iteration == 1 else []
    if weak:
        return Failed(
            f"too little information on {', '.join(same.names[i] for i in weak)} to estimate "
            "it under the noise (an empty or rare level): drop or merge it, or use a larger "
            "epsilon"
        )
    beta = np.asarray(same.pooled.beta)
    try:
        gradient, hessian, added = private_derivatives(
            analysis, spec, sums["gradient"], sums["hessian"], noise.sd**2
        )
        moved = beta + np.linalg.solve(-hessian, gradient)
        covariance = np.linalg.inv(-hessian) + added
        information = -np.linalg.inv(covariance)
    except np.linalg.LinAlgError:
        moved = np.full_like(beta, np.nan)
    if not np.isfinite(moved).all() or np.abs(moved).max() > _LARGEST_COEFFICIENT:
        return Failed(
            f"the noisy Newton step at iteration {iteration} has no usable coefficients: the "
            "noise is too large for this cohort (a larger epsilon, narrower bounds or fewer "
            "covariates)"
        )
    fit = same.pooled.model_copy(
        update={"beta": moved.tolist(), "anchor": same.pooled.beta, "iterations": iteration}
    )
    if iteration == 1:
        same = same.model_copy(update={"local": dict.fromkeys(same.sites, PRIVATE_OWN)})
    if iteration < dp.newton_rounds:
        return NextRound(same.model_copy(update={"pooled": fit}))
    final = fit.model_copy(update={"hessian": information.tolist(), "status": "converged"})
    done = same.model_copy(update={"pooled": final})
    n, events = int(sums["n"]), int(sums["events"])
    try:
        with np.errstate(over="ignore"):  # an infinite odds ratio is refused just below
            report = newton_report(analysis, done, n, min(events, n))
    except ValueError as exc:  # an odds ratio or interval beyond a float's range
        return Failed(
            f"the noisy fit after {iteration} Newton rounds cannot be reported: "
            f"{_first_error(exc)}; the noise is too large for this cohort (a larger epsilon, "
            "narrower bounds or fewer covariates)"
        )
    return Finished(report.model_copy(update={"secure_sites": sites, "noise": noise}))


def _first_error(exc: ValueError) -> str:
    """The first problem a ValueError (a pydantic ValidationError too) names, in one line."""
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
    return str(exc)


def _newton(
    analysis: Regression,
    state: NewtonState,
    sums: Sums,
    own: Mapping[str, OwnEstimate],
    sites: list[str],
    threshold: int,
) -> Outcome:
    """One Newton round of a secure regression (see the module docstring)."""
    same = _same_sites(state, sites)
    if isinstance(same, Failed):
        return same
    state, iteration = same, same.pooled.iterations + 1
    if (message := _pooled_check(analysis, sums, threshold)) is not None:
        return Failed(f"the pooled result may not be released: {message}")
    if iteration == 1:
        state = state.model_copy(update={"local": _local(analysis, state, own)})
    pooled = _pooled_derivatives(analysis, state, sums)
    step = newton_step(state, pooled, {}, analysis.tolerance, analysis.max_iterations)
    if isinstance(step, NewtonFailure):
        return Failed(f"no convergence after {step.iterations} iterations: {step.message}")
    if isinstance(analysis, CoxAnalysis) and not analysis.stratified:
        step = step.model_copy(update={"offset": _offset(state, sums)})
    if step.done:
        report = newton_report(analysis, step, int(sums["n"]), int(sums["events"]))
        return Finished(report.model_copy(update={"secure_sites": sites}))
    return NextRound(step)
