"""Federated analyses: the spec a researcher submits, what a site sends back, and the report.

A site sends only aggregates: suppressed count tables, sums with a fixed-bin histogram,
event and at-risk counts on a time grid, or the gradient and Hessian of a likelihood at the
coefficients the orchestrator sent; under secure aggregation also, once, the terms of the model
it fitted on its own rows (``OwnEstimate``). Never a row, a minimum, a maximum or an event time.
"""

from __future__ import annotations

import math
import sys
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from oncofed.cdm.fields import PATIENT_FIELDS, variable
from oncofed.wire.base import MAX_STATISTIC, Count, Seconds, Statistic
from oncofed.wire.profile import Cell
from oncofed.wire.spec import (
    BinaryOutcome,
    CohortFilter,
    DifferentialPrivacy,
    Feature,
    JobSpec,
    Name,
    PrivacySpec,
    SurvivalOutcome,
)

Finite = Annotated[float, Field(allow_inf_nan=False)]
Confidence = Annotated[float, Field(gt=0.5, lt=1.0)]
Horizon = Annotated[int, Field(ge=1, le=36525)]
"""Days of follow-up an analysis counts: a time beyond it is censored at it (default 7305, 20
years), so every site counts survival on the same grid of ``horizon_days // grid_days + 1``
bins whatever its data."""
GridDays = Annotated[int, Field(ge=1, le=3650)]
MAX_BINS = 36525 + 1
"""The most grid bins an analysis has (the longest horizon on a one-day grid)."""
MAX_EDGES = 1000
"""The most bin edges of a summary's histogram."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _categorical(name: str) -> str:
    var = variable(name)
    if var.values is None and not name.startswith("treatment."):
        raise ValueError(f"{name!r} is numeric; counts and groups need a categorical variable")
    return name


def _numeric(name: str) -> str:
    if not variable(name).numeric:
        raise ValueError(f"{name!r} is categorical; a summary needs a numeric variable")
    return name


Categorical = Annotated[str, Field(max_length=96), AfterValidator(_categorical)]
Numeric = Annotated[str, Field(max_length=96), AfterValidator(_numeric)]


def categories(name: str) -> tuple[str, ...]:
    """The fixed levels of a categorical variable (``treatment.X`` flags are "0" and "1")."""
    values = variable(name).values
    return values if values is not None else ("0", "1")


# -- specs -----------------------------------------------------------------------------------


class CountsAnalysis(_Strict):
    """Patients by one categorical variable, or cross-tabulated by two."""

    type: Literal["counts"] = "counts"
    rows: Categorical
    """A categorical variable (or a ``treatment.TYPE`` flag): one row per level."""
    columns: Categorical | None = None
    """Another one to cross-tabulate by: one column per level."""

    @model_validator(mode="after")
    def _two_variables(self) -> CountsAnalysis:
        if self.columns == self.rows:
            raise ValueError("rows and columns name the same variable")
        return self


class SummaryAnalysis(_Strict):
    """Count, mean, standard deviation and quantiles of a numeric variable. Quantiles come from
    a histogram on fixed bin edges shared by every site (values below the first edge and above
    the last are counted in two open bins), so no site's minimum or maximum is ever sent."""

    type: Literal["summary"] = "summary"
    variable: Numeric
    """A numeric variable of the data model."""
    bins: list[Finite] = Field(min_length=2, max_length=MAX_EDGES)
    """The histogram's increasing bin edges, the same at every site."""
    quantiles: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75]
    )
    """The quantiles estimated from the histogram, each once."""

    @field_validator("bins")
    @classmethod
    def _increasing(cls, bins: list[float]) -> list[float]:
        if any(b <= a for a, b in pairwise(bins)):
            raise ValueError("bin edges must increase")
        return bins

    @field_validator("quantiles")
    @classmethod
    def _distinct(cls, quantiles: list[float]) -> list[float]:
        if len(set(quantiles)) != len(quantiles):
            raise ValueError("each quantile may appear once")
        return quantiles


