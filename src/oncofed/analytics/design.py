"""A site's side of a regression: the covariates of an analysis as an unscaled matrix with named
terms (coefficients on the original scale of each variable), the site's answer to a round, and
the checks that keep derivatives from describing small groups of patients.

Term names, in column order: ``intercept`` (logistic only), then each numeric covariate in the
order given (``age_at_diagnosis``, or ``log1p(tumour_size_mm)`` when log1p-transformed), then
each categorical covariate's levels after the reference (the first level) as ``name[level]``
(``grade[G2]``, ``grade[G3]``): the column order of :func:`oncofed.learning.data.encode`. For
the Cox model, follow-up is counted up to the analysis' ``horizon_days``: a time beyond it is
censored there (:func:`oncofed.analytics.survival.censor`).

Derivatives describe groups exactly: at coefficients 0 the logistic Hessian is -X'X / 4 and its
gradient X'(y - 1/2), so for a column taking the values a and b the patients with each (n_a +
n_b = n, a n_a + b n_b = sum x) and the events among them can be read off, and a column with a
few known values gives its groups from the higher moments that later rounds add. What a column
*is* decides, not what produced it: ``log1p`` of a 0/1 flag still has two values. So a site
answers only when (:func:`check_cells`):

- for every column with two distinct values here (a 0/1 term, a flag under any transform, any
  numeric column that happens to take two values) and every categorical covariate's reference
  level: the patients with it and without it, and those with and without the outcome among
  each, are 0 or at least the threshold T;
- for every column with at most ``discrete_levels`` distinct values here (a policy setting):
  the patients with each value, and those with and without the outcome among them, are 0 or at
  least T;
- for every two two-valued columns: the patients with both, only one, or neither are 0 or at
  least T (X'X holds them at the first round).

Under secure aggregation no one sees a site's derivatives, only their sum over the sites, so
the per-site rules give way to rules on the pooled numbers. The groups the data model itself
defines (:func:`known_groups`: categorical levels; flags such as ``treatment.X`` whatever their
transform; each value of a numeric field with at most ``KNOWN_VALUES`` allowed values, such as
ECOG 0-5) are counted at each site and checked on the pooled counts
(:mod:`oncofed.analytics.secure`). Its other numeric fields are measurements (age, tumour size,
nodes): a site's few patients with one value are hidden in the sum, and the pooled data have no
fixed groups to check, as for a plain summary of a continuous variable. Only an ``ext.*``
column, whose meaning the data model does not know, keeps the per-site check: it may be a
site's own flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oncofed.analytics.cox import efron_derivatives, risk_set_sums
from oncofed.analytics.logistic import logistic_derivatives
from oncofed.analytics.survival import censor
from oncofed.cdm.fields import EXTENSION_PREFIX, PATIENT_FIELDS
from oncofed.learning.data import DataError, Table, encode, value_groups
from oncofed.wire.analysis import (
    AnalysisParams,
    CoxAnalysis,
    Derivatives,
    Regression,
    RegressionPart,
    RiskSetPart,
)
from oncofed.wire.spec import Feature


@dataclass(frozen=True)
class Design:
    """Complete cases of one site: covariate matrix, outcome and term names."""

    x: np.ndarray  # (n, p) float64, unscaled; intercept column first for logistic
    label: np.ndarray  # binary label, or survival event indicator (float64 0/1)
    time: np.ndarray | None  # survival time, None for logistic
    names: list[str]

    def __len__(self) -> int:
        return int(self.label.shape[0])


def _numeric_name(feature: Feature) -> str:
    return f"log1p({feature.name})" if feature.transform == "log1p" else feature.name


def term_names(analysis: Regression) -> list[str]:
    """The model's term names in column order (see the module docstring)."""
    covariates: Sequence[Feature] = analysis.covariates
    numeric = [_numeric_name(f) for f in covariates if f.levels is None]
    dummies = [f"{f.name}[{level}]" for f in covariates if f.levels for level in f.levels[1:]]
    intercept = ["intercept"] if analysis.type == "logistic" else []
    return intercept + numeric + dummies


def design(analysis: Regression, table: Table) -> Design:
    """The design of ``analysis`` over a site's ``table`` (numpy columns by variable name, as
    :func:`oncofed.cdm.frame.job_table` gives them); incomplete rows are left out."""
    cohort = encode(analysis.covariates, analysis.outcome, table)
    blocks = [cohort.numeric, cohort.dummies]
    if analysis.type == "logistic":
        blocks.insert(0, np.ones((len(cohort), 1)))
    label, time = cohort.label, cohort.time
    if isinstance(analysis, CoxAnalysis) and time is not None:
        time, label = censor(time, label, analysis.horizon_days)
    return Design(np.hstack(blocks), label, time, term_names(analysis))


KNOWN_VALUES = 10
"""A numeric field of the data model allowing at most this many whole numbers (ECOG 0-5)
describes groups whatever a site's data: each value is a known group."""


