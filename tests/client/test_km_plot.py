"""The Kaplan-Meier plot reads at a glance: the endpoint and grouping in the title, time in
months or years over a long follow-up, the numbers at risk under the ticks, groups withheld
named, and the steps of events released together marked."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.lines import Line2D
from matplotlib.text import Text

from oncofed.client.analysis_output import survival_figure
from oncofed.client.figures import released, time_unit
from oncofed.wire.analysis import Curve, KaplanMeierAnalysis, SurvivalReport
from tests.client.test_analysis_output import KM

RFS_BY_GRADE = KaplanMeierAnalysis.model_validate(
    {"outcome": {"time": "rfs_days", "event": "rfs_event"}, "group": "grade"}
)


def _long(days: int, grid: int = 30) -> SurvivalReport:
    """KM's two groups stretched to ``days`` of follow-up on a ``grid``-day grid, G2's events
    held back and released every third bin."""
    bins = days // grid
    time = [float((k + 1) * grid - 1) for k in range(bins)]
    at_risk = list(range(400, 400 - 2 * bins, -2))
    steady = [1] * bins
    carried = [12 if k % 3 == 2 else 0 for k in range(bins)]
    groups = {}
    for name, events in (("G1", steady), ("G2", carried)):
        survival = np.cumprod(1 - np.divide(events, at_risk)).tolist()
        groups[name] = Curve(time=time, survival=survival, lower=survival, upper=survival,
                             at_risk=at_risk, events=events)  # fmt: skip
    return KM.model_copy(update={"groups": groups, "withheld": ["G3", "GX"]})


def _texts(report: SurvivalReport, **options: object) -> list[str]:
    return [t.get_text() for t in survival_figure(report, **options).findobj(Text)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("days", "unit"), [(300, "days"), (540, "months"), (2000, "years")])
def test_time_is_in_the_unit_the_follow_up_reads_best_in(days: int, unit: str) -> None:
    assert time_unit(days) == unit
    ax, _ = survival_figure(_long(days)).axes
    assert ax.get_xlabel().startswith(unit)


def test_years_tick_whole_years_and_the_numbers_at_risk_stand_under_them() -> None:
    report = _long(2000)
    ax, table = survival_figure(report).axes
    ticks = np.asarray(ax.get_xticks(), dtype=float)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4", "5"]
    np.testing.assert_allclose(ticks, 365.25 * np.arange(6))
    for row, curve in enumerate(report.groups.values()):
        cells = [t for t in table.texts if t.get_position()[1] == row]
        assert [t.get_position()[0] for t in cells] == pytest.approx(ticks.tolist())
        expected = [curve.at_risk[int(t // 30)] if t // 30 < len(curve.at_risk) else None
                    for t in ticks]  # fmt: skip
        assert [t.get_text() for t in cells] == ["-" if n is None else str(n) for n in expected]


def test_the_unit_can_be_chosen() -> None:
    ax, _ = survival_figure(_long(2000), unit="months").axes
    assert ax.get_xlabel().startswith("months")
    assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["0", "12", "24"]


def test_the_title_names_the_endpoint_and_grouping() -> None:
    ax, _ = survival_figure(KM, RFS_BY_GRADE).axes
    title = ax.get_title()
    assert title.startswith("Recurrence-free survival by histologic grade\n")
    assert "p = 0.0004" in title
    assert ax.get_ylabel() == "Recurrence-free survival probability"
    legend = ax.get_legend()
    assert legend is not None and legend.get_title().get_text() == "grade"
    untitled, _ = survival_figure(KM).axes
    assert untitled.get_title().startswith("Kaplan-Meier survival\n")


def test_groups_withheld_and_sites_left_out_are_named() -> None:
    report = _long(2000).model_copy(update={"excluded": {"west": "declined: too few patients"}})
    shown = " ".join(_texts(report))
    assert (
        "not reported: G3, GX (no patients, or too few patients or events at every site)" in shown
    )
    assert "not in the result: west (declined: too few patients)" in shown


def test_steps_of_events_released_together_are_marked() -> None:
    report = _long(720)
    assert released(report.groups["G1"]) == []
    assert released(report.groups["G2"]) == [2, 5, 8, 11, 14, 17, 20, 23]
    ax, _ = survival_figure(report).axes
    circles = [line for line in ax.get_lines() if line.get_marker() == "o"]
    (marks,) = circles[:1]  # G2's, then the legend's key is no line of the axes
    curve = report.groups["G2"]
    x = np.asarray(marks.get_xdata(), dtype=float)
    np.testing.assert_allclose(x, [curve.time[k] for k in released(curve)])
    y = np.asarray(marks.get_ydata(), dtype=float)
    before = [1.0, *curve.survival]
    np.testing.assert_allclose(y, [(before[k] + before[k + 1]) / 2 for k in released(curve)])
    legend = ax.get_legend()
    assert legend is not None
    keys = [t.get_text() for t in legend.get_texts()]
    assert keys[-1] == "events possibly held back (small cells) and shown together"
    assert isinstance(legend.legend_handles[-1], Line2D)


def test_no_mark_without_a_release() -> None:
    ax, _ = survival_figure(KM).axes
    assert not [line for line in ax.get_lines() if line.get_marker() == "o"]
    legend = ax.get_legend()
    assert legend is not None and len(legend.get_texts()) == 2


def test_a_huge_group_name_is_cut_in_the_plot() -> None:
    name = "G" * 5000
    report = KM.model_copy(update={"groups": {name: KM.groups["G1"]}, "logrank": None})
    assert max(len(t) for t in _texts(report)) < 200
