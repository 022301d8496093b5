"""The orchestrator's side of a federated analysis: what each round sends, and what a closed
round turns into (the report, the next Newton round, or a plain failure).

Counts, summaries and Kaplan-Meier curves take one round. Regressions take one round per Newton
iteration; their state (``analytics.newton.NewtonState``) is stored as JSON with the job, so a
restarted orchestrator resumes the loop where it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from oncofed.analytics.counts import levels, pooled_counts
from oncofed.analytics.design import term_names
from oncofed.analytics.newton import (
    NewtonFailure,
    NewtonState,
    newton_step,
    pooled_derivatives,
    regression_report,
)
from oncofed.analytics.outcome import Failed, Finished, NextRound, Outcome
from oncofed.analytics.private import stated_noise
from oncofed.analytics.secure_close import secure_close
from oncofed.analytics.summary import pooled_summary
from oncofed.analytics.survival import group_names, pooled_survival
from oncofed.orchestrator.limits import check_patients, check_sums
from oncofed.wire.analysis import (
    AnalysisParams,
    AnalysisResult,
    AnalysisSpec,
    CountsAnalysis,
    CountsPart,
    CoxAnalysis,
    Derivatives,
    KaplanMeierAnalysis,
    LogisticAnalysis,
    OwnEstimate,
    RegressionPart,
    RiskSetPart,
    SitePart,
    SummaryAnalysis,
    SummaryPart,
    SurvivalPart,
)
from oncofed.wire.errors import BadAnswer
from oncofed.wire.profile import Cell
from oncofed.wire.secagg import MaskedHeader

P = TypeVar("P", CountsPart, SummaryPart, SurvivalPart)


def start(spec: AnalysisSpec, sites: list[str]) -> NewtonState | None:
    """The Newton state of a regression (every fit at 0; under secure aggregation the pooled
    fit alone); None for one-round analyses."""
    a = spec.analysis
    if isinstance(a, CountsAnalysis | SummaryAnalysis | KaplanMeierAnalysis):
        return None
    return NewtonState.start(term_names(a), sites, secure=spec.privacy.secure_aggregation)


def params_for(state: NewtonState | None, site: str) -> AnalysisParams | None:
    return None if state is None or site not in state.sites else state.params(site)


def expected_part(spec: AnalysisSpec) -> type[SitePart]:
    """The part a site must answer this analysis with (checked when a result arrives)."""
    a = spec.analysis
    if isinstance(a, CountsAnalysis):
        return CountsPart
    if isinstance(a, SummaryAnalysis):
        return SummaryPart
    if isinstance(a, KaplanMeierAnalysis):
        return SurvivalPart
    return RiskSetPart if a.type == "cox" and not a.stratified else RegressionPart


def check_part(spec: AnalysisSpec, result: AnalysisResult, limit: int) -> None:
    """A site's answer that fits the analysis: the part it takes, of its shape, every count
    within the site's cohort and its cohort within ``limit`` (what the site declared, at most
    ``MAX_PATIENTS``); the sums ones its rows can have. BadAnswer otherwise."""
    part, a = result.part, spec.analysis
    expected = expected_part(spec)
    if not isinstance(part, expected):
        raise BadAnswer(f"this analysis takes a {expected.__name__}")
    if result.cohort is not None:
        check_patients(result.cohort, limit, "cohort")
        limit = result.cohort
    if isinstance(part, CountsPart) and isinstance(a, CountsAnalysis):
        width = len(levels(a.columns)) + 1 if a.columns else 1
        if not _shaped(part.cells, (len(levels(a.rows)) + 1, width)):
            raise BadAnswer(f"the table is not of {len(levels(a.rows)) + 1} rows of {width}")
        _counted([c for row in part.cells for c in row], limit, "a count")
    elif isinstance(part, SummaryPart) and isinstance(a, SummaryAnalysis):
        if len(part.histogram) != len(a.bins) + 2:
            raise BadAnswer(
                f"the histogram has {len(part.histogram)} counts, not {len(a.bins) + 2}"
            )
        _counted([part.n, *part.histogram], limit, "a count")
        if isinstance(part.n, int) and part.total is not None and part.total_squares is not None:
            check_sums([part.total], [part.total_squares], part.n)
    elif isinstance(part, SurvivalPart) and isinstance(a, KaplanMeierAnalysis):
        _check_survival(a, part, limit)
    elif isinstance(part, RegressionPart) and isinstance(a, CoxAnalysis | LogisticAnalysis):
        _check_regression(a, part.n, [part.events], [part.pooled, part.own], limit)
    elif isinstance(part, RiskSetPart) and isinstance(a, CoxAnalysis):
        bins, k = len(part.events), len(term_names(a))
        if bins > a.grid_bins:
            raise BadAnswer(f"{bins} risk sets on a grid of {a.grid_bins} bins")
        sums = ((part.s0, (bins,)), (part.s1, (bins, k)), (part.s2, (bins, k, k)))
        if not all(_shaped(v, shape) for v, shape in sums) or len(part.event_x) != k:
            raise BadAnswer(f"the risk-set sums are not of {bins} bins of {k} terms")
        s0, events = np.asarray(part.s0), np.asarray(part.events)
        if np.any(s0 < 0) or np.any((events > 0) & (s0 <= 0)):
            raise BadAnswer("a risk set with events has no positive sum of exp(x'b)")
        _check_regression(a, part.n, part.events, [part.own], limit)


def _shaped(values: Sequence[Any], shape: tuple[int, ...]) -> bool:
    """Whether nested ``values`` have exactly ``shape``."""
    if len(values) != shape[0]:
        return False
    return len(shape) == 1 or all(_shaped(v, shape[1:]) for v in values)


def _counted(cells: Sequence[Cell], limit: int, what: str) -> None:
    if any(isinstance(c, int) and c > limit for c in cells):
        raise BadAnswer(f"{what} is above {limit}, the site's cohort")


def _check_survival(a: KaplanMeierAnalysis, part: SurvivalPart, limit: int) -> None:
    """Known groups on the analysis' grid; at most ``limit`` patients at risk over all groups,
    never more events than patients at risk."""
    if unknown := sorted(set(part.groups) - set(group_names(a))):
        raise BadAnswer(f"unknown groups {unknown}")
    series = part.groups.values()
    if any(len(s.at_risk) > a.grid_bins for s in series):
        raise BadAnswer(f"a series is longer than the {a.grid_bins} bins of the grid")
    if sum(s.at_risk[0] for s in series if s.at_risk) > limit:
        raise BadAnswer(f"more patients at risk than {limit}, the site's cohort")
    if any(e > n for s in series for n, e in zip(s.at_risk, s.events, strict=True)):
        raise BadAnswer("more events than patients at risk")


def _check_regression(
    a: CoxAnalysis | LogisticAnalysis,
    n: int,
    events: Sequence[int],
    derivatives: Sequence[Derivatives],
    limit: int,
) -> None:
    """``n`` complete cases within ``limit`` with at most as many events; derivatives in the
    model's terms (a gradient of k, a Hessian of k by k)."""
    check_patients(n, limit, "n")
    if sum(events) > n:
        raise BadAnswer(f"more events than the {n} patients")
    k = len(term_names(a))
    if not all(_shaped(d.gradient, (k,)) and _shaped(d.hessian, (k, k)) for d in derivatives):
        raise BadAnswer(f"derivatives are not of the model's {k} terms")


