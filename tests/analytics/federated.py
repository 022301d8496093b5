"""Analyses run over sites in process, plain and secure: GBSG2 as a job table, sites dealt from
it, and the orchestrator's loop. A secure round sums the sites' contributions as numbers (the
masking and fixed-point encoding are tested in ``tests/privacy/secagg``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines.datasets import load_gbsg2

from oncofed.analytics.newton import NewtonState
from oncofed.analytics.outcome import NextRound, Outcome
from oncofed.analytics.secure import secure_layout, secure_values
from oncofed.analytics.secure_close import secure_close
from oncofed.analytics.site import answer, own_fit
from oncofed.learning.data import DataError, Table
from oncofed.orchestrator import analysis as plain
from oncofed.wire.analysis import AnalysisReport, AnalysisSpec, OwnEstimate
from oncofed.wire.spec import PrivacySpec

RFS = {"time": "rfs_days", "event": "rfs_event"}


def gbsg2() -> dict[str, np.ndarray]:
    """GBSG2 (686 breast cancer patients) as a job table: numpy columns named by the model."""
    d = load_gbsg2()
    return {
        "age_at_diagnosis": d["age"].to_numpy(float),
        "tumour_size_mm": d["tsize"].to_numpy(float),
        "nodes_positive": d["pnodes"].to_numpy(float),
        "biomarker.PR.value": d["progrec"].to_numpy(float),
        "grade": d["tgrade"].map({"I": "G1", "II": "G2", "III": "G3"}).to_numpy(object),
        "treatment.endocrine": d["horTh"].eq("yes").to_numpy(float),
        "rfs_days": d["time"].to_numpy(float),
        "rfs_event": d["cens"].to_numpy(float),
    }


def deal(table: Table, sizes: Collection[int], seed: int) -> dict[str, Table]:
    """Sites of the given ``sizes``, drawn from ``table``'s rows at random without overlap."""
    order = np.random.default_rng(seed).permutation(len(table["rfs_days"]))
    cuts = np.cumsum([0, *sizes])
    return {
        f"site{i:02d}": {c: v[order[cuts[i] : cuts[i + 1]]] for c, v in table.items()}
        for i in range(len(sizes))
    }


def small_centres(table: Table) -> dict[str, Table]:
    """GBSG2's rows dealt to a consortium of 12 centres of 12 to 20 patients (202 in all)."""
    sizes = np.random.default_rng(7).integers(12, 21, 12)
    centres = deal(table, sizes.tolist(), seed=7)
    counts = [len(t["rfs_days"]) for t in centres.values()]
    assert sum(counts) == 202 and min(counts) >= 12 and max(counts) <= 20
    return centres


def frame(tables: Mapping[str, Table]) -> pd.DataFrame:
    """The pooled rows with the regressions' design columns (age, endocrine therapy and
    log1p of PR) and the site, as a statistician would fit them."""
    rows = [
        pd.DataFrame(
            {
                "age_at_diagnosis": table["age_at_diagnosis"],
                "treatment.endocrine": table["treatment.endocrine"],
                "log1p(biomarker.PR.value)": np.log1p(table["biomarker.PR.value"]),
                "time": table["rfs_days"],
                "event": table["rfs_event"],
                "site": site,
            }
        )
        for site, table in tables.items()
    ]
    return pd.concat(rows, ignore_index=True)


def pooled_rows(tables: Mapping[str, Table]) -> dict[str, np.ndarray]:
    """Every site's rows in one table (only a test may do this)."""
    first = next(iter(tables.values()))
    return {c: np.concatenate([t[c] for t in tables.values()]) for c in first}


def spec(analysis: dict[str, Any]) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {
            "name": "a",
            "dataset": "gbsg2",
            "analysis": analysis,
            "privacy": {"secure_aggregation": True},
        }
    )


