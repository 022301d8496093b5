"""A result's plots and tables show the names in it (groups, terms, sites, the job's name) as
written: a dollar sign in a name starts no matplotlib mathtext, which would garble it or, with
an unknown command, crash the writing of the result; no escape sequence reaches a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text as FigureText
from rich.console import Console

from oncofed.client.analysis_output import (
    forest_figure,
    render_analysis,
    survival_figure,
    write_analysis,
)
from oncofed.client.plots import write_result
from oncofed.wire.analysis import SurvivalReport
from tests.cli.test_hostile_text import _training_job
from tests.client.test_analysis_output import COX, KM
from tests.client.test_load_model import finished_training

MATH = r"ER+ $\mathbf{evil}$ $\nosuchcommand$ [red]x"
"""A group or site name: mathtext, one command unknown to matplotlib, rich markup."""
ESCAPED = "\x1b]8;;https://evil.example\x1b\\G2\x1b]8;;\x1b\\"


def _shown(text: FigureText) -> tuple[str, bool]:
    """What matplotlib draws for ``text``, and whether it reads it as mathtext."""
    shown: tuple[str, bool] = text._preprocess_math(text.get_text())  # type: ignore[attr-defined]
    return shown


def test_the_attack_is_real_with_a_name_as_it_came() -> None:
    figure = Figure()
    label = figure.text(0.5, 0.5, MATH)
    assert _shown(label)[1] is True  # read as mathtext
    with pytest.raises(ValueError, match="nosuchcommand"):
        figure.savefig(io.BytesIO(), format="png")


def _texts(figure: Figure) -> list[FigureText]:
    """Every text a figure draws: titles, labels, tick labels, legends."""
    return [t for t in figure.findobj(FigureText) if t.get_text()]


def _hostile_groups() -> SurvivalReport:
    """The Kaplan-Meier report with its groups named by a hostile site's data."""
    groups = dict(zip((MATH, ESCAPED), KM.groups.values(), strict=True))
    return KM.model_copy(update={"groups": groups})


def test_the_kaplan_meier_plot_shows_group_names_as_written(tmp_path: Path) -> None:
    report = _hostile_groups()
    shown = [_shown(t) for t in _texts(survival_figure(report))]
    assert not any(math for _, math in shown)
    assert (MATH, False) in shown and ("G2", False) in shown  # the legend, the table's rows
    assert {p.name for p in write_analysis(report, "km", tmp_path)} >= {"kaplan_meier.png"}


def test_the_forest_plot_shows_term_and_site_names_as_written(tmp_path: Path) -> None:
    sites = {MATH: COX.sites["A"], **COX.sites}
    report = COX.model_copy(update={"sites": sites})
    shown = [_shown(t) for t in _texts(forest_figure(report))]
    assert (MATH, False) in shown and not any(math for _, math in shown)
    write_analysis(report, "cox$x$", tmp_path)


def test_a_training_jobs_plot_with_hostile_names_is_written(tmp_path: Path) -> None:
    job = _training_job()
    sites = job.rounds[0].sites
    rounds = [job.rounds[0].model_copy(update={"sites": {MATH: next(iter(sites.values()))}})]
    trained, model = finished_training("gbsg2_recurrence_5y.yaml")  # the same spec's model
    update = {
        "name": "job $\\nosuchcommand$",
        "rounds": rounds,
        "sites": [MATH],
        "standardization": trained.standardization,
        "model_sha256": trained.model_sha256,
    }
    job = job.model_copy(update=update)
    paths = write_result(job, model, tmp_path)
    assert paths["plot"].stat().st_size > 0


def test_the_terminal_table_shows_group_names_as_written() -> None:
    out = io.StringIO()
    Console(file=out, width=80).print(render_analysis(_hostile_groups()))
    assert "\x1b" not in out.getvalue() and max(map(len, out.getvalue().splitlines())) <= 80
    rows = [line.split("│")[1].strip() for line in out.getvalue().splitlines() if "│" in line]
    assert "G2" in rows and any(row.startswith("ER+ $") for row in rows)