def check_own(spec: AnalysisSpec, own: OwnEstimate) -> None:
    """What a site sent of its own fit beside a secure round (its numbers bounded on the wire,
    ``OwnTerm``) that fits the analysis: a regression's, with the model's terms in order, in at
    most its ``max_iterations``. BadAnswer otherwise."""
    a = spec.analysis
    if not isinstance(a, CoxAnalysis | LogisticAnalysis):
        raise BadAnswer(f"clear.own: a {a.type} analysis takes no estimates of a site's own")
    if own.terms is None:
        return
    names = term_names(a)
    if [term.name for term in own.terms] != names:
        raise BadAnswer(
            f"clear.own.terms: {len(own.terms)} given, not the model's {len(names)} in order "
            f"{names}"
        )
    if (own.iterations or 0) > a.max_iterations:
        raise BadAnswer(
            f"clear.own.iterations: {own.iterations}, above the analysis' max_iterations "
            f"{a.max_iterations}"
        )


def close(spec: AnalysisSpec, state: NewtonState | None, parts: Mapping[str, SitePart]) -> Outcome:
    """Turn a closed round's answers (by site) into the next step."""
    a = spec.analysis
    try:
        if isinstance(a, CountsAnalysis):
            return Finished(pooled_counts(a, _typed(parts, CountsPart)))
        if isinstance(a, SummaryAnalysis):
            return Finished(pooled_summary(a, _typed(parts, SummaryPart)))
        if isinstance(a, KaplanMeierAnalysis):
            return Finished(pooled_survival(a, _typed(parts, SurvivalPart)))
    except ValueError as exc:  # a site's part does not fit the others
        return Failed(f"the sites' answers cannot be pooled: {exc}")
    assert state is not None  # started with the job
    missing = sorted(set(state.sites) - set(parts))
    if missing and state.pooled.iterations > 0:
        return Failed(
            f"site(s) {', '.join(missing)} left the analysis at Newton iteration "
            f"{state.pooled.iterations + 1}; the pooled fit needs the same sites every round"
        )
    if missing:  # sites that declined the first round take no part
        state = state.only(parts)
    answers = {s: p for s, p in parts.items() if isinstance(p, RegressionPart | RiskSetPart)}
    try:
        pooled = pooled_derivatives(list(answers.values()), state.pooled.beta)
    except ValueError as exc:
        return Failed(f"the sites' answers cannot be pooled: {exc}")
    step = newton_step(
        state,
        pooled,
        {site: part.own for site, part in answers.items()},
        a.tolerance,
        a.max_iterations,
    )
    if isinstance(step, NewtonFailure):
        return Failed(f"no convergence after {step.iterations} iterations: {step.message}")
    if step.done:
        return Finished(regression_report(a, step, answers.values()))
    return NextRound(step)