class KaplanMeierAnalysis(_Strict):
    """Survival curves with Greenwood confidence intervals, optionally by group, from event and
    at-risk counts on a time grid; a log-rank test between groups."""

    type: Literal["kaplan_meier"] = "kaplan_meier"
    outcome: SurvivalOutcome
    """The survival endpoint (its ``type`` may be left out)."""
    group: Categorical | None = None
    """A categorical variable: one curve per level, and a log-rank test."""
    grid_days: GridDays = 30
    """Width of the time grid's bins, in days."""
    horizon_days: Horizon = 7305
    """Days of follow-up counted: a later time is censored at it."""
    confidence: Confidence = 0.95
    """Level of the confidence intervals."""

    @property
    def grid_bins(self) -> int:
        """Grid bins from day 0 to the horizon (the last one holds it)."""
        return self.horizon_days // self.grid_days + 1


class CoxAnalysis(_Strict):
    """Cox proportional hazards by federated Newton-Raphson. Stratified by site (Efron ties):
    exactly the pooled stratified fit. Unstratified: from per-site risk-set sums on the time
    grid (Breslow ties)."""

    type: Literal["cox"] = "cox"
    outcome: SurvivalOutcome
    """The survival endpoint (its ``type`` may be left out)."""
    covariates: list[Feature] = Field(min_length=1, max_length=100)
    """The model's covariates, written like a training job's features."""
    stratified: bool = True
    """Stratify by site; ``false``: one baseline hazard, from risk sets on the grid."""
    grid_days: GridDays = 1
    """The unstratified model's risk-set grid, in days (1 when stratified)."""
    horizon_days: Horizon = 7305
    """Days of follow-up counted: a later time is censored at it."""
    max_iterations: Annotated[int, Field(ge=1, le=200)] = 50
    """Newton iterations at most."""
    tolerance: Annotated[float, Field(gt=0.0, le=1e-2)] = 1e-9
    """Converged when no coefficient moves by this much in an iteration."""
    confidence: Confidence = 0.95
    """Level of the confidence intervals."""

    @model_validator(mode="after")
    def _grid_for_unstratified(self) -> CoxAnalysis:
        if self.stratified and self.grid_days != 1:
            raise ValueError("grid_days applies to the unstratified model (stratified: false)")
        return self

    @property
    def grid_bins(self) -> int:
        """Grid bins of the unstratified model's risk sets from day 0 to the horizon."""
        return self.horizon_days // self.grid_days + 1


class LogisticAnalysis(_Strict):
    """Logistic regression by federated Newton (IRLS), with an intercept."""

    type: Literal["logistic"] = "logistic"
    outcome: BinaryOutcome
    """The binary outcome (its ``type`` may be left out)."""
    covariates: list[Feature] = Field(min_length=1, max_length=100)
    """The model's covariates, written like a training job's features."""
    max_iterations: Annotated[int, Field(ge=1, le=200)] = 50
    """Newton iterations at most."""
    tolerance: Annotated[float, Field(gt=0.0, le=1e-2)] = 1e-9
    """Converged when no coefficient moves by this much in an iteration."""
    confidence: Confidence = 0.95
    """Level of the confidence intervals."""


Analysis = Annotated[
    CountsAnalysis | SummaryAnalysis | KaplanMeierAnalysis | CoxAnalysis | LogisticAnalysis,
    Field(discriminator="type"),
]
Regression = CoxAnalysis | LogisticAnalysis
PRIVATE_ANALYSES = (CountsAnalysis, SummaryAnalysis, KaplanMeierAnalysis, LogisticAnalysis)
"""The analyses that may be differentially private: counts, summaries, curves and the logistic
model's Newton iterations (the Cox model's risk sets give one patient no bounded weight)."""
_DEFAULT_NEWTON_ROUNDS = DifferentialPrivacy.model_fields["newton_rounds"].default


def _model_range(name: str) -> tuple[float, float] | None:
    """A numeric variable's limits in the data model (a treatment flag: 0 to 1), or None."""
    if name.startswith("treatment."):
        return 0.0, 1.0
    field = PATIENT_FIELDS.get(name)
    if field is None or field.minimum is None or field.maximum is None:
        return None
    return field.minimum, field.maximum


