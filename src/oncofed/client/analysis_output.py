"""An analysis report as files (``report.json``, tidy CSV tables, PNG plots) and as a terminal
table. Counts appear as published: a number, ``"<11"`` or ``"suppressed"``."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from rich.console import Group, RenderableType
from rich.table import Table

from oncofed._text import as_text, figure_text
from oncofed.client.figures import (
    INTERCEPT,
    UNIT_DAYS,
    TimeUnit,
    clip_arrows,
    endpoint,
    footnote,
    label,
    ratio_ticks,
    released,
    site_note,
    time_unit,
    unit_times,
    variable_name,
)
from oncofed.client.sites_view import render_sites
from oncofed.wire.analysis import (
    Analysis,
    AnalysisReport,
    CountsReport,
    CountTable,
    Curve,
    Heterogeneity,
    KaplanMeierAnalysis,
    RegressionReport,
    Summary,
    SummaryReport,
    SurvivalReport,
    Term,
)
from oncofed.wire.messages import Participation
from oncofed.wire.profile import Cell

Rows = list[Sequence[object]]
Tables = dict[str, tuple[list[str], Rows]]
POOLED = "pooled"
_TERM_COLUMNS = ["term", *list(Term.model_fields)[1:]]
_HETEROGENEITY_COLUMNS = ["term", *list(Heterogeneity.model_fields)[1:]]
_MARGIN = 1.02
"""The Kaplan-Meier plot's time axis runs this far beyond the curves' end, so that a last drop
there is seen."""
_RATIO_RANGE = (1e-200, 1e200)
"""The widest ratio axis a forest plot draws."""
_FOREST_KEY = (
    "◆ all sites pooled (bold rows); ● each site's own fit; arrow: interval beyond the axis"
)


def write_analysis(
    report: AnalysisReport,
    name: str,
    out: Path,
    participation: Participation | None = None,
    provenance: Mapping[str, object] | None = None,
    analysis: Analysis | None = None,
) -> list[Path]:
    """``report.json`` (the analysis name, the report and, when given, the ``participation``
    of every site and the job's ``provenance``, :func:`~oncofed.client.report.provenance`),
    the report's tidy CSV tables and its plots (titled from the ``analysis`` spec when given)
    in ``out``; the paths written, in that order."""
    out.mkdir(parents=True, exist_ok=True)
    document = out / "report.json"
    content: dict[str, object] = {"name": name, **report.model_dump(mode="json")}
    if participation is not None:
        content["participation"] = participation.model_dump(mode="json")
    if provenance is not None:
        content["provenance"] = dict(provenance)
    document.write_text(json.dumps(content, indent=2) + "\n")
    paths = [document]
    for filename, (header, rows) in _tables(report).items():
        path = out / filename
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(["" if v is None else v for v in row] for row in rows)
        paths.append(path)
    for filename, figure in _figures(report, analysis).items():
        figure.savefig(out / filename, dpi=110)
        paths.append(out / filename)
    return paths


# -- tables --------------------------------------------------------------------------------


def _tables(report: AnalysisReport) -> Tables:
    """The CSV files of a report: file name, header and one row per observation."""
    if isinstance(report, CountsReport):
        return {"counts.csv": _counts_table(report)}
    if isinstance(report, SummaryReport):
        return _summary_tables(report)
    if isinstance(report, SurvivalReport):
        return _survival_tables(report)
    return {
        "coefficients.csv": (
            ["site", *_TERM_COLUMNS],
            [
                [site, *term.model_dump().values()]
                for site, terms in {POOLED: report.terms, **report.sites}.items()
                for term in terms
            ],
        ),
        "heterogeneity.csv": (
            _HETEROGENEITY_COLUMNS,
            [list(h.model_dump().values()) for h in report.heterogeneity],
        ),
    }


def _grid(table: CountTable, one_way: bool) -> tuple[list[str], list[str], list[list[Cell]]]:
    """Row labels, column labels and cells of a table, the margins labelled ``total``; a
    one-way table keeps its single column of counts (with the total as its last row)."""
    columns = table.columns[:1] if one_way else [*table.columns, "total"]
    return [*table.rows, "total"], columns, [row[: len(columns)] for row in table.cells]


def _counts_table(report: CountsReport) -> tuple[list[str], Rows]:
    one_way = len(report.variables) == 1
    rows: Rows = []
    for site, table in {POOLED: report.pooled, **report.sites}.items():
        levels, columns, cells = _grid(table, one_way)
        for level, counts in zip(levels, cells, strict=True):
            rows += [
                [site, level, count] if one_way else [site, level, column, count]
                for column, count in zip(columns, counts, strict=True)
            ]
    return (["site", "row", "count"] if one_way else ["site", "row", "column", "count"]), rows


def _quantile_column(key: str) -> str:
    """``0.25`` -> ``q_0_25``: a quantile's key as a lower_snake_case column name."""
    return re.sub(r"[^a-z0-9]+", "_", f"q_{key}".lower()).strip("_")


def _binned(report: SummaryReport, summary: Summary) -> tuple[list[Cell], Cell | None]:
    """A summary's counts in the bins (the two open ones included), and the patients without
    a value (the histogram's last count; None in a report without it)."""
    intervals = len(report.bins) + 1
    counts = summary.histogram
    return counts[:intervals], counts[intervals] if len(counts) > intervals else None


def _summary_tables(report: SummaryReport) -> Tables:
    summaries = {POOLED: report.pooled, **report.sites}
    keys = list(report.pooled.quantiles)
    edges = [-np.inf, *report.bins, np.inf]
    binned = {site: _binned(report, s) for site, s in summaries.items()}
    return {
        "summary.csv": (
            ["site", "n", "missing", "mean", "sd", *map(_quantile_column, keys)],
            [
                [site, s.n, binned[site][1], s.mean, s.sd, *(s.quantiles.get(k) for k in keys)]
                for site, s in summaries.items()
            ],
        ),
        "histogram.csv": (
            ["site", "lower", "upper", "count"],
            [
                [site, lower, upper, count]
                for site in summaries
                for lower, upper, count in zip(edges[:-1], edges[1:], binned[site][0], strict=True)
            ],
        ),
    }


def _survival_tables(report: SurvivalReport) -> Tables:
    columns = ["time", "survival", "lower", "upper", "at_risk", "events"]
    tables: Tables = {
        "survival.csv": (
            ["group", *columns],
            [
                [group, *values]
                for group, curve in report.groups.items()
                for values in zip(*(getattr(curve, c) for c in columns), strict=True)
            ],
        )
    }
    if report.logrank is not None:
        test = report.logrank.model_dump()
        tables["logrank.csv"] = (list(test), [list(test.values())])
    return tables


# -- plots ---------------------------------------------------------------------------------


def _figures(report: AnalysisReport, analysis: Analysis | None = None) -> dict[str, Figure]:
    """The plots of a report by file name; ``analysis``, its spec when known, names a survival
    curve's endpoint and grouping."""
    if isinstance(report, SurvivalReport):
        km = analysis if isinstance(analysis, KaplanMeierAnalysis) else None
        return {"kaplan_meier.png": survival_figure(report, km)}
    if isinstance(report, RegressionReport):
        return {"forest.png": forest_figure(report)}
    if isinstance(report, SummaryReport):
        return {"histogram.png": histogram_figure(report)}
    return {}


def regular_times(end: float, grid_days: int, bins: int = 6) -> list[float]:
    """Round times from 0 to ``end`` on the grid's bin edges (multiples of ``grid_days``)."""
    steps = MaxNLocator(nbins=bins, integer=True).tick_values(0, end / grid_days)
    return [float(s * grid_days) for s in steps if 0 <= s * grid_days <= end]


def numbers_at_risk(curve: Curve, times: Sequence[float], grid_days: int) -> list[int | None]:
    """At each of ``times``, the patients at risk at the start of the grid bin holding it (bin k
    is [k g, (k + 1) g) for a grid of g days); None once the curve has ended."""
    bins = np.floor_divide(times, grid_days).astype(np.int64)
    return [curve.at_risk[k] if k < len(curve.at_risk) else None for k in bins]


def survival_at(curve: Curve, time: float) -> tuple[float, float, float] | None:
    """Survival with its confidence interval at ``time``: at the last point of the curve up to
    it (1 before the first); None after the curve has ended."""
    if not curve.time or time > curve.time[-1]:
        return None
    k = int(np.searchsorted(curve.time, time, side="right")) - 1
    return (1.0, 1.0, 1.0) if k < 0 else (curve.survival[k], curve.lower[k], curve.upper[k])


def _end(report: SurvivalReport) -> float:
    return max((c.time[-1] for c in report.groups.values() if c.time), default=report.grid_days)


def _logrank(report: SurvivalReport) -> str:
    test = report.logrank
    if test is None:
        return ""
    return f"log-rank chi2 = {test.statistic:.2f}, df = {test.df}, p = {test.p:.2g}"


def survival_figure(
    report: SurvivalReport,
    analysis: KaplanMeierAnalysis | None = None,
    unit: TimeUnit | None = None,
) -> Figure:
    """Kaplan-Meier step curves, one per group with its shaded confidence band; the endpoint
    and grouping of ``analysis`` (when given) and the log-rank test in the title; time in
    ``unit`` (by default :func:`~oncofed.client.figures.time_unit` of the curves' end); the
    numbers at risk under the axes at its ticks; a hollow circle on each step whose events may
    have been held back by small-cell suppression and shown together
    (:func:`~oncofed.client.figures.released`); the groups withheld and the sites left out
    named under the plot."""
    groups = list(report.groups.items())
    end = _end(report)
    unit = unit or time_unit(end)
    times = regular_times(end, report.grid_days) if unit == "days" else unit_times(end, unit)
    notes = [_withheld(report)] if report.withheld else []
    if report.excluded:
        notes.append(site_note("not in the result", report.excluded))
    height = 5 + 0.25 * len(groups) + 0.3 * len(notes)
    fig = Figure(figsize=(8, height), layout="constrained")
    ax, table = fig.subplots(2, 1, sharex=True, height_ratios=[5, 0.6 + 0.3 * len(groups)])
    marked = False
    for row, (group, curve) in enumerate(groups):
        color = f"C{row}"
        x, y = [0.0, *curve.time], [1.0, *curve.survival]
        ax.step(x, y, where="post", color=color, label=label(group))
        ax.fill_between(
            x,
            [1.0, *curve.lower],
            [1.0, *curve.upper],
            step="post",
            color=color,
            alpha=0.2,
            linewidth=0,
        )
        if steps := released(curve):
            drops = [(x[k + 1], (y[k] + y[k + 1]) / 2) for k in steps]
            ax.plot(*zip(*drops, strict=True), "o", mfc="white", mec=color, ms=5, zorder=3)
            marked = True
        for t, n in zip(times, numbers_at_risk(curve, times, report.grid_days), strict=True):
            table.text(t, row, "-" if n is None else str(n), ha="center", va="center", fontsize=8)
    ax.set(ylim=(0.0, 1.02), xlim=(0.0, end * _MARGIN))
    ax.set_ylabel(f"{endpoint(analysis) if analysis else 'survival'} probability".capitalize())
    ax.set_xticks(times, [f"{t / UNIT_DAYS[unit]:g}" for t in times])
    ax.tick_params(labelbottom=True)
    ax.set_xlabel(
        f"{unit} (counted on a {report.grid_days}-day grid; shaded: "
        f"{report.confidence:.0%} confidence band)"
    )
    handles, _ = ax.get_legend_handles_labels()
    if marked:
        handles.append(
            Line2D([], [], linestyle="", marker="o", mfc="white", mec="black", ms=5,
                   label="events possibly held back (small cells) and shown together")
        )  # fmt: skip
    title = analysis.group if analysis and analysis.group else None
    ax.legend(handles=handles, fontsize=8, loc="lower left", title=label(title) if title else None)
    ax.grid(alpha=0.3)
    ax.set_title(_survival_title(report, analysis))
    table.set_ylim(len(groups) - 0.5, -0.5)
    table.set_yticks(range(len(groups)), [label(g) for g, _ in groups], fontsize=8)
    for row, tick in enumerate(table.get_yticklabels()):
        tick.set_color(f"C{row}")
    table.tick_params(bottom=False, labelbottom=False, left=False, pad=18)
    table.set_title("number at risk", fontsize=9, loc="left")
    for spine in table.spines.values():
        spine.set_visible(False)
    footnote(fig, notes)
    return fig


def _survival_title(report: SurvivalReport, analysis: KaplanMeierAnalysis | None) -> str:
    """ "Recurrence-free survival by histologic grade" (or "Kaplan-Meier survival" without the
    analysis), then the log-rank test on a line of its own."""
    title = "Kaplan-Meier survival"
    if analysis is not None:
        title = endpoint(analysis)
        if analysis.group is not None:
            title += f" by {figure_text(variable_name(analysis.group))}"
    return f"{title}\n{_logrank(report)}" if report.logrank else title


def _withheld(report: SurvivalReport) -> str:
    """The groups not reported, and why; empty when every group is."""
    if not report.withheld:
        return ""
    where = "at every site" if report.secure_sites is None else "in all"
    return (
        f"not reported: {', '.join(report.withheld)} (no patients, or too few patients or "
        f"events {where})"
    )


def forest_figure(report: RegressionReport) -> Figure:
    """Hazard or odds ratios with their confidence intervals on a log axis: per term (never a
    logistic model's intercept, which is no ratio) the pooled estimate (a black diamond) above
    each site's own, each row's ratio and interval printed at its right (I^2 beside the pooled
    one), an arrow where an interval runs beyond the axis, a reference line at 1, and the sites
    left out or in the pooled fit only named under the plot. Each row is labelled: a term's
    name (bold) on its pooled row, a site's name in its colour on its own."""
    names = [t.name for t in _ratio_terms(report.terms)]
    series = {"all sites": report.terms, **report.sites}
    step = len(series) + 1
    notes = [_FOREST_KEY] + [
        site_note(heading, sites)
        for heading, sites in (
            ("not in the result", report.excluded),
            ("in the pooled fit, no estimates of their own", report.pooled_only),
        )
        if sites
    ]
    height = 1.5 + 0.25 * step * len(names) + 0.3 * len(notes)
    fig = Figure(figsize=(8, height), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    limits = _ratio_limits(report)
    ax.xaxis.set_major_locator(LogLocator(subs=ratio_ticks(*limits)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(*limits)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    i2 = {h.name: f"   I² = {h.i2:.0%}" for h in report.heterogeneity}
    labels: dict[int, tuple[str, str]] = {}
    for j, (site, terms) in enumerate(series.items()):
        shown = [t for t in terms if t.name in names]
        color = "black" if j == 0 else f"C{j - 1}"
        rows = [-(names.index(t.name) * step + j) for t in shown]
        ratios = np.array([[t.ratio, t.ratio_lower, t.ratio_upper] for t in shown]).reshape(-1, 3)
        ax.errorbar(
            ratios[:, 0],
            rows,
            xerr=[ratios[:, 0] - ratios[:, 1], ratios[:, 2] - ratios[:, 0]],
            fmt="D" if j == 0 else "o",
            color=color,
            markersize=7 if j == 0 else 4,
            linewidth=2 if j == 0 else 1,
            capsize=0 if j == 0 else 2,
            label=label(site),
        )
        for t, y in zip(shown, rows, strict=True):
            clip_arrows(ax, y, t.ratio_lower, t.ratio_upper, color)
            labels[y] = (label(t.name if j == 0 else site), color)
            text = _interval(t.ratio, t.ratio_lower, t.ratio_upper)
            if j == 0:
                text += i2.get(t.name, "")
            _beside(ax, y, text, color, "bold" if j == 0 else "normal")
    _beside(ax, 0.9, f"{report.ratio_name} ({report.confidence:.0%} CI)", "black", "bold")
    ticks = sorted(labels, reverse=True)
    ax.set_yticks(ticks, [labels[y][0] for y in ticks], fontsize=8)
    for y, tick in zip(ticks, ax.get_yticklabels(), strict=True):
        tick.set_color(labels[y][1])
        tick.set_fontweight("bold" if y % step == 0 else "normal")
    ax.set_ylim(-(len(names) * step - 1), 1.5)
    ax.set_xlabel(f"{report.ratio_name} ({report.confidence:.0%} CI, log scale)")
    ax.set_title(_regression_title(report))
    ax.grid(axis="x", alpha=0.3)
    footnote(fig, notes)
    return fig


def _beside(ax: Axes, y: float, text: str, color: str, weight: str) -> None:
    """``text`` in the column right of ``ax``, at its row ``y``."""
    ax.annotate(
        text,
        (1.0, y),
        xycoords=ax.get_yaxis_transform(),
        xytext=(8, 0),
        textcoords="offset points",
        va="center",
        fontsize=8,
        color=color,
        fontweight=weight,
        annotation_clip=False,
    )


def _ratio_terms(terms: Sequence[Term]) -> list[Term]:
    """The terms that have a ratio: all but a logistic model's intercept."""
    return [t for t in terms if t.name != INTERCEPT]


def _ratio_limits(report: RegressionReport) -> tuple[float, float]:
    """The pooled intervals, 1 and the sites' estimates (no intercept's), these within a factor
    of 100 of the pooled intervals so that one site's wide interval leaves the pooled ones
    readable; held within [1e-200, 1e200] (a bound can underflow to 0 or pass a float's range)."""
    terms = _ratio_terms(report.terms)
    pooled = [1.0, *(r for t in terms for r in (t.ratio_lower, t.ratio_upper))]
    low, high = max(min(pooled), _RATIO_RANGE[0]), min(max(pooled), _RATIO_RANGE[1])
    own = [t.ratio for terms in report.sites.values() for t in _ratio_terms(terms)]
    shown = np.clip([low, high, *own], low / 100, high * 100)
    return float(shown.min()) / 1.25, min(float(shown.max()) * 1.25, _RATIO_RANGE[1])


def histogram_figure(report: SummaryReport) -> Figure:
    """The pooled histogram on the shared bins, the two open bins (below the first edge, above
    the last) drawn lighter at their neighbour's width, hidden counts hatched and labelled."""
    edges = np.asarray(report.bins)
    widths = np.diff(edges)
    left = np.concatenate([[edges[0] - widths[0]], edges])
    width = np.concatenate([[widths[0]], widths, [widths[-1]]])
    counts, _ = _binned(report, report.pooled)
    shown = np.array([isinstance(c, int) for c in counts])
    colors = np.array(["lightsteelblue", *["C0"] * len(widths), "lightsteelblue"])
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(
        left[shown],
        [c for c in counts if isinstance(c, int)],
        width=width[shown],
        align="edge",
        color=colors[shown],
        edgecolor="white",
    )
    for k in np.flatnonzero(~shown):
        ax.axvspan(left[k], left[k] + width[k], fill=False, hatch="//", edgecolor="grey")
        ax.text(
            left[k] + width[k] / 2,
            0.97,
            str(counts[k]),
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="center",
            va="top",
            fontsize=7,
        )
    if not shown.all():
        hidden = Patch(fill=False, hatch="//", edgecolor="grey", label="hidden count")
        ax.legend(handles=[hidden], fontsize=8)
    s = report.pooled
    variable = figure_text(report.variable)
    ax.set(
        xlabel=f"{variable} (outer bars: below {edges[0]:g}, {edges[-1]:g} and above)",
        ylabel="patients",
        title=f"{variable}: n = {s.n}, mean = {_num(s.mean)}, sd = {_num(s.sd)}",
    )
    return fig


# -- terminal ------------------------------------------------------------------------------


def render_analysis(
    report: AnalysisReport, participation: Participation | None = None
) -> RenderableType:
    """The report's main table for the terminal, then the sites: the ``participation`` table
    when given, else the report's notes on the sites not in it and those in the pooled fit
    only. Text from the report is shown as is, never read as markup."""
    if isinstance(report, CountsReport):
        main = _render_counts(report)
    elif isinstance(report, SummaryReport):
        main = _render_summary(report)
    elif isinstance(report, SurvivalReport):
        main = _render_survival(report)
    else:
        main = _render_regression(report)
    notes: list[RenderableType] = []
    if report.secure_sites is not None:
        notes.append(as_text(f"securely aggregated over: {', '.join(report.secure_sites)}"))
    if (noise := report.noise) is not None:
        notes.append(
            as_text(
                f"differentially private: epsilon {noise.epsilon:g} (delta {noise.delta:g}) at "
                f"each site; noise of s.d. {noise.sd:.3g} in every number summed"
            )
        )
    if participation is not None:
        return Group(main, *notes, render_sites(participation))
    for heading, sites in (
        ("not in the result", report.excluded),
        ("in the pooled fit, not in the per-site estimates", report.pooled_only),
    ):
        if sites:
            listed = "; ".join(f"{site} ({why})" for site, why in sites.items())
            notes.append(as_text(f"{heading}: {listed}"))
    return Group(main, *notes) if notes else main


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _estimate(value: float) -> str:
    """Two decimals from 0.1 to 1000, else three significant digits."""
    return f"{value:.2f}" if 0.1 <= value < 1000 else f"{value:.3g}"


def _interval(value: float, lower: float, upper: float) -> str:
    return f"{_estimate(value)} ({_estimate(lower)}, {_estimate(upper)})"


def _framed(heading: str, *tables: Table, footer: str = "") -> RenderableType:
    """Tables with a line above them and, when given, one below (not wrapped to their width)."""
    return Group(as_text(heading, style="bold"), *tables, *([as_text(footer)] if footer else []))


def _table(first: str, *numbers: str) -> Table:
    """A table with a label column and right-aligned columns of numbers. Numbers are never
    wrapped; on a narrow terminal a long label folds onto a second line instead."""
    table = Table()
    table.add_column(as_text(first), overflow="fold")
    for header in numbers:
        table.add_column(as_text(header), justify="right", no_wrap=True)
    return table


def _row(table: Table, *cells: object, style: str = "") -> None:
    table.add_row(*(as_text(c, style=style) for c in cells))


def _render_counts(report: CountsReport) -> RenderableType:
    one_way = len(report.variables) == 1
    levels, columns, cells = _grid(report.pooled, one_way)
    totals = " · ".join(
        f"{site} {_grid(t, one_way)[2][-1][-1]}" for site, t in report.sites.items()
    )
    table = _table(report.variables[0], *columns)
    for level, counts in zip(levels, cells, strict=True):
        _row(table, level, *counts, style="bold" if level == "total" else "")
    heading = f"{' by '.join(report.variables)}, all sites"
    return _framed(heading, table, footer=f"patients per site: {totals}" if totals else "")


def _render_summary(report: SummaryReport) -> RenderableType:
    keys = list(report.pooled.quantiles)
    table = _table("site", "n", "missing", "mean", "sd", *(f"q {k}" for k in keys))
    for site, s in {**report.sites, "all sites": report.pooled}.items():
        missing = _binned(report, s)[1]
        _row(
            table,
            site,
            s.n,
            "-" if missing is None else missing,
            _num(s.mean),
            _num(s.sd),
            *(_num(s.quantiles.get(k)) for k in keys),
            style="bold" if s is report.pooled else "",
        )
    return _framed(report.variable, table)


def _median(curve: Curve) -> str:
    """The first time survival is at most a half, or "> T" when the curve (reported up to day
    T) stays above; "-" for a curve without a bin."""
    if not curve.time:
        return "-"
    below = np.flatnonzero(np.asarray(curve.survival) <= 0.5)
    return f"{curve.time[below[0]]:g}" if below.size else f"> {curve.time[-1]:g}"


def _render_survival(report: SurvivalReport) -> RenderableType:
    """Two tables, so that each fits 80 columns: the groups' counts and medians, then their
    survival at three times with its interval."""
    times = regular_times(_end(report), report.grid_days, bins=4)[1:]
    counts = _table("group", "n", "events", "reported to day", "median")
    survival = _table("group", *(f"S(day {t:g})" for t in times))
    for group, curve in report.groups.items():
        _row(
            counts,
            group,
            curve.at_risk[0] if curve.at_risk else "-",
            sum(curve.events),
            f"{curve.time[-1]:g}" if curve.time else "-",
            _median(curve),
        )
        values = [survival_at(curve, t) for t in times]
        _row(survival, group, *("-" if v is None else _interval(*v) for v in values))
    heading = (
        f"Kaplan-Meier: survival ({report.confidence:.0%} CI) and median in days, "
        f"{report.grid_days}-day grid"
    )
    footer = "\n".join(line for line in (_logrank(report), _withheld(report)) if line)
    return _framed(heading, counts, survival, footer=footer)


def _regression_title(report: RegressionReport) -> str:
    model = "logistic regression"
    if report.model == "cox":
        model = "Cox model, " + ("stratified by site" if report.stratified else "unstratified")
    return f"{model}: n = {report.n}, events = {report.events}, {report.iterations} iterations"


def _render_regression(report: RegressionReport) -> RenderableType:
    i2 = {h.name: f"{h.i2:.0%}" for h in report.heterogeneity}
    table = _table(
        "term", "coef", "se", f"{report.ratio_name} ({report.confidence:.0%} CI)", "p", "I²"
    )
    for t in report.terms:
        _row(
            table,
            t.name,
            f"{t.coef:.4f}",
            f"{t.se:.4f}",
            _interval(t.ratio, t.ratio_lower, t.ratio_upper),
            _p(t.p),
            i2.get(t.name, "-"),
        )
    footer = (
        "no log-likelihood (differential privacy)"
        if report.loglik is None
        else f"log-likelihood {report.loglik:.4f}"
    )
    return _framed(_regression_title(report), table, footer=footer)
