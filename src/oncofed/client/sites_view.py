"""Who is in a job's result, for the terminal: each site's state, its patients or rows, and
why; for an analysis, the pooled n beside the cohort sizes its sites reported."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from oncofed._text import as_text
from oncofed.wire.messages import IN_RESULT, Participation, SiteState, SiteStatus

_STYLE = {
    SiteState.WAITING: "dim",
    SiteState.TOOK_PART: "green",
    SiteState.SUPPRESSED: "yellow",
    SiteState.DECLINED: "red",
    SiteState.EXPIRED: "red",
    SiteState.FAILED: "red",
    SiteState.CANCELLED: "dim",
}


def render_sites(participation: Participation, training: bool = False) -> RenderableType:
    """A table of the sites (names, reasons and notes fold at 80 columns; counts never do),
    with the pooled n below it for an analysis. What sites wrote is shown as text."""
    table = Table()
    table.add_column("site", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("rows" if training else "patients", justify="right", no_wrap=True)
    table.add_column("why / note", overflow="fold")
    for name, status in participation.sites.items():
        table.add_row(
            as_text(name),
            Text(status.state.label, style=_STYLE[status.state]),
            Text(_counts(status)),
            as_text(_note(status)),
        )
    footer = pooled_line(participation)
    return Group(table, Text(footer)) if footer else table


def _counts(status: SiteStatus) -> str:
    """``185 + 62`` (training and held-out rows), ``430 of 439`` (patients counted of the
    site's cohort), or one of them; ``-`` when none is known."""
    if status.n_eval is not None:
        return f"{status.n if status.n is not None else '-'} + {status.n_eval}"
    if status.counted is not None and status.n is not None and status.counted != status.n:
        return f"{status.counted} of {status.n}"
    known = status.counted if status.counted is not None else status.n
    return "-" if known is None else str(known)


def _note(status: SiteStatus) -> str:
    """Its events, the differential privacy spent there, and the reason (with the round, past
    a job's first, where it left)."""
    events = f"{status.events} events" if status.events is not None else ""
    spent = f"epsilon {status.epsilon:.2f} spent" if status.epsilon is not None else ""
    left = status.state not in (SiteState.WAITING, *IN_RESULT)
    where = f"round {status.round}: " if left and status.round else ""
    return "; ".join(note for note in (events, spent, where + status.reason) if note)


def pooled_line(participation: Participation) -> str:
    """The patients in an analysis' result beside the sum of the cohort sizes its sites
    reported, and the gap; empty before there is a result."""
    pooled, reported = participation.pooled_n, participation.reported_n
    if pooled is None:
        return ""
    head = f"patients in the result: {'about ' if participation.noisy else ''}{pooled}"
    if participation.noisy:
        return f"{head} (a noisy count: differential privacy)"
    if reported is None:
        return f"{head} (the sites' own cohort sizes are not known)"
    if isinstance(pooled, int) and pooled == reported:
        return f"{head}, all of the {reported} in the sites' cohorts"
    gap = f" ({reported - pooled} not counted)" if isinstance(pooled, int) else ""
    return f"{head} of the {reported} in the sites' cohorts{gap}"
