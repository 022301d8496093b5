"""What differential privacy costs the demo's analyses: the DP counts, summary, Kaplan-Meier
curve and logistic regression against the exact ones, on the demo's four hospitals.

GBSG2 (686 patients, shipped with lifelines) is dealt to the demo's hospitals as the demo
deals it (``oncofed.demo.data.site_tables``); each hospital's rows are exported as the demo's
CSV, imported into a ``LocalStore`` in a temporary directory with the demo's mapping, and read
as an edge reads them (``oncofed.cdm.frame.job_table``). Every round is then simulated as the
edges and the orchestrator run it, minus the transport, the masking and the budget ledger:
each site's exact contribution (``secure_values``) gets its share of the Skellam noise
(``add_noise``; variance V / 3 per site: the sites pin each other's keys, as the demo's do,
and an edge's default ``min_secure_sites`` is 3, so the sum of the four sites carries 4V / 3;
a site that has not pinned its peers adds V itself, 3 times the variance), the contributions
are summed, and the orchestrator closes the round (``secure_close``) into the report or the
next Newton round. Each Newton round's coefficients are checked as every edge checks them
(under DP their form only); a round an edge would decline fails the draw. The exact
reference is the same pipeline without differential privacy (secure aggregation on, no noise).
The small-cell threshold is 1 throughout (suppression off), so the figures measure the noise
alone. Draw d seeds its noise with ``np.random.default_rng(d)`` (the same draws at every
epsilon): the figures are reproducible.

At epsilon 1, 2 and 4 (delta 1e-5):

- summary of age at diagnosis (bins 20 to 90): the RMSE of the DP mean, standard deviation and
  median against the exact ones;
- counts, grade by endocrine therapy: the absolute error of the table's inner cells (not the
  margins), mean and 95th percentile over cells and draws; of the 18 inner cells (the levels
  the data model knows, and ``missing``) 6 hold patients, and an empty cell's error is only the
  noise above 0 (noisy counts are cut at zero), so the non-empty cells are reported apart;
- Kaplan-Meier of recurrence-free survival (180-day grid to 2160 days): per draw, the largest
  absolute difference from the exact curve at the times both have (median, 90th and 99th
  percentile over draws), and the survival at the time nearest 5 years (1825 days);
- logistic regression of recurrence within 5 years on age, log1p(positive nodes) and endocrine
  therapy (bounds: age 20 to 80, nodes 0 to 50; 5 Newton rounds): per term, the exact
  coefficient and standard error, the mean DP coefficient, its RMSE against the exact one, the
  standard deviation of z = (DP - exact) / DP se (1 when the reported intervals are honest) and
  how often the DP 95% interval covers the exact coefficient; and the draws that failed. The DP
  pipeline run without noise (clipping to the bounds, the grid, 5 rounds from 0) is reported
  too: what the DP fit misses even without noise.

``.venv/bin/python bench/private_analyses.py [--draws N] [--output FILE]``; figures are
printed and written to ``bench/results-private-analyses.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stamp import write_figures

from oncofed.analytics.design import design
from oncofed.analytics.newton import NewtonState
from oncofed.analytics.outcome import Failed, Finished, NextRound, Outcome
from oncofed.analytics.private import add_noise, declared_ranges, mechanism
from oncofed.analytics.secure import secure_values
from oncofed.analytics.secure_close import secure_close
from oncofed.cdm.frame import check_time_origin, job_table
from oncofed.demo.data import mapping_file, site_tables
from oncofed.edge import EdgePolicy, LocalStore
from oncofed.edge.errors import PolicyViolation
from oncofed.edge.guard.params import check_params
from oncofed.edge.importing import Source, import_source
from oncofed.orchestrator import analysis as orchestrator
from oncofed.privacy.noise import share_variance
from oncofed.wire.analysis import (
    AnalysisParams,
    AnalysisReport,
    AnalysisSpec,
    CountsReport,
    LogisticAnalysis,
    RegressionReport,
    SummaryReport,
    SurvivalReport,
)

EPSILONS = (1.0, 2.0, 4.0)
DELTA = 1e-5
DRAWS = 100
THRESHOLD = 1
"""Small-cell threshold: 1 turns suppression off, so only the noise is measured."""
POLICY = EdgePolicy(trusted_peers=dict.fromkeys(site_tables(), "0" * 16))
"""An edge's default policy with its peers pinned, as the demo's sites pin them: each adds a
share V / 3 of the noise (``min_secure_sites`` 3; ``EdgePolicy.noise_split``)."""
FIVE_YEARS = 1825
COHORT = {"primary_site": "C50", "time_origin": "diagnosis"}
RFS = {"time": "rfs_days", "event": "rfs_event"}
COUNTS = {"type": "counts", "rows": "grade", "columns": "treatment.endocrine"}
KAPLAN_MEIER = {"type": "kaplan_meier", "outcome": RFS, "grid_days": 180, "horizon_days": 2160}
SUMMARY = {"type": "summary", "variable": "age_at_diagnosis", "bins": [20, 40, 50, 60, 70, 90]}
LOGISTIC = {
    "type": "logistic",
    "outcome": {"type": "binary", **RFS, "horizon_days": FIVE_YEARS},
    "covariates": [
        "age_at_diagnosis",
        {"name": "nodes_positive", "transform": "log1p"},
        "treatment.endocrine",
    ],
}
BOUNDS = {"age_at_diagnosis": (20.0, 80.0), "nodes_positive": (0.0, 50.0)}

Table = dict[str, np.ndarray]


def analysis_spec(analysis: Mapping[str, Any], epsilon: float | None, **dp: Any) -> AnalysisSpec:
    """The spec of ``analysis`` under secure aggregation, differentially private at
    ``epsilon`` (with ``dp``'s other settings) or exact (None)."""
    privacy: dict[str, Any] = {"secure_aggregation": True}
    if epsilon is not None:
        privacy["differential_privacy"] = {"epsilon": epsilon, "delta": DELTA, **dp}
    return AnalysisSpec.model_validate(
        {
            "name": f"bench-{analysis['type'].replace('_', '-')}",
            "dataset": "gbsg2",
            "cohort": COHORT,
            "analysis": analysis,
            "privacy": privacy,
        }
    )


def site_stores(root: Path) -> dict[str, LocalStore]:
    """The demo's hospitals, each's GBSG2 rows exported as the demo's CSV and imported into its
    own store under ``root``."""
    mapping = mapping_file("gbsg2.yaml", root)
    stores = {}
    for site, rows in site_tables().items():
        rows.to_csv(root / f"{site}.csv", index=False)
        stores[site] = LocalStore(root / site)
        source = Source("csv", str(root / f"{site}.csv"), mapping)
        import_source(stores[site], "gbsg2", source, threshold=POLICY.small_cell_threshold)
    return stores


def site_job_tables(spec: AnalysisSpec, stores: Mapping[str, LocalStore]) -> dict[str, Table]:
    """Each site's job table for ``spec``, as an edge builds it."""
    tables = {}
    for site, store in stores.items():
        tables[site] = job_table(spec, store.load(spec.dataset))
        check_time_origin(spec, tables[site])
    return tables


def run(
    spec: AnalysisSpec, tables: Mapping[str, Table], rng: np.random.Generator | None = None
) -> Outcome:
    """The analysis over the sites, round by round until it finishes or fails: each site's
    exact contribution, under differential privacy put on the mechanism's grid with its share
    of the noise drawn from ``rng`` (without ``rng``: the private pipeline without noise),
    summed and closed by the orchestrator."""
    dp, sites = spec.privacy.differential_privacy, list(tables)
    rule = None if dp is None else mechanism(spec)
    share = 0.0  # a share's variance in grid steps squared
    if rule is not None and dp is not None and rng is not None:
        share = share_variance(rule.variance(dp.epsilon, dp.delta), POLICY.noise_split)
    noise = 0.0 if rule is None else share * rule.unit**2 * len(sites)
    state = orchestrator.start(spec, sites)
    seen: dict[str, AnalysisParams] = {}
    number = 0
    while True:
        total: dict[str, np.ndarray] = {}
        for site, table in tables.items():
            params = orchestrator.params_for(state, site)
            if params is not None and isinstance(spec.analysis, LogisticAnalysis):
                try:
                    guarded(spec, spec.analysis, number, params, seen.get(site), table)
                except PolicyViolation as exc:
                    return Failed(f"a site's guard declined a round: {exc}")
                seen[site] = params
            values = secure_values(spec, table, params, THRESHOLD, POLICY.discrete_levels)
            if rule is not None:
                values = add_noise(values, rule, share, rng or np.random.default_rng())
            total = {k: total[k] + v for k, v in values.items()} if total else values
        outcome = secure_close(spec, state, total, {}, sites, THRESHOLD, noise=noise)
        if not isinstance(outcome, NextRound):
            return outcome
        state = NewtonState.from_json(outcome.state.to_json())  # as the orchestrator stores it
        number += 1


def guarded(
    spec: AnalysisSpec,
    analysis: LogisticAnalysis,
    number: int,
    params: AnalysisParams,
    previous: AnalysisParams | None,
    table: Table,
) -> None:
    """The edge's check of a Newton round's coefficients (``PolicyViolation``), as
    ``Guard.check_params`` makes it (under DP, of their form only)."""
    data = design(analysis, table)
    check_params(POLICY, number, params, previous, data, secure=True, ranges=declared_ranges(spec))


def report_of(outcome: Outcome) -> AnalysisReport:
    if not isinstance(outcome, Finished):
        raise RuntimeError(f"the exact analysis failed: {outcome}")
    return outcome.report


def finished_draws(
    spec: AnalysisSpec, tables: Mapping[str, Table], draws: int
) -> tuple[list[AnalysisReport], int]:
    """The reports of the ``draws`` noisy runs of ``spec`` that finished (draw d seeded d), and
    how many failed."""
    outcomes = [run(spec, tables, np.random.default_rng(draw)) for draw in range(draws)]
    reports = [outcome.report for outcome in outcomes if isinstance(outcome, Finished)]
    return reports, draws - len(reports)


def noise_sd(report: AnalysisReport) -> float:
    assert report.noise is not None
    return report.noise.sd


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The ``q``th percentile, None of nothing."""
    return float(np.percentile(values, q)) if len(values) else None


# -- counts -------------------------------------------------------------------------------


def inner_cells(report: AnalysisReport) -> np.ndarray:
    """The pooled table's cells without its margins (every one a number: threshold 1)."""
    assert isinstance(report, CountsReport)
    cells = [row[:-1] for row in report.pooled.cells[:-1]]
    assert all(isinstance(c, int) for row in cells for c in row)
    return np.array(cells, dtype=np.float64)


@dataclass(frozen=True)
class CountsResult:
    epsilon: float
    noise_sd: float | None  # None when every draw failed
    mean_abs_error: float | None
    p95_abs_error: float | None
    nonempty_mean_abs_error: float | None
    nonempty_p95_abs_error: float | None
    failed: int


def counts_study(
    tables: Mapping[str, Table], draws: int, epsilons: Sequence[float]
) -> dict[str, Any]:
    """The DP table against the exact one at each epsilon."""
    exact = inner_cells(report_of(run(analysis_spec(COUNTS, None), tables)))
    nonempty = exact > 0
    results = []
    for epsilon in epsilons:
        reports, failed = finished_draws(analysis_spec(COUNTS, epsilon), tables, draws)
        errors = [np.abs(inner_cells(report) - exact) for report in reports]
        sds = [noise_sd(report) for report in reports]
        error = np.array(errors).reshape(len(errors), *exact.shape)
        results.append(
            CountsResult(
                epsilon=epsilon,
                noise_sd=sds[0] if sds else None,
                mean_abs_error=float(error.mean()) if errors else None,
                p95_abs_error=percentile(error.ravel(), 95),
                nonempty_mean_abs_error=float(error[:, nonempty].mean()) if errors else None,
                nonempty_p95_abs_error=percentile(error[:, nonempty].ravel(), 95),
                failed=failed,
            )
        )
    return {
        "analysis": COUNTS,
        "exact_inner_cells": exact.astype(int).tolist(),
        "inner_cells": int(exact.size),
        "nonempty_cells": int(nonempty.sum()),
        "results": [asdict(r) for r in results],
    }


# -- summary ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryResult:
    epsilon: float
    noise_sd: float | None  # None when every draw failed
    mean_rmse: float | None
    sd_rmse: float | None
    median_rmse: float | None
    failed: int


def summary_study(
    tables: Mapping[str, Table], draws: int, epsilons: Sequence[float]
) -> dict[str, Any]:
    """The DP mean, standard deviation and median of age against the exact ones."""

    def figures(report: AnalysisReport) -> tuple[float, float, float]:
        assert isinstance(report, SummaryReport)
        pooled = report.pooled
        median = pooled.quantiles["0.5"]
        assert pooled.mean is not None and pooled.sd is not None and median is not None
        return pooled.mean, pooled.sd, median

    exact = np.array(figures(report_of(run(analysis_spec(SUMMARY, None), tables))))
    results = []
    for epsilon in epsilons:
        reports, failed = finished_draws(analysis_spec(SUMMARY, epsilon), tables, draws)
        errors = [np.array(figures(report)) - exact for report in reports]
        sds = [noise_sd(report) for report in reports]
        rmse = [_float(v) for v in np.sqrt(np.mean(np.square(errors), axis=0))] if errors else []
        mean, sd, median = rmse or [None, None, None]
        results.append(SummaryResult(epsilon, sds[0] if sds else None, mean, sd, median, failed))
    names = ("mean", "sd", "median")
    return {
        "analysis": SUMMARY,
        "exact": dict(zip(names, exact.tolist(), strict=True)),
        "results": [asdict(r) for r in results],
    }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- Kaplan-Meier -------------------------------------------------------------------------


def curve_of(report: AnalysisReport) -> dict[float, float] | None:
    """The ungrouped curve's survival by time, None when the report has none."""
    assert isinstance(report, SurvivalReport)
    curve = report.groups.get("all")
    return None if curve is None else dict(zip(curve.time, curve.survival, strict=True))


@dataclass(frozen=True)
class CurveResult:
    epsilon: float
    noise_sd: float | None
    median_max_diff: float | None  # over draws, of the largest |S_dp - S| along the curve
    p90_max_diff: float | None
    p99_max_diff: float | None
    max_max_diff: float | None
    survival_5y_mean: float | None  # at the exact curve's time nearest 5 years
    survival_5y_sd: float | None
    shorter: int  # draws whose curve misses some of the exact curve's times
    failed: int


def curves_study(
    tables: Mapping[str, Table], draws: int, epsilons: Sequence[float]
) -> dict[str, Any]:
    """The DP curve against the exact one at each epsilon."""
    exact = curve_of(report_of(run(analysis_spec(KAPLAN_MEIER, None), tables)))
    assert exact is not None
    five = min(exact, key=lambda t: abs(t - FIVE_YEARS))
    results = []
    for epsilon in epsilons:
        spec = analysis_spec(KAPLAN_MEIER, epsilon)
        largest, at_five, sds, shorter, failed = [], [], [], 0, 0
        for draw in range(draws):
            outcome = run(spec, tables, np.random.default_rng(draw))
            report = outcome.report if isinstance(outcome, Finished) else None
            noisy = None if report is None else curve_of(report)
            if report is None or noisy is None:
                failed += 1
                continue
            common = [t for t in exact if t in noisy]
            shorter += len(common) < len(exact)
            largest.append(max(abs(noisy[t] - exact[t]) for t in common))
            if five in noisy:
                at_five.append(noisy[five])
            sds.append(noise_sd(report))
        results.append(
            CurveResult(
                epsilon=epsilon,
                noise_sd=sds[0] if sds else None,
                median_max_diff=percentile(largest, 50),
                p90_max_diff=percentile(largest, 90),
                p99_max_diff=percentile(largest, 99),
                max_max_diff=max(largest, default=None),
                survival_5y_mean=float(np.mean(at_five)) if at_five else None,
                survival_5y_sd=float(np.std(at_five)) if at_five else None,
                shorter=shorter,
                failed=failed,
            )
        )
    return {
        "analysis": KAPLAN_MEIER,
        "exact": {"time": list(exact), "survival": list(exact.values())},
        "time_5y": five,
        "exact_survival_5y": exact[five],
        "results": [asdict(r) for r in results],
    }


# -- logistic regression ------------------------------------------------------------------


def terms_of(report: AnalysisReport) -> np.ndarray:
    """(terms, 4): each term's coefficient, standard error and confidence bounds."""
    assert isinstance(report, RegressionReport)
    return np.array([(t.coef, t.se, t.lower, t.upper) for t in report.terms])


def names_of(report: AnalysisReport) -> list[str]:
    assert isinstance(report, RegressionReport)
    return [t.name for t in report.terms]


@dataclass(frozen=True)
class TermResult:
    name: str
    mean_coef: float | None
    mean_se: float | None  # the DP report's standard error, averaged
    rmse: float | None  # of the DP coefficient against the exact one
    sd_z: float | None  # of (DP - exact) / DP se: 1 when the intervals are honest
    mean_z: float | None
    coverage: float | None  # of the exact coefficient by the DP 95% interval


@dataclass(frozen=True)
class RegressionResult:
    epsilon: float
    noise_sd: float | None  # per number of the derivatives, in scaled columns
    terms: list[TermResult]
    failed: int
    failures: dict[str, int]  # each reason, with its draws


def regression_study(
    tables: Mapping[str, Table], draws: int, epsilons: Sequence[float]
) -> dict[str, Any]:
    """The DP fit against the exact one at each epsilon, and the DP pipeline without noise."""
    reference = report_of(run(analysis_spec(LOGISTIC, None), tables))
    names, exact = names_of(reference), terms_of(reference)
    clean = terms_of(report_of(run(analysis_spec(LOGISTIC, EPSILONS[0], bounds=BOUNDS), tables)))
    results = []
    for epsilon in epsilons:
        spec = analysis_spec(LOGISTIC, epsilon, bounds=BOUNDS)
        fits, sds, failures = [], [], []
        for draw in range(draws):
            outcome = run(spec, tables, np.random.default_rng(draw))
            if isinstance(outcome, Failed):
                failures.append(outcome.error)
                continue
            assert isinstance(outcome, Finished)
            fits.append(terms_of(outcome.report))
            sds.append(noise_sd(outcome.report))
        fit = np.array(fits).reshape(len(fits), len(names), 4)
        coef, se, lower, upper = fit[..., 0], fit[..., 1], fit[..., 2], fit[..., 3]
        z = (coef - exact[:, 0]) / se
        covered = (lower <= exact[:, 0]) & (exact[:, 0] <= upper)
        some = bool(fits)
        terms = [
            TermResult(
                name=name,
                mean_coef=float(coef[:, i].mean()) if some else None,
                mean_se=float(se[:, i].mean()) if some else None,
                rmse=float(np.sqrt(np.mean((coef[:, i] - exact[i, 0]) ** 2))) if some else None,
                sd_z=float(z[:, i].std()) if some else None,
                mean_z=float(z[:, i].mean()) if some else None,
                coverage=float(np.mean(covered[:, i])) if some else None,
            )
            for i, name in enumerate(names)
        ]
        results.append(
            RegressionResult(
                epsilon=epsilon,
                noise_sd=sds[0] if sds else None,
                terms=terms,
                failed=len(failures),
                failures=dict(Counter(failures).most_common()),
            )
        )
    return {
        "analysis": LOGISTIC,
        "bounds": BOUNDS,
        "newton_rounds": mechanism(analysis_spec(LOGISTIC, EPSILONS[0], bounds=BOUNDS)).rounds,
        "exact": [
            {"name": n, "coef": float(c), "se": float(s)}
            for n, (c, s, _, _) in zip(names, exact, strict=True)
        ],
        "noise_free": [
            {"name": n, "coef": float(c), "se": float(s)}
            for n, (c, s, _, _) in zip(names, clean, strict=True)
        ],
        "results": [asdict(r) for r in results],
    }


# -- the figures --------------------------------------------------------------------------


def _f(value: float | None, spec: str, width: int) -> str:
    """``value`` formatted to ``width``, or a dash for none."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


def counts_table(study: dict[str, Any], draws: int) -> list[str]:
    cells, nonempty = study["inner_cells"], study["nonempty_cells"]
    rows = [
        f"Counts, grade x endocrine therapy: |DP - exact| of the {cells} inner cells",
        f"          noise   all {cells} cells     {nonempty} non-empty",
        "epsilon      sd    mean     p95     mean     p95   failed",
    ]
    for r in study["results"]:
        rows.append(
            f"{r['epsilon']:>7g} {_f(r['noise_sd'], '.2f', 7)} "
            f"{_f(r['mean_abs_error'], '.2f', 7)} {_f(r['p95_abs_error'], '.1f', 7)}  "
            f"{_f(r['nonempty_mean_abs_error'], '.2f', 7)} "
            f"{_f(r['nonempty_p95_abs_error'], '.1f', 7)} {r['failed']:>5d}/{draws}"
        )
    return rows


def summary_table(study: dict[str, Any], draws: int) -> list[str]:
    exact = study["exact"]
    rows = [
        "Summary of age at diagnosis (bins 20, 40, 50, 60, 70, 90): RMSE against exact",
        f"exact mean {exact['mean']:.2f}, sd {exact['sd']:.2f}, median {exact['median']:.2f}",
        "          noise",
        "epsilon      sd    mean      sd  median   failed",
    ]
    for r in study["results"]:
        rows.append(
            f"{r['epsilon']:>7g} {_f(r['noise_sd'], '.2f', 7)} {_f(r['mean_rmse'], '.2f', 7)} "
            f"{_f(r['sd_rmse'], '.2f', 7)} {_f(r['median_rmse'], '.2f', 7)} "
            f"{r['failed']:>5d}/{draws}"
        )
    return rows


def curves_table(study: dict[str, Any], draws: int) -> list[str]:
    km = study["analysis"]
    five = f"S({study['time_5y']:g} days)"
    rows = [
        f"Kaplan-Meier of recurrence-free survival ({km['grid_days']}-day grid to "
        f"{km['horizon_days']} days)",
        f"exact {five}: {study['exact_survival_5y']:.3f}",
        f"          noise   largest |DP - exact| on a curve    DP {five}",
        "epsilon      sd   median     p90     p99     max      mean      sd   failed",
    ]
    for r in study["results"]:
        rows.append(
            f"{r['epsilon']:>7g} {_f(r['noise_sd'], '.2f', 7)} "
            f"{_f(r['median_max_diff'], '.3f', 8)} {_f(r['p90_max_diff'], '.3f', 7)} "
            f"{_f(r['p99_max_diff'], '.3f', 7)} {_f(r['max_max_diff'], '.3f', 7)}   "
            f"{_f(r['survival_5y_mean'], '.3f', 7)} {_f(r['survival_5y_sd'], '.3f', 7)} "
            f"{r['failed']:>5d}/{draws}"
        )
    short = ", ".join(str(r["shorter"]) for r in study["results"])
    rows.append(f"curves ending before the exact one: {short} of {draws} draws")
    return rows


def regression_table(study: dict[str, Any], draws: int) -> list[str]:
    lg = study["analysis"]
    bounds = ", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in study["bounds"].items())
    rows = [
        f"Logistic regression, recurrence within {lg['outcome']['horizon_days']} days "
        f"({study['newton_rounds']} Newton rounds)",
        f"bounds: {bounds}",
        "term                       exact      se   DP without noise",
    ]
    for e, c in zip(study["exact"], study["noise_free"], strict=True):
        rows.append(f"{e['name']:<22} {e['coef']:>9.3f} {e['se']:>7.3f} {c['coef']:>18.3f}")
    for r in study["results"]:
        rows += [
            "",
            f"epsilon {r['epsilon']:g}: noise sd {_f(r['noise_sd'], '.3f', 0)} per number of "
            f"the scaled derivatives; {r['failed']}/{draws} failed",
            "term                     DP mean    RMSE   DP se    sd z  mean z   cover",
        ]
        for t in r["terms"]:
            rows.append(
                f"{t['name']:<22} {_f(t['mean_coef'], '.3f', 9)} {_f(t['rmse'], '.3f', 7)} "
                f"{_f(t['mean_se'], '.3f', 7)} {_f(t['sd_z'], '.2f', 7)} "
                f"{_f(t['mean_z'], '+.2f', 7)} {_f(t['coverage'], '.2f', 7)}"
            )
        for reason, times in r["failures"].items():
            rows += textwrap.wrap(
                f"{times} failed: {reason}", 80, initial_indent="  ", subsequent_indent="    "
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=DRAWS, help="noise draws per epsilon")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).with_name("results-private-analyses.json"),
    )
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    began = time.perf_counter()
    studies, seconds = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        stores = site_stores(Path(folder))
        for name, study, analysis in (
            ("counts", counts_study, COUNTS),
            ("summary", summary_study, SUMMARY),
            ("kaplan_meier", curves_study, KAPLAN_MEIER),
            ("logistic", regression_study, LOGISTIC),
        ):
            started = time.perf_counter()
            tables = site_job_tables(analysis_spec(analysis, None), stores)
            studies[name] = study(tables, args.draws, EPSILONS)
            seconds[name] = round(time.perf_counter() - started, 1)
        sizes = {site: len(t["time_origin"]) for site, t in tables.items()}
    figures = {
        "sites": sizes,
        "patients": sum(sizes.values()),
        "draws": args.draws,
        "epsilons": list(EPSILONS),
        "delta": DELTA,
        "small_cell_threshold": THRESHOLD,
        "noise_split": POLICY.noise_split,
        **studies,
        "seconds_by_analysis": seconds,
        "seconds": round(time.perf_counter() - began, 1),
    }
    write_figures(args.output, figures)
    hospitals = ", ".join(f"{site} {n}" for site, n in sizes.items())
    lines = [
        "Differentially private analyses against the exact ones: the noise's cost",
        f"GBSG2 at the demo's hospitals ({hospitals}),",
        f"{args.draws} draws per epsilon, delta {DELTA:g}, small-cell threshold {THRESHOLD}, "
        f"noise shares of 1/{POLICY.noise_split} (peers pinned)",
        "",
        *counts_table(studies["counts"], args.draws),
        "",
        *summary_table(studies["summary"], args.draws),
        "",
        *curves_table(studies["kaplan_meier"], args.draws),
        "",
        *regression_table(studies["logistic"], args.draws),
        "",
        f"{figures['seconds']} s; written to {args.output}",
    ]
    print("\n".join(line.rstrip() for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
