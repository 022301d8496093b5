"""From a job's patient table to model inputs: outcome, feature encoding, hold-out split,
scaling. The table comes from ``oncofed.cdm.frame.job_table``: columns named by the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from oncofed.wire.messages import Standardization, StatsResult
from oncofed.wire.spec import BinaryOutcome, Feature, JobSpec, Outcome

Table = Mapping[str, np.ndarray]


class DataError(ValueError):
    """A site's table does not fit the job spec; the message names the column."""


@dataclass(frozen=True)
class Cohort:
    """Complete cases of one site, encoded for a job: numeric block, dummies and target."""

    numeric: np.ndarray  # (n, p) float64 after transforms, unscaled
    dummies: np.ndarray  # (n, q) float64 one-hot without the reference level
    label: np.ndarray  # binary label, or survival event indicator (float64 0/1)
    time: np.ndarray | None  # survival time, None for binary outcomes
    excluded: int = 0  # rows left out (missing values, censored before the horizon)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, rows: np.ndarray) -> Cohort:
        time = None if self.time is None else self.time[rows]
        return Cohort(self.numeric[rows], self.dummies[rows], self.label[rows], time)

    def design(self, scaling: Standardization) -> np.ndarray:
        """The float32 model input: standardised numeric columns, then dummies."""
        return design(self.numeric, self.dummies, scaling)

    def stats(self) -> StatsResult:
        """Count, sums and sums of squares of the numeric block (for pooled scaling)."""
        return StatsResult(
            n=len(self),
            sums=self.numeric.sum(axis=0).tolist(),
            sumsq=(self.numeric**2).sum(axis=0).tolist(),
        )


def _column(table: Table, name: str) -> np.ndarray:
    if name not in table:
        raise DataError(f"column {name!r} is not in the dataset (it has {sorted(table)})")
    return np.asarray(table[name])


def _numeric(table: Table, name: str) -> np.ndarray:
    values = _column(table, name)
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"column {name!r} is not numeric") from exc


def build_cohort(spec: JobSpec, table: Table) -> Cohort:
    """Encode ``table`` for ``spec``, dropping incomplete rows and rows without a label."""
    return encode(spec.features, spec.outcome, table)