@dataclass(frozen=True)
class Rules:
    """A site's policy: small-cell threshold, the per-site rules of its own numbers, and the
    most distinct values of a column that describes groups (the defaults are the policy's)."""

    threshold: int = 11
    per_covariate: int = 10
    min_cohort: int = 20
    discrete_levels: int = 10


OPEN = Rules(threshold=1, per_covariate=1, min_cohort=1)
"""Suppression off (synthetic data only)."""


def plain_run(analysis: AnalysisSpec, tables: Mapping[str, Table], rules: Rules = OPEN) -> Any:
    """The plain analysis: each site's :func:`answer`, the orchestrator's ``close`` (of
    ``analysis`` without secure aggregation)."""
    analysis = analysis.model_copy(update={"privacy": PrivacySpec()})
    state = plain.start(analysis, list(tables))
    while True:
        parts = {
            site: answer(
                analysis,
                table,
                plain.params_for(state, site),
                rules.threshold,
                rules.per_covariate,
                rules.min_cohort,
                rules.discrete_levels,
            )
            for site, table in tables.items()
        }
        outcome = plain.close(analysis, state, parts)
        if not isinstance(outcome, plain.NextRound):
            return outcome
        state = NewtonState.from_json(outcome.state.to_json())


def summed(
    analysis: AnalysisSpec,
    tables: Mapping[str, Table],
    state: NewtonState | None,
    rules: Rules = Rules(),
) -> dict[str, np.ndarray]:
    """The sum of the sites' secure contributions, each checked to fit the layout exactly."""
    layout = secure_layout(analysis)
    total = {
        name: np.zeros(s.shape, np.int64 if s.fraction_bits == 0 else np.float64)
        for name, s in layout.items()
    }
    for site, table in tables.items():
        params = plain.params_for(state, site)
        values = secure_values(analysis, table, params, rules.threshold, rules.discrete_levels)
        assert list(values) == list(layout)
        for name, segment in layout.items():
            assert values[name].shape == segment.shape, name
            assert (values[name].dtype.kind in "iu") == (segment.fraction_bits == 0), name
            total[name] = total[name] + values[name]
    return total


def own_of(analysis: AnalysisSpec, table: Table, rules: Rules) -> OwnEstimate:
    """What a site that shares its estimates sends in the clear beside the first round: its
    own fit, or why it keeps it (as the edge runner sends it)."""
    try:
        return own_fit(
            analysis,
            table,
            rules.threshold,
            rules.per_covariate,
            rules.min_cohort,
            rules.discrete_levels,
        )
    except DataError as exc:
        return OwnEstimate(withheld=str(exc))


def secure_round(
    analysis: AnalysisSpec,
    state: NewtonState | None,
    tables: Mapping[str, Table],
    rules: Rules = Rules(),
    private: Collection[str] = (),
) -> Outcome:
    """One secure round closed at the pooled level (threshold: the sites' own); beside a Newton
    loop's first round the sites not in ``private`` send their own fits."""
    sums = summed(analysis, tables, state, rules)
    first = state is not None and state.pooled.iterations == 0
    own = {
        site: own_of(analysis, table, rules)
        for site, table in tables.items()
        if first and site not in private
    }
    return secure_close(analysis, state, sums, own, list(tables), rules.threshold)


def secure_run(
    analysis: AnalysisSpec,
    tables: Mapping[str, Table],
    rules: Rules = Rules(),
    private: Collection[str] = (),
) -> tuple[Outcome, list[NewtonState]]:
    """The secure analysis to its end, and the Newton states it went through (stored as JSON
    between rounds, as the orchestrator does)."""
    state = plain.start(analysis, list(tables))
    states = []
    while isinstance(outcome := secure_round(analysis, state, tables, rules, private), NextRound):
        state = NewtonState.from_json(outcome.state.to_json())
        states.append(state)
    return outcome, states


def report_of(outcome: Any) -> AnalysisReport:
    """The report of a finished analysis (AssertionError with the reason otherwise)."""
    assert hasattr(outcome, "report"), outcome
    report: AnalysisReport = outcome.report
    return report