def covariate_ranges(
    analysis: LogisticAnalysis, dp: DifferentialPrivacy
) -> list[tuple[float, float]]:
    """Under differential privacy, each numeric covariate's range, in the order of its
    columns and after its transform: the spec's ``bounds``, else the data model's limits.
    ValueError naming a covariate that has neither, or a bound that names no covariate."""
    numeric = [f for f in analysis.covariates if f.levels is None]
    unknown = sorted(set(dp.bounds) - {f.name for f in numeric})
    if unknown:
        raise ValueError(f"bounds of {unknown} name no numeric covariate of the analysis")
    ranges = []
    for feature in numeric:
        bounds = dp.bounds.get(feature.name) or _model_range(feature.name)
        if bounds is None:
            raise ValueError(
                f"differential privacy needs the range of {feature.name!r}: give it in "
                "privacy.differential_privacy.bounds (the data model sets none)"
            )
        low, high = bounds
        if feature.transform == "log1p":
            if low <= -1.0:
                raise ValueError(f"bounds of {feature.name!r}: log1p needs a low above -1")
            low, high = math.log1p(low), math.log1p(high)
        ranges.append((low, high))
    return ranges


class AnalysisSpec(_Strict):
    """A federated analysis job: which patients, which analysis, at which sites."""

    kind: Literal["analysis"] = "analysis"
    """Required: a spec without ``kind`` is a training job."""
    name: Name
    """The job's name, shown in listings and reports."""
    project: Name | None = Field(
        None, description="The project the job belongs to: it runs where the project is approved."
    )
    dataset: Name
    """The dataset to use; each site runs the job on the dataset it approved the project with."""
    cohort: CohortFilter = Field(default_factory=CohortFilter)
    """Which patients: every condition given must hold (all patients when empty)."""
    analysis: Analysis
    """The analysis to run."""
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    """Secure aggregation and differential privacy."""
    sites: list[Name] | None = Field(default=None, description="Sites to use; all when omitted.")
    min_sites: Annotated[int, Field(ge=1)] = 1
    """A job is refused when fewer sites can take part, and fails when fewer answer a round."""
    round_timeout_s: Annotated[float, Field(gt=0.0, le=7 * 86400)] = 600.0
    """Seconds a round waits for the sites; one that misses it is left out of the round."""

    @model_validator(mode="after")
    def _sites(self) -> AnalysisSpec:
        if self.sites is not None and len(set(self.sites)) != len(self.sites):
            raise ValueError("each site may appear once")
        if self.sites is not None and self.min_sites > len(self.sites):
            raise ValueError("min_sites is larger than the number of sites listed")
        if self.privacy.differential_privacy is not None:
            if not isinstance(self.analysis, PRIVATE_ANALYSES):
                raise ValueError(
                    f"differential privacy is not available for {self.analysis.type} analyses "
                    "in this version (counts, summary, kaplan_meier and logistic only); without "
                    "it each site refuses exact releases of cohorts that differ narrowly from "
                    "earlier ones"
                )
            if not self.privacy.secure_aggregation:
                raise ValueError(
                    "a differentially private analysis needs secure_aggregation: true (each "
                    "site adds a share of the noise, and only the noisy sum is unmasked)"
                )
            dp = self.privacy.differential_privacy
            if isinstance(self.analysis, LogisticAnalysis):
                covariate_ranges(self.analysis, dp)
                if dp.newton_rounds > self.analysis.max_iterations:
                    raise ValueError("newton_rounds is above the analysis' max_iterations")
            elif dp.bounds or dp.newton_rounds != _DEFAULT_NEWTON_ROUNDS:
                raise ValueError(
                    f"bounds and newton_rounds apply to logistic regression only, not to a "
                    f"{self.analysis.type} analysis"
                )
        return self

    @property
    def features(self) -> list[Feature]:
        """The covariates of a regression (none for the other analyses)."""
        return list(getattr(self.analysis, "covariates", []))

    @property
    def variables(self) -> set[str]:
        """Every variable the analysis reads at a site."""
        a = self.analysis
        names = self.cohort.variables | {"time_origin"}
        if isinstance(a, CountsAnalysis):
            names |= {a.rows} | ({a.columns} if a.columns else set())
        elif isinstance(a, SummaryAnalysis):
            names.add(a.variable)
        else:
            out = a.outcome
            names |= {n for n in (getattr(out, "label", None), out.time, out.event) if n}
            names |= {a.group} if isinstance(a, KaplanMeierAnalysis) and a.group else set()
            names |= {f.name for f in self.features}
        return names