def encode_features(
    features: Sequence[Feature], table: Table
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row of ``table`` encoded for ``features``: the numeric block after transforms,
    the dummies, and which rows are complete (no missing value, every level a listed one)."""
    n = len(next(iter(table.values()))) if table else 0
    keep = np.ones(n, dtype=bool)
    numeric: list[np.ndarray] = []
    dummies: list[np.ndarray] = []
    for feature in features:
        if feature.levels is None:
            values = _numeric(table, feature.name)
            if feature.transform == "log1p":
                if np.any(values[np.isfinite(values)] <= -1):
                    raise DataError(f"column {feature.name!r} has values <= -1; log1p undefined")
                values = np.log1p(values)
            keep &= np.isfinite(values)
            numeric.append(values)
        else:
            text = _column(table, feature.name).astype(str)
            keep &= np.isin(text, feature.levels)  # other values are left out, like missing ones
            dummies.extend((text == level).astype(np.float64) for level in feature.levels[1:])
    empty = np.empty((n, 0))
    return (
        np.column_stack(numeric) if numeric else empty,
        np.column_stack(dummies) if dummies else empty,
        keep,
    )


def encode(features: Sequence[Feature], outcome: Outcome, table: Table) -> Cohort:
    """Encode ``features`` and ``outcome`` of ``table``: complete cases with a label only."""
    numeric, dummies, keep = encode_features(features, table)
    label, time = _target(outcome, table, keep)
    rows = np.flatnonzero(keep)
    return Cohort(
        numeric=numeric[rows],
        dummies=dummies[rows],
        label=label[rows],
        time=None if time is None else time[rows],
        excluded=int(keep.size - rows.size),
    )


def design(numeric: np.ndarray, dummies: np.ndarray, scaling: Standardization) -> np.ndarray:
    """The float32 model input: numeric columns standardised by the pooled ``scaling``
    (``(x - mean) / std``), then the dummies."""
    mean = np.asarray(scaling.mean, dtype=np.float64)
    std = np.asarray(scaling.std, dtype=np.float64)
    return np.hstack([(numeric - mean) / std, dummies]).astype(np.float32)


def _target(
    outcome: Outcome, table: Table, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Label (and time for survival); marks unusable rows in ``keep`` in place."""
    if isinstance(outcome, BinaryOutcome) and outcome.label is not None:
        label = _numeric(table, outcome.label)
        keep &= np.isin(label, (0.0, 1.0))
        return label, None
    assert outcome.time is not None and outcome.event is not None  # the spec guarantees both
    time = _numeric(table, outcome.time)
    event = _numeric(table, outcome.event)
    keep &= np.isfinite(time) & (time >= 0) & np.isin(event, (0.0, 1.0))
    if isinstance(outcome, BinaryOutcome):
        horizon = float(outcome.horizon_days or 0.0)
        happened = (event == 1) & (time <= horizon)
        keep &= happened | (time >= horizon)  # followed event-free through the horizon
        return happened.astype(np.float64), None
    return event, time


def holdout_size(n: int, fraction: float) -> int:
    """How many of ``n`` rows are held out: at least one, and at least one left to train."""
    return min(max(1, round(fraction * n)), n - 1) if n > 1 else 0


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (train, held-out) row indices: the same rows for every round of a job."""
    order = np.random.default_rng(seed).permutation(n)
    n_eval = holdout_size(n, fraction)
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def split_cohort(spec: JobSpec, cohort: Cohort) -> tuple[Cohort, Cohort]:
    """The job's fixed (train, held-out) split of one site's cohort."""
    train_rows, eval_rows = holdout_split(len(cohort), spec.evaluation.holdout, spec.seed)
    return cohort.take(train_rows), cohort.take(eval_rows)


def concat(cohorts: Sequence[Cohort]) -> Cohort:
    """Rows of several cohorts in one (for pooled references; never done at a real site)."""
    times = [c.time for c in cohorts]
    return Cohort(
        numeric=np.vstack([c.numeric for c in cohorts]),
        dummies=np.vstack([c.dummies for c in cohorts]),
        label=np.concatenate([c.label for c in cohorts]),
        time=None if any(t is None for t in times) else np.concatenate(times),  # type: ignore[arg-type]
    )


def value_groups(column: np.ndarray, discrete_levels: int) -> np.ndarray | None:
    """One 0/1 column per distinct value of ``column`` (ascending) when it takes from 2 to
    ``discrete_levels`` of them: it then describes groups of patients, whatever transform
    produced it (``log1p`` of a 0/1 flag still has two values). None otherwise."""
    values, index = np.unique(column, return_inverse=True)
    if not 2 <= len(values) <= discrete_levels:
        return None
    return (index[:, None] == np.arange(len(values))).astype(np.float64)


def check_stats_columns(
    numeric: np.ndarray, names: Sequence[str], threshold: int, discrete_levels: int
) -> None:
    """Before the statistics round sends sums: DataError naming the first numeric feature
    (``names``, the columns of ``numeric``) that takes at most ``discrete_levels`` distinct
    values here with from 1 to ``threshold`` - 1 patients holding one of them. Its count, sum
    and sum of squares would tell how many patients hold each value (exactly, for two or three
    values)."""
    if len(names) != numeric.shape[1]:
        raise ValueError(f"{len(names)} names for {numeric.shape[1]} columns")
    n = len(numeric)
    if n < 2:  # one value at most
        return
    ordered = np.sort(numeric, axis=0)  # every column's values in runs, NaNs one run last
    edge = np.ones((n + 1, numeric.shape[1]), dtype=bool)  # where a run starts (n: the end)
    edge[1:n] = (ordered[1:] != ordered[:-1]) & ~(np.isnan(ordered[1:]) & np.isnan(ordered[:-1]))
    distinct = edge[1:n].sum(axis=0) + 1
    at = np.arange(n + 1)[:, None]
    start = np.maximum.accumulate(np.where(edge, at, 0), axis=0)  # of the run holding each row
    smallest = np.where(edge[1:], at[1:] - start[:-1], n).min(axis=0)  # runs end at an edge
    few = (distinct >= 2) & (distinct <= discrete_levels)
    refused = np.flatnonzero(few & (smallest < threshold))
    if refused.size:
        raise DataError(
            f"feature {names[refused[0]]!r} takes few distinct values here (policy "
            f"discrete_levels): the patients with each value must be at least {threshold} here"
        )


def pooled_stats(parts: Sequence[StatsResult]) -> StatsResult:
    """The sites' counts, sums and sums of squares added up."""
    return StatsResult(
        n=sum(p.n for p in parts),
        sums=np.sum([p.sums for p in parts], axis=0).tolist(),
        sumsq=np.sum([p.sumsq for p in parts], axis=0).tolist(),
    )


def pooled_standardization(parts: Sequence[StatsResult]) -> Standardization:
    """Mean and population standard deviation over all sites' rows, exactly as if pooled."""
    return standardization(pooled_stats(parts))


def standardization(pooled: StatsResult) -> Standardization:
    """Mean and population standard deviation from pooled totals."""
    n = pooled.n
    if n == 0:
        raise DataError("no rows to standardise")
    sums, sumsq = np.asarray(pooled.sums), np.asarray(pooled.sumsq)
    mean = sums / n
    var = np.maximum(sumsq / n - mean**2, 0.0)
    std = np.where(var > 1e-12, np.sqrt(var), 1.0)
    return Standardization(mean=mean.tolist(), std=std.tolist())
