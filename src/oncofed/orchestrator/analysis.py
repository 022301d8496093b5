"""The orchestrator's side of a federated analysis: what each round sends, and what a closed
round turns into (the report, the next Newton round, or a plain failure).

Counts, summaries and Kaplan-Meier curves take one round. Regressions take one round per Newton
iteration; their state (``analytics.newton.NewtonState``) is stored as JSON with the job, so a
restarted orchestrator resumes the loop where it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from oncofed.analytics.counts import pooled_counts
from oncofed.analytics.design import term_names
from oncofed.analytics.newton import (
    NewtonFailure,
    NewtonState,
    newton_step,
    pooled_derivatives,
    regression_report,
)
from oncofed.analytics.outcome import Failed, Finished, NextRound, Outcome
from oncofed.analytics.secure_close import secure_close
from oncofed.analytics.summary import pooled_summary
from oncofed.analytics.survival import pooled_survival
from oncofed.wire.analysis import (
    AnalysisParams,
    AnalysisSpec,
    CountsAnalysis,
    CountsPart,
    KaplanMeierAnalysis,
    RegressionPart,
    RiskSetPart,
    SitePart,
    SummaryAnalysis,
    SummaryPart,
    SurvivalPart,
)
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
    return secure_close(spec, state, sums, own, [h.site for h in headers], threshold)