# -- what a site sends -------------------------------------------------------------------


class CountsPart(_Strict):
    """A site's table with its margins, suppressed: ``cells[i][j]`` for row level i and column
    level j, then each row's total as the last column and the column totals as the last row."""

    type: Literal["counts"] = "counts"
    cells: list[list[Cell]]


class SummaryPart(_Strict):
    """The histogram: below the first edge, each bin, above the last edge, then the patients
    without a value, suppressed together with ``n`` (the count of values) and the cohort size;
    the sum and sum of squares of the values only when ``n`` and the missing count are shown."""

    type: Literal["summary"] = "summary"
    n: Cell
    total: Statistic | None
    total_squares: Annotated[Statistic, Field(ge=0.0)] | None
    histogram: list[Cell] = Field(max_length=MAX_EDGES + 2)


class SurvivalSeries(_Strict):
    """One group at one site on the time grid: ``at_risk[k]`` patients at the start of bin k and
    ``events[k]`` events in it. Each count is 0 or at least the site's threshold: small counts of
    events (and of censorings) are carried into the next bin, and the series stops before the
    first bin with fewer than the threshold at risk."""

    at_risk: list[Count] = Field(max_length=MAX_BINS)
    events: list[Count] = Field(max_length=MAX_BINS)

    @model_validator(mode="after")
    def _aligned(self) -> SurvivalSeries:
        if len(self.at_risk) != len(self.events):
            raise ValueError("at_risk and events need one count per bin")
        return self


class SurvivalPart(_Strict):
    type: Literal["kaplan_meier"] = "kaplan_meier"
    groups: dict[str, SurvivalSeries]


class Derivatives(_Strict):
    """A log-likelihood with its gradient and Hessian at the coefficients sent."""

    loglik: Statistic
    gradient: list[Statistic]
    hessian: list[list[Statistic]]


class RegressionPart(_Strict):
    """Newton step ingredients: at the pooled coefficients and at this site's own."""

    type: Literal["regression"] = "regression"
    n: Count
    events: Count
    pooled: Derivatives
    own: Derivatives


class RiskSetPart(_Strict):
    """Unstratified Cox (Breslow) on the grid: per bin k the events ``d[k]``, and the sums over
    the patients at risk of exp(x'b), x exp(x'b) and x x' exp(x'b); the sum of x over all
    events; plus the site's own stratified derivatives for the heterogeneity check."""

    type: Literal["risk_sets"] = "risk_sets"
    n: Count
    events: list[Count] = Field(max_length=MAX_BINS)
    s0: list[Statistic] = Field(max_length=MAX_BINS)
    s1: list[list[Statistic]] = Field(max_length=MAX_BINS)
    s2: list[list[list[Statistic]]] = Field(max_length=MAX_BINS)
    event_x: list[Statistic]
    own: Derivatives


SitePart = Annotated[
    CountsPart | SummaryPart | SurvivalPart | RegressionPart | RiskSetPart,
    Field(discriminator="type"),
]


class AnalysisResult(_Strict):
    """One site's answer to one analysis task."""

    part: SitePart
    compute_seconds: Seconds = 0.0
    cohort: Count | None = None
    """The patients in the job's cohort at this site. A site answers only for a cohort of at
    least its ``min_cohort_size``, and every analysis' suppression treats this size as known
    (a count table's total, the size a Kaplan-Meier site's group sizes add up to, the complete
    cases a regression leaves out), so it tells nothing more; beside the part it shows how many
    of the site's patients the part counts."""


