"""The forest plot reads at a glance: each row's ratio and interval printed beside it, arrows
where an interval runs beyond the axis, no intercept on an odds-ratio axis, every row named,
and the sites left out named under the plot."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.text import Annotation, Text

from oncofed.client.analysis_output import forest_figure
from oncofed.wire.analysis import RegressionReport
from tests.client.test_analysis_output import COX, _term

WILD = [_term("age", 8.0, 6.0), _term("grade=G3", -9.0, 5.0)]
LOGISTIC = COX.model_copy(
    update={
        "model": "logistic",
        "ratio_name": "OR",
        "terms": [_term("intercept", -2.0, 0.3), *COX.terms],
        "sites": {s: [_term("intercept", -1.8, 0.4), *t] for s, t in COX.sites.items()},
    }
)


def _column(report: RegressionReport) -> dict[float, str]:
    """The texts right of the axes by their row."""
    (ax,) = forest_figure(report).axes
    return {
        a.xy[1]: a.get_text()
        for a in ax.texts
        if isinstance(a, Annotation) and a.get_text() and a.xy[0] == 1.0
    }


def test_each_rows_ratio_and_interval_stand_beside_it() -> None:
    (ax,) = forest_figure(COX).axes
    column = _column(COX)
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    for bar, terms in zip(bars, [COX.terms, *COX.sites.values()], strict=True):
        rows = np.asarray(bar.lines[0].get_ydata(), dtype=float)
        for y, t in zip(rows, terms, strict=True):
            assert column[y].startswith(f"{t.ratio:.2f} ({t.ratio_lower:.2f}, {t.ratio_upper:.2f})")
    assert column[0.0] == "1.28 (1.06, 1.56)   I² = 0%"
    assert column[0.9] == "HR (95% CI)"


def test_every_row_is_named() -> None:
    (ax,) = forest_figure(COX).axes
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["age", "A", "B", "C", "grade=G3", "A", "B", "C"]
    weights = [t.get_fontweight() for t in ax.get_yticklabels()]
    assert weights == ["bold", *["normal"] * 3] * 2


def test_intervals_beyond_the_axis_get_arrows() -> None:
    report = COX.model_copy(update={"sites": {**COX.sites, "D": WILD}})
    (ax,) = forest_figure(report).axes
    low, high = ax.get_xlim()
    arrows = [a for a in ax.texts if isinstance(a, Annotation) and a.arrow_patch is not None]
    clipped = [
        (y, side)
        for bar, terms in zip(ax.containers, [report.terms, *report.sites.values()], strict=True)
        for y, t in zip(np.asarray(bar[0].get_ydata(), dtype=float), terms, strict=True)
        for side, beyond in ((0.0, t.ratio_lower < low), (1.0, t.ratio_upper > high))
        if beyond
    ]
    assert clipped  # D's intervals run beyond both ends
    assert sorted((a.xy[1], a.xy[0]) for a in arrows) == sorted(clipped)


def test_the_intercept_is_no_row_of_an_odds_ratio_axis() -> None:
    (ax,) = forest_figure(LOGISTIC).axes
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert "intercept" not in names and names[0] == "age"
    shown = [t.get_text() for t in ax.findobj(Text)]
    assert not any("0.14" in s for s in shown)  # exp(-2), the intercept's ratio
    lowest = min(t.ratio_lower for t in COX.terms)
    assert ax.get_xlim()[0] == lowest / 1.25


def test_sites_left_out_are_named_under_the_plot() -> None:
    report = COX.model_copy(
        update={
            "excluded": {"west": "declined: too few patients"},
            "pooled_only": {"east": "its own fit failed: " + "x" * 2000},
        }
    )
    fig = forest_figure(report)
    note = fig.get_supxlabel()
    assert "not in the result: west (declined: too few patients)" in note
    assert "in the pooled fit, no estimates of their own: east (its own fit failed: " in note
    assert len(note) < 600  # a long reason is cut


@pytest.mark.parametrize("change", [{"ratio_lower": 0.0}, {"ratio_upper": 1.6e308}])
def test_a_bound_beyond_a_floats_range_is_drawn_clipped(change: dict[str, float]) -> None:
    """An interval's bound that underflowed to 0 or is near a float's largest value (a
    finite, valid report) is drawn clipped at the axis, with no error or warning."""
    first = COX.terms[0].model_copy(update=change)
    report = COX.model_copy(update={"terms": [first, *COX.terms[1:]]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = forest_figure(report)
        figure.savefig(io.BytesIO(), format="png")
    low, high = figure.axes[0].get_xlim()
    assert 0 < low < high < math.inf