def _values(feature: Feature) -> list[int]:
    """The allowed values of a numeric covariate that is a small set of whole numbers in the
    data model, else none."""
    field = PATIENT_FIELDS.get(feature.name)
    if feature.levels or field is None or field.kind != "integer":
        return []
    if field.minimum is None or field.maximum is None:
        return []
    low, high = int(field.minimum), int(field.maximum)
    return list(range(low, high + 1)) if high - low < KNOWN_VALUES else []


def _extension_terms(analysis: Regression) -> list[str]:
    """The terms of numeric ``ext.*`` covariates: what their values mean is the site's own."""
    return [
        _numeric_name(f)
        for f in analysis.covariates
        if f.levels is None and f.name.startswith(EXTENSION_PREFIX)
    ]


def _is_flag(name: str) -> bool:
    """The data model defines ``name`` as 0/1: ``treatment.X``, or a flag field."""
    field = PATIENT_FIELDS.get(name)
    return name.startswith("treatment.") or (field is not None and field.kind == "flag")


def _flags(analysis: Regression) -> list[Feature]:
    """The numeric covariates that are 0/1 flags, whatever their transform."""
    return [f for f in analysis.covariates if f.levels is None and _is_flag(f.name)]


def _categorical(analysis: Regression) -> list[tuple[str, list[str]]]:
    """Each categorical covariate's name and levels (the reference first)."""
    return [(f.name, f.levels) for f in analysis.covariates if f.levels]


def known_groups(analysis: Regression) -> list[str]:
    """The groups of patients the spec alone tells the design describes, by term: each 0/1 flag
    covariate whatever its transform (the patients with the flag), each categorical level after
    the reference, then each categorical covariate's reference level (``grade[G1]``)."""
    flags = [_numeric_name(f) for f in _flags(analysis)]
    valued = [f"{_numeric_name(f)}={v}" for f in analysis.covariates for v in _values(f)]
    dummies = [
        f"{name}[{level}]" for name, levels in _categorical(analysis) for level in levels[1:]
    ]
    references = [f"{name}[{levels[0]}]" for name, levels in _categorical(analysis)]
    return flags + valued + dummies + references


def known_indicators(analysis: Regression, data: Design) -> np.ndarray:
    """The (n, k) 0/1 membership of ``data``'s patients in the :func:`known_groups`."""
    x, names = data.x, data.names
    flags = [
        x[:, names.index(_numeric_name(f))] == (np.log1p(1.0) if f.transform == "log1p" else 1.0)
        for f in _flags(analysis)
    ]
    valued = [
        x[:, names.index(_numeric_name(f))] == (np.log1p(v) if f.transform == "log1p" else v)
        for f in analysis.covariates
        for v in _values(f)
    ]
    dummies = [
        x[:, names.index(f"{name}[{level}]")]
        for name, levels in _categorical(analysis)
        for level in levels[1:]
    ]
    references = _references(analysis, data).values()
    return _matrix([*flags, *valued, *dummies, *references], len(data))


def _references(analysis: Regression, data: Design) -> dict[str, np.ndarray]:
    """Each categorical covariate's reference level (``grade[G1]``) with its patients (0/1):
    those with none of the covariate's other levels."""
    return {
        f"{name}[{levels[0]}]": 1.0
        - data.x[:, [n.startswith(f"{name}[") for n in data.names]].sum(axis=1)
        for name, levels in _categorical(analysis)
    }


def _matrix(columns: Sequence[np.ndarray], n: int) -> np.ndarray:
    """``columns`` side by side as an (n, k) float matrix, also when there are none."""
    return np.column_stack([*columns, np.empty((n, 0))]).astype(np.float64)


@dataclass(frozen=True)
class Cells:
    """What the first round's derivatives tell of k groups of patients (0/1 indicator columns):
    the patients and the events (outcome 1) in all, in each group, and in each two groups at
    once. A site's, or under secure aggregation their sums over the sites."""

    n: int
    events: int
    members: np.ndarray  # (k,)
    member_events: np.ndarray  # (k,)
    both: np.ndarray  # (k, k)

    @classmethod
    def count(cls, ones: np.ndarray, label: np.ndarray) -> Cells:
        """The cells of indicator columns ``ones`` (n, k) and outcome ``label`` (n,)."""
        return cls(len(label), int(label.sum()), ones.sum(axis=0), label @ ones, ones.T @ ones)

    def small_groups(self, threshold: int) -> np.ndarray:
        """(k,): the patients in a group or outside it, or those with and without the outcome
        among either, from 1 to ``threshold`` - 1."""
        n, events, inside, inside_events = self.n, self.events, self.members, self.member_events
        cells = np.stack(
            [
                inside,
                n - inside,
                inside_events,
                inside - inside_events,
                events - inside_events,
                n - inside - events + inside_events,
            ]
        )
        return _small(cells, threshold)

    def small_pairs(self, threshold: int) -> np.ndarray:
        """(k, k): the patients in both of two groups, in only one, or in neither, from 1 to
        ``threshold`` - 1."""
        both, inside = self.both, self.members
        only = inside[:, None] - both
        neither = self.n - inside[:, None] - inside[None, :] + both
        pairs = np.stack([both, only, only.T, neither])
        return _small(pairs, threshold)