class AnalysisParams(_Strict):
    """What a Newton round sends a site: the pooled coefficients; in a plain round also the
    site's own, where the orchestrator runs each site's own fit beside the pooled one (none
    under secure aggregation, where a site fits its own model itself: ``OwnEstimate``); and for
    the unstratified Cox model under secure aggregation the ``offset`` c of its risk-set sums
    of exp(x'b - c), public and the same at every site (0 otherwise)."""

    pooled: list[Finite]
    own: list[Finite] = Field(default_factory=list)
    offset: Finite = 0.0


# -- the report --------------------------------------------------------------------------


class Noise(_Strict):
    """The noise of a differentially private analysis: each site added a share of Skellam
    noise to every number it sent, so that the job costs ``epsilon`` at ``delta`` there; the
    noisy counts are rounded, cut at zero (and a bin's events at the patients leaving it),
    then suppressed like exact ones."""

    epsilon: Finite
    delta: Finite
    sd: Finite
    """The standard deviation of the noise in each number summed (the sites' shares added up):
    a count, or for a regression an entry of its derivatives in scaled columns."""


class _Report(_Strict):
    excluded: dict[str, str] = Field(default_factory=dict)
    """Sites that are not in the result at all, with why: ``declined: ...``, ``expired: ...``
    or ``failed: ...`` (the job's ``participation`` has every site's state)."""
    pooled_only: dict[str, str] = Field(default_factory=dict)
    """Sites in the pooled result that have no estimates of their own in a regression's
    ``sites`` and heterogeneity check, with why (their own fit failed, or was withheld)."""
    secure_sites: list[str] | None = None
    """Under secure aggregation, the sites whose numbers are in the pooled sums: no one saw a
    site's own numbers, so the report holds no per-site tables, curves or summaries (a
    regression's per-site estimates come only from the fits sites made of their own rows and
    sent, ``OwnEstimate``)."""
    noise: Noise | None = None
    """Under differential privacy, the noise every number of the report was computed from."""


class CountTable(_Strict):
    rows: list[str]
    columns: list[str]
    """Column levels; ``["n"]`` for a one-way table."""
    cells: list[list[Cell]]
    """With margins: the last column holds row totals, the last row column totals."""


class CountsReport(_Report):
    type: Literal["counts"] = "counts"
    variables: list[str]
    pooled: CountTable
    sites: dict[str, CountTable]


class Summary(_Strict):
    n: Cell
    mean: float | None
    sd: float | None
    quantiles: dict[str, float | None]
    histogram: list[Cell]


class SummaryReport(_Report):
    type: Literal["summary"] = "summary"
    variable: str
    bins: list[float]
    pooled: Summary
    sites: dict[str, Summary]


class Curve(_Strict):
    """A Kaplan-Meier curve at the end of each grid bin (``time`` in days)."""

    time: list[float]
    survival: list[float]
    lower: list[float]
    upper: list[float]
    at_risk: list[int]
    events: list[int]


class LogRank(_Strict):
    statistic: float
    df: int
    p: float


class SurvivalReport(_Report):
    type: Literal["kaplan_meier"] = "kaplan_meier"
    grid_days: int
    confidence: float
    groups: dict[str, Curve]
    logrank: LogRank | None
    withheld: list[str] = Field(default_factory=list)
    """Groups not reported: no patients, or too few patients or events at every site (in all,
    under secure aggregation)."""


class Term(_Strict):
    """One coefficient: the estimate, its standard error and Wald test, and the ratio (hazard
    or odds) with its confidence interval."""

    name: str
    coef: float
    se: float
    lower: float
    upper: float
    z: float
    p: float
    ratio: float
    ratio_lower: float
    ratio_upper: float


class Heterogeneity(_Strict):
    """Cochran's Q across the sites' own estimates of one coefficient, and I^2."""

    name: str
    q: float
    df: int
    p: float
    i2: float


