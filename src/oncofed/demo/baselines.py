"""References the federation is measured against, computed by the demo only because it holds
every site's slice itself: a pooled model on all training rows, one model per site, and the
exact result of a differentially private analysis."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from oncofed.analytics.outcome import Finished
from oncofed.analytics.secure import secure_values
from oncofed.analytics.secure_close import secure_close
from oncofed.learning import train as local
from oncofed.learning.data import (
    Cohort,
    Table,
    build_cohort,
    concat,
    pooled_standardization,
    split_cohort,
)
from oncofed.learning.metrics import PRIMARY
from oncofed.learning.registry import TASKS, initial_weights
from oncofed.wire.analysis import AnalysisReport, AnalysisSpec, SurvivalReport
from oncofed.wire.messages import Standardization
from oncofed.wire.spec import JobSpec, PrivacySpec
from oncofed.wire.tensors import Weights


@dataclass(frozen=True)
class Model:
    weights: Weights
    scaling: Standardization


@dataclass(frozen=True)
class SiteSplit:
    train: Cohort
    held_out: Cohort


def site_splits(spec: JobSpec, tables: Mapping[str, Table]) -> dict[str, SiteSplit]:
    """Each site's rows split exactly as its edge splits them."""
    return {
        site: SiteSplit(*split_cohort(spec, build_cohort(spec, t))) for site, t in tables.items()
    }


def fit_central(spec: JobSpec, train: list[Cohort]) -> Model:
    """Train on the given cohorts as one table, for as many epochs as a site does in the
    whole federated job (rounds x local epochs), from the same initial weights."""
    cohort = concat(train)
    scaling = pooled_standardization([c.stats() for c in train])
    start = initial_weights(spec.model, spec.n_inputs, spec.seed)
    fit = local.train(
        spec,
        start,
        cohort.design(scaling),
        cohort,
        seed=spec.seed,
        epochs=spec.rounds * spec.local.epochs,
    )
    return Model(fit.weights, scaling)


def score(spec: JobSpec, model: Model, held_out: list[Cohort]) -> float:
    """The job's primary metric on the union of the held-out cohorts."""
    cohort = concat(held_out)
    metrics = local.evaluate(spec, model.weights, cohort.design(model.scaling), cohort)
    return float(metrics[PRIMARY[TASKS[spec.model.type]]])


def compare(
    spec: JobSpec, splits: Mapping[str, SiteSplit], federated: Weights
) -> dict[str, object]:
    """Federated, pooled and single-site models, each scored on every site's held-out rows
    and on their union."""
    train = [s.train for s in splits.values()]
    models = {
        "federated": Model(federated, pooled_standardization([c.stats() for c in train])),
        "pooled": fit_central(spec, train),
        **{f"site:{site}": fit_central(spec, [s.train]) for site, s in splits.items()},
    }
    table = {
        name: {
            "union": score(spec, model, [s.held_out for s in splits.values()]),
            **{site: score(spec, model, [s.held_out]) for site, s in splits.items()},
        }
        for name, model in models.items()
    }
    single = {site: table[f"site:{site}"]["union"] for site in splits}
    return {
        "name": spec.name,
        "model": spec.model.type,
        "metric": PRIMARY[TASKS[spec.model.type]],
        "federated": table["federated"]["union"],
        "pooled": table["pooled"]["union"],
        "single_site": single,
        "single_site_mean": float(np.mean(list(single.values()))),
        "by_site_held_out": table,
        "held_out_patients": {site: len(s.held_out) for site, s in splits.items()},
        "train_patients": {site: len(s.train) for site, s in splits.items()},
    }


def exact_analysis(
    spec: AnalysisSpec, tables: Mapping[str, Table], threshold: int
) -> AnalysisReport:
    """What a one-round analysis gives without its noise: the sites' exact contributions
    summed and closed as the orchestrator closes a secure round, at ``threshold``."""
    exact = spec.model_copy(update={"privacy": PrivacySpec(secure_aggregation=True)})
    parts = [secure_values(exact, table, None, threshold, 10) for table in tables.values()]
    sums = {name: np.sum([part[name] for part in parts], axis=0) for name in parts[0]}
    outcome = secure_close(exact, None, sums, {}, list(tables), threshold)
    assert isinstance(outcome, Finished), outcome
    return outcome.report


def largest_gap(noisy: SurvivalReport, exact: SurvivalReport) -> float:
    """The largest difference between two reports' survival curves, at their common times."""
    gaps = [0.0]
    for group, curve in noisy.groups.items():
        reference = exact.groups.get(group)
        if reference is not None:
            at = dict(zip(reference.time, reference.survival, strict=True))
            gaps += [
                abs(s - at[t]) for t, s in zip(curve.time, curve.survival, strict=True) if t in at
            ]
    return max(gaps)