def _typed(parts: Mapping[str, SitePart], kind: type[P]) -> dict[str, P]:
    """``parts``, each checked to be a ``kind`` (results are checked on arrival too)."""
    typed = {site: part for site, part in parts.items() if isinstance(part, kind)}
    if len(typed) != len(parts):
        raise ValueError("a site answered with another kind of result")
    return typed


def announced_params(params_json: str) -> AnalysisParams:
    """The parameters a Newton round announces to every site alike (a site's own coefficients
    aside, which ``TaskAssignment.announced`` leaves out)."""
    state = NewtonState.from_json(params_json)
    return AnalysisParams(pooled=state.pooled.beta, offset=state.offset)


def close_secure(
    spec: AnalysisSpec,
    params_json: str | None,
    sums: Mapping[str, np.ndarray],
    headers: Sequence[MaskedHeader],
) -> Outcome:
    """Turn a secure round's unmasked sum into the next step. The pooled numbers are released
    under the largest small-cell threshold of the sites in the sum; a site's own estimates
    come only from the fit of its own rows it sent in the clear."""
    state = NewtonState.from_json(params_json) if params_json else None
    own = {h.site: h.clear.own for h in headers if h.clear.own is not None}
    threshold = max(h.clear.threshold for h in headers)
    noise = stated_noise(spec, [h.clear.noise for h in headers])
    sites = [h.site for h in headers]
    return secure_close(spec, state, sums, own, sites, threshold, noise=noise)