MAX_LOG_RATIO = math.log(sys.float_info.max)
"""The largest magnitude of a coefficient of a site's own fit (a log hazard or odds ratio), and
of its confidence bounds: about 709.8, beyond which exp(coef), its ratio, is no float64. A fit's
terms carry finite ratios, so none has more; below, the same bound holds (as it would with the
covariate's coding reversed)."""
_OWN_TERM = {
    "coef": (-MAX_LOG_RATIO, MAX_LOG_RATIO),
    "lower": (-MAX_LOG_RATIO, MAX_LOG_RATIO),
    "upper": (-MAX_LOG_RATIO, MAX_LOG_RATIO),
    "se": (1.0 / MAX_STATISTIC, MAX_STATISTIC),
    "p": (0.0, 1.0),
    "ratio": (0.0, math.inf),
    "ratio_lower": (0.0, math.inf),
    "ratio_upper": (0.0, math.inf),
}
"""The range of each number of a term of a site's own fit (every number also finite). A
standard error is positive and within 1e-100 and 1e100 (``MAX_STATISTIC``): the heterogeneity
check's weights 1 / se^2, times squared differences of coefficients, added over sites, then stay
far from float64 overflow and underflow."""


def _own_term(term: Term) -> Term:
    """A term of a site's own fit: each number within its range (``_OWN_TERM``), the estimate
    and its ratio within their confidence bounds."""
    for name, (low, high) in _OWN_TERM.items():
        value = getattr(term, name)
        if not low <= value <= high:
            raise ValueError(f"{name} {value:g} is not within [{low:g}, {high:g}]")
    if not term.lower <= term.coef <= term.upper:
        raise ValueError(f"coef {term.coef:g} is not within [lower, upper]")
    if not term.ratio_lower <= term.ratio <= term.ratio_upper:
        raise ValueError(f"ratio {term.ratio:g} is not within [ratio_lower, ratio_upper]")
    return term


OwnTerm = Annotated[Term, AfterValidator(_own_term)]
"""A term as a site sends it of its own fit (``OwnEstimate``), bounded (``_OWN_TERM``)."""


class OwnEstimate(_Strict):
    """What a site sends in the clear, once, beside the first round of a secure Newton loop:
    its own model fitted on its rows alone to its end (``analytics.site.own_fit``), when its
    policy shares site estimates and its own numbers meet every per-site rule of a plain round.
    Exactly one of: the ``terms`` with the ``iterations`` the fit took; why it ``failed`` (the
    fit's diagnosis); why it is ``withheld`` (a rule, or the site's policy). Never derivatives:
    at coefficients the orchestrator chose they would be the site's summand. Each number of a
    term is bounded (``OwnTerm``); the orchestrator also checks the terms are the model's and
    the iterations within its limit (``orchestrator.analysis.check_own``)."""

    terms: list[OwnTerm] | None = Field(None, max_length=1000)
    iterations: Annotated[int, Field(ge=1, le=200)] | None = None
    failed: Annotated[str, Field(max_length=500)] | None = None
    withheld: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _one(self) -> OwnEstimate:
        given = (self.terms is not None, self.failed is not None, self.withheld is not None)
        if sum(given) != 1 or given[0] != (self.iterations is not None):
            raise ValueError(
                "give the terms and iterations, why the fit failed, or why it is withheld"
            )
        return self


class RegressionReport(_Report):
    type: Literal["regression"] = "regression"
    model: Literal["cox", "logistic"]
    stratified: bool
    ratio_name: Literal["HR", "OR"]
    confidence: float
    n: int
    events: int
    loglik: float | None
    """None under differential privacy: one patient's share of it has no bound, so the sites
    do not send it."""
    iterations: int
    terms: list[Term]
    sites: dict[str, list[Term]]
    heterogeneity: list[Heterogeneity]


AnalysisReport = Annotated[
    CountsReport | SummaryReport | SurvivalReport | RegressionReport,
    Field(discriminator="type"),
]


# -- any job ------------------------------------------------------------------------------


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "train"))
    return str(getattr(value, "kind", "train"))


AnySpec = Annotated[
    Annotated[JobSpec, Tag("train")] | Annotated[AnalysisSpec, Tag("analysis")],
    Discriminator(_kind),
]
"""A training job (``kind: train``, the default) or an analysis (``kind: analysis``)."""

SPECS: TypeAdapter[JobSpec | AnalysisSpec] = TypeAdapter(AnySpec)
"""Validates any job spec (JSON or Python data)."""
REPORTS: TypeAdapter[AnalysisReport] = TypeAdapter(AnalysisReport)
"""Validates and serialises an analysis report."""
