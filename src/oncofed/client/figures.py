"""Parts the report's plots share: time units for survival curves, the steps where small-cell
suppression released held-back events, names from the data model for titles, footnotes, short
labels and arrows at clipped intervals. Pure helpers over report data and matplotlib axes."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from oncofed._text import figure_text, plain
from oncofed.cdm.fields import PATIENT_FIELDS
from oncofed.wire.analysis import Curve, KaplanMeierAnalysis

INTERCEPT = "intercept"
"""The logistic model's intercept term (:func:`oncofed.analytics.design.term_names`): no ratio."""
TimeUnit = Literal["days", "months", "years"]
UNIT_DAYS: dict[TimeUnit, float] = {"days": 1.0, "months": 365.25 / 12, "years": 365.25}
_MONTHS_BEYOND = 365.25
"""A curve reported beyond a year is drawn in months, beyond three years in years."""
_YEARS_BEYOND = 3 * 365.25
_TICK_STEPS: dict[TimeUnit, list[float]] = {"months": [1, 1.2, 2.4, 3, 6], "years": [1, 2, 5, 10]}
"""Tick spacings (times powers of ten): every 3, 6 or 12 months; every 1, 2 or 5 years."""
_FEW_DECADES = 2.5
"""Beyond this many decades, a ratio axis ticks powers of ten only."""
LABEL_CHARS = 48
"""The longest name (a group, site or term) a plot shows whole; longer ones are cut with ``…``."""
NOTE_CHARS = 160
"""The longest reason a footnote shows whole."""
FOOTNOTE_WIDTH = 120
"""Characters per line of a footnote at 8 points on an 8-inch figure."""
ARROW_LENGTH = 0.05
"""An arrow at a clipped interval, as a fraction of the axes' width."""


def short(value: object, limit: int = LABEL_CHARS) -> str:
    """``value`` as plain text (:func:`~oncofed._text.plain`) of at most ``limit`` characters,
    cut with ``…``."""
    text = plain(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def label(value: object, limit: int = LABEL_CHARS) -> str:
    """``value`` for a plot (:func:`~oncofed._text.figure_text`), cut to ``limit`` characters."""
    return figure_text(short(value, limit))


def time_unit(end_days: float) -> TimeUnit:
    """The unit a curve reported up to ``end_days`` reads best in: years beyond three years,
    months beyond one, else days."""
    if end_days > _YEARS_BEYOND:
        return "years"
    return "months" if end_days > _MONTHS_BEYOND else "days"


def unit_times(end_days: float, unit: TimeUnit, bins: int = 6) -> list[float]:
    """Whole ``unit``s (0, 6, 12 months; 0, 2, 4 years) from 0 to ``end_days``, in days."""
    days = UNIT_DAYS[unit]
    steps = MaxNLocator(nbins=bins, integer=True, steps=_TICK_STEPS[unit])
    ticks = np.asarray(steps.tick_values(0, end_days / days)) * days
    return [float(t) for t in ticks if 0 <= t <= end_days]


def ratio_ticks(low: float, high: float) -> tuple[float, ...]:
    """The multiples of each power of ten to tick on a log axis from ``low`` to ``high``: 1
    only across many decades, 1, 2 and 5 across a few, more within about one."""
    decades = math.log10(high / low)
    if decades > _FEW_DECADES:
        return (1.0,)
    return (1.0, 2.0, 5.0) if decades > 1 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)


def released(curve: Curve) -> list[int]:
    """The bins whose events may include events held back from earlier bins: those with events
    after a bin without any. The report does not mark them, but small-cell suppression
    (:func:`oncofed.analytics.survival.carried`) reports a carried count at the first bin
    where what has built up reaches the threshold, and the bins it built up in report no
    events; so every release is one of these bins (in a pooled sum of sites, only when no
    other site has events in the bin before). A bin after a truly event-free one is also
    listed: its events are then on time."""
    events = curve.events
    return [k for k in range(1, len(events)) if events[k] > 0 and events[k - 1] == 0]


def endpoint(analysis: KaplanMeierAnalysis) -> str:
    """The analysis' endpoint as the data model describes its time: "Recurrence-free
    survival" for ``rfs_days``."""
    time = analysis.outcome.time
    return PATIENT_FIELDS[time].description.removesuffix(".").removesuffix(" time")


def variable_name(name: str) -> str:
    """A variable as the data model describes it ("histologic grade" for ``grade``), else its
    name (``biomarker.ER``)."""
    field = PATIENT_FIELDS.get(name)
    if field is None:
        return name
    described = field.description.removesuffix(".")
    return described[:1].lower() + described[1:]


def footnote(fig: Figure, lines: Sequence[str]) -> None:
    """``lines`` (already plain) under everything else in ``fig``, wrapped, small and left
    aligned; the layout makes room for them. Nothing when there are none."""
    if lines:
        wrapped = "\n".join(textwrap.fill(line, FOOTNOTE_WIDTH) for line in lines)
        fig.supxlabel(figure_text(wrapped), x=0.01, ha="left", fontsize=8, color="dimgrey")


def site_note(heading: str, sites: dict[str, str]) -> str:
    """``heading: site (why); ...`` with every name and reason cut to a readable length (plain
    text, for :func:`footnote`)."""
    listed = "; ".join(f"{short(site)} ({short(why, NOTE_CHARS)})" for site, why in sites.items())
    return f"{heading}: {listed}"


def clip_arrows(ax: Axes, y: float, lower: float, upper: float, color: str) -> None:
    """Arrows at the edges of ``ax`` where the interval [``lower``, ``upper``] at row ``y``
    runs beyond its x limits (set them first), pointing the way it runs on."""
    low, high = ax.get_xlim()
    sides = ((lower < low, 0.0, ARROW_LENGTH), (upper > high, 1.0, -ARROW_LENGTH))
    for beyond, edge, inward in sides:
        if beyond:
            ax.annotate(
                "",
                xy=(edge, y),
                xycoords=ax.get_yaxis_transform(),
                xytext=(edge + inward, y),
                textcoords=ax.get_yaxis_transform(),
                arrowprops={"arrowstyle": "-|>", "color": color, "mutation_scale": 10},
                annotation_clip=False,
            )
