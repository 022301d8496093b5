"""Analysis reports as files and terminal tables: exact CSV contents, valid PNGs, and plots
drawing the report's numbers."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from pydantic import TypeAdapter
from rich.console import Console

from oncofed.client.analysis_output import (
    forest_figure,
    histogram_figure,
    numbers_at_risk,
    render_analysis,
    survival_figure,
    write_analysis,
)
from oncofed.wire.analysis import (
    AnalysisReport,
    CountsReport,
    CountTable,
    Curve,
    Heterogeneity,
    LogRank,
    RegressionReport,
    Summary,
    SummaryReport,
    SurvivalReport,
    Term,
)
from oncofed.wire.messages import Participation, SiteState, SiteStatus

GRADE_BY_SEX = CountsReport(
    variables=["grade", "sex"],
    pooled=CountTable(
        rows=["G1", "G2"],
        columns=["female", "male"],
        cells=[[40, "suppressed", 52], [30, 25, 55], [70, "suppressed", 107]],
    ),
    sites={
        "A": CountTable(
            rows=["G1", "G2"],
            columns=["female", "male"],
            cells=[[20, "<11", "suppressed"], [15, 12, 27], ["suppressed", "suppressed", 48]],
        ),
    },
)

GRADES = CountsReport(
    variables=["grade"],
    pooled=CountTable(rows=["G1", "G2", "G3"], columns=["n"], cells=[[52], ["<11"], [0], [60]]),
    sites={},
)

AGE = SummaryReport(
    variable="age_at_diagnosis",
    bins=[40.0, 50.0, 60.0, 70.0],
    pooled=Summary(
        n=120,
        mean=57.5,
        sd=9.25,
        quantiles={"0.25": 50.5, "0.5": 57.0, "0.75": 64.25},
        histogram=["<11", 30, 45, 35, "suppressed", 0],
    ),
    sites={
        "A": Summary(
            n=60,
            mean=56.0,
            sd=None,
            quantiles={"0.25": None, "0.5": 55.0, "0.75": None},
            histogram=[0, 15, 25, 20, 0, "<11"],
        ),
    },
)

KM = SurvivalReport(
    grid_days=30,
    confidence=0.95,
    groups={
        "G1": Curve(
            time=[29, 59, 89, 119],
            survival=[0.9, 0.8, 0.7, 0.6],
            lower=[0.82, 0.71, 0.6, 0.49],
            upper=[0.95, 0.87, 0.78, 0.7],
            at_risk=[100, 90, 80, 70],
            events=[10, 10, 10, 10],
        ),
        "G2": Curve(
            time=[29, 59, 89],
            survival=[0.8, 0.5, 0.4],
            lower=[0.66, 0.36, 0.26],
            upper=[0.89, 0.63, 0.54],
            at_risk=[50, 40, 25],
            events=[10, 15, 0],
        ),
    },
    logrank=LogRank(statistic=12.5, df=1, p=0.0004),
)


def _term(name: str, coef: float, se: float) -> Term:
    lower, upper = coef - 1.96 * se, coef + 1.96 * se
    return Term(
        name=name,
        coef=coef,
        se=se,
        lower=lower,
        upper=upper,
        z=coef / se,
        p=0.01,
        ratio=float(np.exp(coef)),
        ratio_lower=float(np.exp(lower)),
        ratio_upper=float(np.exp(upper)),
    )


COX = RegressionReport(
    model="cox",
    stratified=True,
    ratio_name="HR",
    confidence=0.95,
    n=686,
    events=299,
    loglik=-1234.5,
    iterations=5,
    terms=[_term("age", 0.25, 0.1), _term("grade=G3", -0.5, 0.2)],
    sites={
        "A": [_term("age", 0.3, 0.15), _term("grade=G3", -0.2, 0.3)],
        "B": [_term("age", 0.2, 0.12), _term("grade=G3", -0.8, 0.25)],
        "C": [_term("age", 0.1, 0.3), _term("grade=G3", -0.4, 0.5)],
    },
    heterogeneity=[
        Heterogeneity(name="age", q=0.4, df=2, p=0.82, i2=0.0),
        Heterogeneity(name="grade=G3", q=3.1, df=2, p=0.21, i2=0.35),
    ],
)


def _csv(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _is_png(path: Path) -> bool:
    image = matplotlib.image.imread(path)
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 100


def _floats(values: object) -> list[float]:
    """Artist data (arrays of many types to matplotlib's stubs) as a list of floats."""
    return list(np.asarray(values, dtype=float).tolist())


def _cells(line: str) -> list[str]:
    """The cells of one row of a rendered table."""
    return [cell.strip() for cell in re.split("[│┃]", line)[1:-1]]


def _text(report: AnalysisReport) -> str:
    console = Console(record=True, width=160)
    console.print(render_analysis(report))
    return console.export_text()


def test_counts_are_written_as_published_with_margins(tmp_path: Path) -> None:
    paths = write_analysis(GRADE_BY_SEX, "grade-by-sex", tmp_path)
    assert paths == [tmp_path / "report.json", tmp_path / "counts.csv"]
    assert _csv(tmp_path / "counts.csv") == [
        "site,row,column,count",
        "pooled,G1,female,40",
        "pooled,G1,male,suppressed",
        "pooled,G1,total,52",
        "pooled,G2,female,30",
        "pooled,G2,male,25",
        "pooled,G2,total,55",
        "pooled,total,female,70",
        "pooled,total,male,suppressed",
        "pooled,total,total,107",
        "A,G1,female,20",
        "A,G1,male,<11",
        "A,G1,total,suppressed",
        "A,G2,female,15",
        "A,G2,male,12",
        "A,G2,total,27",
        "A,total,female,suppressed",
        "A,total,male,suppressed",
        "A,total,total,48",
    ]
    document = json.loads((tmp_path / "report.json").read_text())
    assert document.pop("name") == "grade-by-sex"
    assert TypeAdapter(AnalysisReport).validate_python(document) == GRADE_BY_SEX


def test_a_one_way_table_has_no_column_column(tmp_path: Path) -> None:
    write_analysis(GRADES, "grades", tmp_path)
    assert _csv(tmp_path / "counts.csv") == [
        "site,row,count",
        "pooled,G1,52",
        "pooled,G2,<11",
        "pooled,G3,0",
        "pooled,total,60",
    ]
    text = _text(GRADES)
    assert "<11" in text and "60" in text


def test_the_counts_table_shows_margins_and_hidden_cells() -> None:
    lines = _text(GRADE_BY_SEX).splitlines()
    header = next(line for line in lines if "female" in line)
    assert _cells(header) == ["grade", "female", "male", "total"]
    total = next(line for line in lines if _cells(line)[:1] == ["total"])
    assert _cells(total) == ["total", "70", "suppressed", "107"]
    assert "patients per site: A 48" in " ".join(lines)


def test_summary_tables_and_histogram(tmp_path: Path) -> None:
    paths = write_analysis(AGE, "age", tmp_path)
    names = ["report.json", "summary.csv", "histogram.csv", "histogram.png"]
    assert paths == [tmp_path / name for name in names]
    assert _csv(tmp_path / "summary.csv") == [
        "site,n,missing,mean,sd,q_0_25,q_0_5,q_0_75",
        "pooled,120,0,57.5,9.25,50.5,57.0,64.25",
        "A,60,<11,56.0,,,55.0,",
    ]
    assert _csv(tmp_path / "histogram.csv") == [
        "site,lower,upper,count",
        "pooled,-inf,40.0,<11",
        "pooled,40.0,50.0,30",
        "pooled,50.0,60.0,45",
        "pooled,60.0,70.0,35",
        "pooled,70.0,inf,suppressed",
        "A,-inf,40.0,0",
        "A,40.0,50.0,15",
        "A,50.0,60.0,25",
        "A,60.0,70.0,20",
        "A,70.0,inf,0",
    ]
    assert _is_png(tmp_path / "histogram.png")


def test_the_histogram_draws_shown_counts_and_marks_hidden_bins() -> None:
    (ax,) = histogram_figure(AGE).axes
    (bars,) = ax.containers
    assert [(b.get_x(), b.get_width(), b.get_height()) for b in bars] == [
        (40.0, 10.0, 30),
        (50.0, 10.0, 45),
        (60.0, 10.0, 35),
    ]
    hidden = [p for p in ax.patches if p.get_hatch() == "//"]
    assert [p.get_extents().width > 0 for p in hidden] == [True, True]
    assert [t.get_text() for t in ax.texts] == ["<11", "suppressed"]
    assert [t.get_position()[0] for t in ax.texts] == [35.0, 75.0]


def test_survival_tables(tmp_path: Path) -> None:
    paths = write_analysis(KM, "km", tmp_path)
    names = ["report.json", "survival.csv", "logrank.csv", "kaplan_meier.png"]
    assert paths == [tmp_path / name for name in names]
    assert _csv(tmp_path / "survival.csv") == [
        "group,time,survival,lower,upper,at_risk,events",
        "G1,29.0,0.9,0.82,0.95,100,10",
        "G1,59.0,0.8,0.71,0.87,90,10",
        "G1,89.0,0.7,0.6,0.78,80,10",
        "G1,119.0,0.6,0.49,0.7,70,10",
        "G2,29.0,0.8,0.66,0.89,50,10",
        "G2,59.0,0.5,0.36,0.63,40,15",
        "G2,89.0,0.4,0.26,0.54,25,0",
    ]
    assert _csv(tmp_path / "logrank.csv") == ["statistic,df,p", "12.5,1,0.0004"]
    assert _is_png(tmp_path / "kaplan_meier.png")


def test_without_groups_there_is_no_logrank_file(tmp_path: Path) -> None:
    single = KM.model_copy(update={"groups": {"all": KM.groups["G1"]}, "logrank": None})
    names = [p.name for p in write_analysis(single, "km", tmp_path)]
    assert names == ["report.json", "survival.csv", "kaplan_meier.png"]
    assert "log-rank" not in _text(single)


def test_a_group_without_a_reported_bin() -> None:
    empty = Curve(time=[], survival=[], lower=[], upper=[], at_risk=[], events=[])
    report = KM.model_copy(update={"groups": {**KM.groups, "G3": empty}})
    _, table = survival_figure(report).axes
    assert [t.get_text() for t in table.texts if t.get_position()[1] == 2] == ["-"] * 4
    rows = [_cells(line) for line in _text(report).splitlines() if _cells(line)]
    assert ["G3", "-", "0", "-", "-"] in rows  # the counts
    assert rows[-1] == ["G3", "-", "-", "-"]  # survival at the three times


def test_the_kaplan_meier_plot_draws_the_curves_bands_and_numbers_at_risk() -> None:
    fig = survival_figure(KM)
    ax, table = fig.axes
    steps = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
    assert [line.get_label() for line in steps] == ["G1", "G2"]
    for line, curve in zip(steps, KM.groups.values(), strict=True):
        assert _floats(line.get_xdata()) == [0.0, *curve.time]
        assert _floats(line.get_ydata()) == [1.0, *curve.survival]
    bands = ax.collections
    assert len(bands) == 2
    for band, curve in zip(bands, KM.groups.values(), strict=True):
        ys = _floats(np.asarray(band.get_paths()[0].vertices)[:, 1])
        assert min(ys) == pytest.approx(min(curve.lower))
        assert max(ys) == pytest.approx(1.0)
    assert "p = 0.0004" in ax.get_title()
    assert _floats(ax.get_xticks()) == [0.0, 30.0, 60.0, 90.0]
    at_risk = [(t.get_position(), t.get_text()) for t in table.texts]
    assert at_risk == [
        ((0.0, 0), "100"),
        ((30.0, 0), "90"),
        ((60.0, 0), "80"),
        ((90.0, 0), "70"),
        ((0.0, 1), "50"),
        ((30.0, 1), "40"),
        ((60.0, 1), "25"),
        ((90.0, 1), "-"),
    ]
    assert [label.get_text() for label in table.get_yticklabels()] == ["G1", "G2"]


def test_numbers_at_risk_are_those_at_the_start_of_the_bin_holding_each_time() -> None:
    curve = KM.groups["G1"]
    assert numbers_at_risk(curve, [0, 30, 45, 119, 120], 30) == [100, 90, 90, 70, None]


def test_the_survival_table_shows_medians_survival_at_times_and_the_logrank_test() -> None:
    text = _text(KM)
    rows = [_cells(line) for line in text.splitlines() if _cells(line)]
    assert rows == [
        ["group", "n", "events", "reported to day", "median"],
        ["G1", "100", "40", "119", "> 119"],
        ["G2", "50", "25", "89", "59"],
        ["group", "S(day 30)", "S(day 60)", "S(day 90)"],
        ["G1", "0.90 (0.82, 0.95)", "0.80 (0.71, 0.87)", "0.70 (0.60, 0.78)"],
        ["G2", "0.80 (0.66, 0.89)", "0.50 (0.36, 0.63)", "-"],
    ]
    assert "log-rank chi2 = 12.50, df = 1, p = 0.0004" in text


def test_regression_tables(tmp_path: Path) -> None:
    paths = write_analysis(COX, "cox", tmp_path)
    names = ["report.json", "coefficients.csv", "heterogeneity.csv", "forest.png"]
    assert paths == [tmp_path / name for name in names]
    rows = _csv(tmp_path / "coefficients.csv")
    assert rows[0] == "site,term,coef,se,lower,upper,z,p,ratio,ratio_lower,ratio_upper"
    assert [row.split(",")[:2] for row in rows[1:]] == [
        [site, term] for site in ("pooled", "A", "B", "C") for term in ("age", "grade=G3")
    ]
    b = COX.sites["B"][1]
    assert rows[6] == (
        f"B,grade=G3,-0.8,0.25,{b.lower!r},{b.upper!r},-3.2,0.01,{b.ratio!r},"
        f"{b.ratio_lower!r},{b.ratio_upper!r}"
    )
    assert _csv(tmp_path / "heterogeneity.csv") == [
        "term,q,df,p,i2",
        "age,0.4,2,0.82,0.0",
        "grade=G3,3.1,2,0.21,0.35",
    ]
    assert _is_png(tmp_path / "forest.png")


def test_the_forest_plot_shows_pooled_and_site_ratios_on_a_log_axis() -> None:
    (ax,) = forest_figure(COX).axes
    assert ax.get_xscale() == "log"
    assert any(_floats(line.get_xdata()) == [1.0, 1.0] for line in ax.get_lines())
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert [c.get_label() for c in bars] == ["all sites", "A", "B", "C"]
    segments = [s for c in bars for s in c.lines[2][0].get_segments()]
    assert len(segments) == len(COX.terms) * (len(COX.sites) + 1)
    (pooled, _, _), (site_b, _, _) = bars[0].lines, bars[2].lines
    assert pooled.get_marker() == "D"
    assert _floats(pooled.get_xdata()) == [t.ratio for t in COX.terms]
    spans = [s[:, 0] for s in bars[0].lines[2][0].get_segments()]
    expected = [[t.ratio_lower, t.ratio_upper] for t in COX.terms]
    np.testing.assert_allclose(spans, expected, rtol=1e-12)
    assert _floats(site_b.get_xdata()) == [t.ratio for t in COX.sites["B"]]
    assert _floats(site_b.get_ydata()) == [y - 2 for y in _floats(pooled.get_ydata())]
    assert set(_floats(pooled.get_ydata())) <= set(_floats(ax.get_yticks()))
    ticks = zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
    labels = {y: label.get_text() for y, label in ticks}
    assert [labels[y] for y in _floats(pooled.get_ydata())] == ["age", "grade=G3"]
    i2 = [t.get_text().split("   ")[1] for t in ax.texts if "I\u00b2" in t.get_text()]
    assert i2 == ["I\u00b2 = 0%", "I\u00b2 = 35%"]


def test_the_regression_table_shows_terms_ratios_and_heterogeneity() -> None:
    text = _text(COX)
    age = next(line for line in text.splitlines() if "age" in line)
    assert _cells(age) == ["age", "0.2500", "0.1000", "1.28 (1.06, 1.56)", "0.010", "0%"]
    assert "grade=G3" in text and "0.61 (0.41, 0.90)" in text and "35%" in text
    assert "stratified by site" in text and "n = 686, events = 299, 5 iterations" in text


def test_one_site_with_a_wide_interval_leaves_the_pooled_ones_readable() -> None:
    wild = [_term("age", 8.0, 6.0), _term("grade=G3", -9.0, 5.0)]
    (ax,) = forest_figure(COX.model_copy(update={"sites": {**COX.sites, "D": wild}})).axes
    lowest = min(t.ratio_lower for t in COX.terms)
    highest = max(t.ratio_upper for t in COX.terms)
    assert ax.get_xlim() == pytest.approx((lowest / 100 / 1.25, highest * 100 * 1.25))


def test_a_logistic_model_without_site_estimates() -> None:
    logistic = COX.model_copy(
        update={"model": "logistic", "ratio_name": "OR", "sites": {}, "heterogeneity": []}
    )
    (ax,) = forest_figure(logistic).axes
    assert [c.get_label() for c in ax.containers] == ["all sites"]
    assert not [t for t in ax.texts if "I\u00b2" in t.get_text()]
    lines = _text(logistic).splitlines()
    assert lines[0] == "logistic regression: n = 686, events = 299, 5 iterations"
    assert _cells(lines[2]) == ["term", "coef", "se", "OR (95% CI)", "p", "I²"]
    assert _cells(lines[4])[-1] == "-"


def test_the_summary_table_lists_sites_then_all_sites() -> None:
    rows = [_cells(line) for line in _text(AGE).splitlines() if _cells(line)]
    assert rows == [
        ["site", "n", "missing", "mean", "sd", "q 0.25", "q 0.5", "q 0.75"],
        ["A", "60", "<11", "56", "-", "-", "55", "-"],
        ["all sites", "120", "0", "57.5", "9.25", "50.5", "57", "64.25"],
    ]


def test_sites_left_out_are_named_with_why() -> None:
    report = KM.model_copy(update={"excluded": {"west": "declined: too few patients"}})
    assert "not in the result: west (declined: too few patients)" in _text(report)


def test_a_site_in_the_pooled_fit_only_is_not_said_to_be_left_out() -> None:
    """A site whose own fit failed is in the pooled fit: it is named as such, not as a site
    the result leaves out."""
    report = COX.model_copy(update={"pooled_only": {"D": "its own fit failed: separation"}})
    text = " ".join(_text(report).split())
    assert "in the pooled fit, not in the per-site estimates: D (its own fit failed: " in text
    assert "not in the result" not in text


def test_the_sites_table_replaces_the_notes_and_shows_the_gap() -> None:
    """With the job's participation, every site's state, counts and why, and the pooled n
    beside the cohort sizes the sites reported."""
    participation = Participation(
        sites={
            "A": SiteStatus(state=SiteState.TOOK_PART, n=439, counted=400, events=180),
            "west": SiteStatus(state=SiteState.DECLINED, round=0, reason="cohort too small"),
            "B": SiteStatus(state=SiteState.SUPPRESSED, n=30, counted=0, groups=3, hidden=3,
                            reason="it sent no group"),
            "C": SiteStatus(state=SiteState.EXPIRED, round=3, reason="no answer"),
        },
        pooled_n=400,
        reported_n=469,
    )  # fmt: skip
    report = KM.model_copy(update={"excluded": {"west": "declined: cohort too small"}})
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(render_analysis(report, participation))
    text = console.export_text()
    rows = [_cells(line) for line in text.splitlines() if line.count("│") == 5]
    assert rows[-4:] == [
        ["A", "took part", "400 of 439", "180 events"],
        ["west", "declined", "-", "cohort too small"],
        ["B", "suppressed", "0 of 30", "it sent no group"],
        ["C", "expired", "-", "round 3: no answer"],
    ]
    assert "patients in the result: 400 of the 469 in the sites' cohorts (69 not counted)" in text
    assert "not in the result" not in text  # the table says it
    assert max(len(line) for line in text.splitlines()) <= 80


LONG_TERMS = COX.model_copy(
    update={
        "terms": [
            t.model_copy(update={"name": f"log1p({t.name}) at diagnosis, per site"})
            for t in COX.terms
        ]
    }
)


@pytest.mark.parametrize("report", [GRADE_BY_SEX, GRADES, AGE, KM, COX, LONG_TERMS])
def test_every_report_reads_whole_at_80_columns(report: AnalysisReport) -> None:
    """Piped to a file or read in an 80-column terminal, no line is longer and no number is
    cut short: a long term name folds onto a second line instead."""
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(render_analysis(report))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for term in report.terms if isinstance(report, RegressionReport) else []:
        assert f" {term.coef:.4f} " in text and f" {term.se:.4f} " in text
