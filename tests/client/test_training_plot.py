"""A training job's metric curves read for hundreds of rounds: lines without markers, the
legend outside the data, every site drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from oncofed.client.plots import curves_figure, plot_curves
from oncofed.wire.messages import JobPublic
from tests.cli.test_hostile_text import _training_job
from tests.client.test_hostile_figures import MATH, _shown

SITES = ("north", "south", "east", "west")


def _job(rounds: int) -> JobPublic:
    """A training job of ``rounds`` rounds at four sites, each round's loss and AUCs known."""
    job = _training_job()
    template = job.rounds[0]
    site = next(iter(template.sites.values()))
    made = [
        template.model_copy(
            update={
                "number": n,
                "train_loss": 1.0 / n,
                "metrics": {"auc": 0.7 + 0.1 * n / rounds},
                "sites": {
                    s: site.model_copy(update={"metrics": {"auc": 0.65 + 0.01 * i}})
                    for i, s in enumerate(SITES)
                },
            }
        )
        for n in range(1, rounds + 2)
    ]
    spec = job.spec.model_copy(update={"rounds": rounds})
    return job.model_copy(update={"rounds": made, "spec": spec, "sites": list(SITES)})


def _drawn(fig: Figure) -> tuple[list[str], list[str]]:
    """The markers of every curve and the labels of the metric panel's curves."""
    loss, metric = fig.axes
    lines = [*loss.get_lines(), *metric.get_lines()]
    return [str(line.get_marker()) for line in lines], [
        str(x.get_label()) for x in metric.get_lines()
    ]


def test_hundreds_of_rounds_are_drawn_as_lines_with_the_legend_outside() -> None:
    fig = curves_figure(_job(300))
    markers, labels = _drawn(fig)
    assert set(markers) == {"None"}
    assert labels == [*SITES, "all sites (pooled held-out rows)"]
    loss, metric = fig.axes
    assert len(loss.get_lines()[0].get_xdata()) == 300  # every training round has a loss
    fig.canvas.draw()  # type: ignore[no-untyped-call]
    legend = metric.get_legend()
    assert legend is not None
    inside = metric.get_window_extent()
    outside = legend.get_window_extent()
    assert outside.x0 >= inside.x1  # right of the data, not over it
    ticks = np.asarray(metric.get_xticks(), dtype=float)
    assert np.all(ticks == np.round(ticks))  # whole rounds


def test_a_few_rounds_mark_each_point() -> None:
    markers, _ = _drawn(curves_figure(_job(5)))
    assert set(markers) == {"o"}


@pytest.mark.parametrize("rounds", [3, 300])
def test_the_plot_is_written(tmp_path: Path, rounds: int) -> None:
    path = plot_curves(_job(rounds), tmp_path / "metrics.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_hostile_site_name_is_shown_as_written() -> None:
    job = _job(300)
    job = job.model_copy(
        update={
            "sites": [MATH],
            "rounds": [
                r.model_copy(update={"sites": {MATH: r.sites["north"]}}) for r in job.rounds
            ],
        }
    )
    shown = [_shown(t) for t in curves_figure(job).findobj(Text) if t.get_text()]
    assert (MATH, False) in shown and not any(math for _, math in shown)