def _small(counts: np.ndarray, threshold: int) -> np.ndarray:
    """Along the first axis: any count from 1 to ``threshold`` - 1."""
    return np.asarray(((counts > 0) & (counts < threshold)).any(axis=0))


def small_cells(
    cells: Cells,
    labels: Sequence[str],
    threshold: int,
    where: str,
    *,
    checked: np.ndarray | None = None,
    paired: np.ndarray | None = None,
) -> str | None:
    """Why ``cells`` may not be released (None when they may): the first group (by its term,
    ``labels``) or pair of groups with a count from 1 to ``threshold`` - 1 (see the module
    docstring), ``where`` saying whose numbers they are ("here", "over all sites"). Only the
    groups ``checked`` count (all by default; a pair when either is), and only ``paired`` groups
    (indicators of two-valued columns, all by default; else a value of a column with a few) are
    checked in pairs."""
    k = len(labels)
    checked = np.ones(k, bool) if checked is None else checked
    paired = np.ones(k, bool) if paired is None else paired
    small = np.flatnonzero(cells.small_groups(threshold) & checked)
    if small.size:
        term = labels[small[0]]
        if paired[small[0]]:
            return (
                f"term {term!r}: the patients with and without it, and those with and without "
                f"the outcome among each, must each be 0 or at least {threshold} {where}"
            )
        return (
            f"term {term!r} takes few distinct values {where} (policy discrete_levels): the "
            "patients with each value, and those with and without the outcome among them, "
            f"must each be 0 or at least {threshold} {where}"
        )
    pairs = cells.small_pairs(threshold) & np.outer(paired, paired)
    pairs &= checked[:, None] | checked[None, :]
    if pairs.any():
        i, j = np.argwhere(pairs)[0]
        return (
            f"terms {labels[i]!r} and {labels[j]!r}: the patients with both, either or neither "
            f"must each be 0 or at least {threshold} {where}"
        )
    return None


def small_outcome(n: int, events: int, threshold: int, where: str) -> str | None:
    """Why the counts of ``n`` patients with and without the outcome (``events``) may not be
    released, or None."""
    if any(0 < c < threshold for c in (events, n - events)):
        return f"fewer than {threshold} patients with or without the outcome {where}"
    return None


def check_cells(
    analysis: Regression,
    data: Design,
    threshold: int,
    discrete_levels: int,
    *,
    secure: bool = False,
) -> None:
    """DataError naming the first term whose groups here (see the module docstring) hold a
    count from 1 to ``threshold`` - 1. Under ``secure`` aggregation only ``ext.*`` columns are
    checked here (see the module docstring)."""
    labels, columns, paired = [], [], []
    for name, column in zip(data.names, data.x.T, strict=True):
        groups = None if name == "intercept" else value_groups(column, discrete_levels)
        if groups is not None:
            two = groups.shape[1] == 2
            for one in groups.T[1:] if two else groups.T:  # for two values, either says all
                labels.append(name)
                columns.append(one)
                paired.append(two)
    for name, one in _references(analysis, data).items():
        labels.append(name)
        columns.append(one)
        paired.append(True)
    cells = Cells.count(_matrix(columns, len(data)), data.label)
    message = small_cells(
        cells,
        labels,
        threshold,
        "here",
        checked=np.isin(labels, _extension_terms(analysis)) if secure else None,
        paired=np.array(paired, dtype=bool),
    )
    if message is not None:
        raise DataError(message)


def derivatives(analysis: Regression, data: Design, beta: np.ndarray) -> Derivatives:
    """The log-likelihood and its derivatives at ``beta`` over ``data``: logistic, or Efron's
    partial likelihood with the site as one stratum."""
    if data.time is None:  # logistic
        return logistic_derivatives(data.x, data.label, beta)
    return efron_derivatives(data.x, data.time, data.label, beta)


def site_part(
    analysis: Regression,
    data: Design,
    params: AnalysisParams,
    threshold: int,
    discrete_levels: int,
) -> RegressionPart | RiskSetPart:
    """A site's answer to one Newton round: its derivatives at the pooled coefficients (for the
    unstratified Cox model its risk-set sums there) and at its own. DataError when a group is
    small (:func:`check_cells`), or when the counts sent with derivatives, patients with the
    outcome and without, are not 0 or at least ``threshold`` (risk-set sums carry their counts
    instead)."""
    check_cells(analysis, data, threshold, discrete_levels)
    n, pooled, own = len(data), np.asarray(params.pooled), np.asarray(params.own)
    if isinstance(analysis, CoxAnalysis) and not analysis.stratified:
        assert data.time is not None  # a survival outcome
        sums = risk_set_sums(data.x, data.time, data.label, pooled, analysis.grid_days, threshold)
        return sums.part(n, derivatives(analysis, data, own))
    events = int(data.label.sum())
    message = small_outcome(n, events, threshold, "here")
    if message is not None:
        raise DataError(message)
    return RegressionPart(
        n=n,
        events=events,
        pooled=derivatives(analysis, data, pooled),
        own=derivatives(analysis, data, own),
    )
