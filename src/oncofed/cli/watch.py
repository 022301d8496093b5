"""Rendering of jobs: the live view (a progress bar and the per-round table) and one job's
whole record (``oncofed job show``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from oncofed._text import as_text
from oncofed.client.report import POOLED_ONLY, curves

if TYPE_CHECKING:
    from oncofed.wire.messages import JobPublic, RoundPublic


@contextmanager
def live_view(console: Console) -> Iterator[Live]:
    """A display updated in place. Piped, rich prints only the last view and leaves its last
    line open, so the next output would join it: the line is ended here."""
    with Live(console=console, refresh_per_second=4) as live:
        yield live
    if not console.is_terminal:
        console.line()


_STATUS = {"running": "yellow", "completed": "green", "failed": "red", "cancelled": "magenta"}


def render_job(job: JobPublic, last: int = 8) -> RenderableType:
    """One job: progress, a training job's last rounds' loss and held-out metrics, then every
    site's state with why (``oncofed.client.sites_view``)."""
    from oncofed.client.sites_view import render_sites  # the wire's models, once a job is in

    metric = job.primary_metric
    closed = sum(1 for r in job.rounds if r.status == "closed")
    total = job.planned_rounds or max(closed + (job.status == "running"), 1)  # Newton: so far
    current = job.rounds[-1] if job.rounds else None
    reporting = sum(1 for s in current.sites.values() if s.status == "accepted") if current else 0
    head = Table.grid(padding=(0, 2))
    head.add_column(no_wrap=True)
    head.add_column(no_wrap=True)
    head.add_column(no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row(
        ProgressBar(total=total, completed=closed, width=40),
        f"{closed}/{total} rounds",
        as_text(job.status, style=_STATUS[job.status]),
        as_text(
            f"round {current.number} ({_kind(current)}): {reporting}/{len(current.sites)} sites"
            if current and job.status == "running"
            else ""
        ),
    )
    if job.spec.kind == "analysis":
        parts: list[RenderableType] = [head, render_sites(job.participation)]
        if job.error:
            parts.append(as_text(job.error, style="red"))
        return Panel(Group(*parts), title=_title(job), title_align="left")
    secure = job.spec.privacy.secure_aggregation
    columns = [] if secure else job.sites  # no site's own metrics under secure aggregation
    pooled = job.pooled_metric  # a C-index's is the mean of the sites' own, named so
    headers = ("round", "sites", "train loss", f"all sites {pooled}", *columns)
    table = Table(expand=False)
    for header in headers:
        table.add_column(as_text(header), overflow="fold")  # a long site name, never cut
    if secure:
        table.caption = POOLED_ONLY
    for row in curves(job)[-last:]:
        loss = row["train_loss"]
        table.add_row(
            str(row["round"]),
            "" if row["sites_reporting"] is None else str(row["sites_reporting"]),
            "" if loss is None else f"{loss:.4f}",
            _fmt(row["metrics"].get(pooled)),
            *(_fmt(row["site_metrics"].get(s, {}).get(metric)) for s in columns),
        )
    parts = [head, table, render_sites(job.participation, training=True)]
    if job.error:
        parts.append(as_text(job.error, style="red"))  # it quotes sites' reasons
    return Panel(Group(*parts), title=_title(job), title_align="left")


def rounds_done(job: JobPublic) -> str:
    """``3/5``: rounds closed of those planned; a Newton loop's (planned: till it converges)
    ``3/?`` while it runs, ``4/4`` once ended."""
    closed = sum(1 for r in job.rounds if r.status == "closed")
    planned = job.planned_rounds
    if planned is None:
        planned_text = "?" if job.status == "running" else str(closed)
    else:
        planned_text = str(planned)
    return f"{closed}/{planned_text}"


def render_details(job: JobPublic) -> RenderableType:
    """One job's record: what it runs and where, each round with its sites' answers and
    metrics, every site's state with why, and the error that ended it."""
    from oncofed.client.events import WAITING
    from oncofed.client.sites_view import render_sites

    spec = job.spec
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    finished = f"{job.finished_at:%Y-%m-%d %H:%M} UTC" if job.finished_at else "-"
    for label, value in (
        ("id", job.id),
        ("runs", job.label),
        ("project", spec.project or "-"),
        ("dataset", spec.dataset),
        ("status", job.status),
        ("rounds", rounds_done(job)),
        ("created", f"{job.created_at:%Y-%m-%d %H:%M} UTC"),
        ("finished", finished),
        ("sites", ", ".join(job.sites)),
        ("waits", f"{spec.round_timeout_s:g} s a round for at least {spec.min_sites} site(s)"),
    ):
        facts.add_row(label, as_text(value, style=_STATUS.get(value, "")))
    rounds = Table("round", "kind", "status", "answered", title="rounds", title_justify="left")
    for column in rounds.columns:
        column.no_wrap = True
    rounds.add_column("train loss / metrics", overflow="fold")
    for rnd in job.rounds:
        answered = sum(1 for site in rnd.sites.values() if site.status not in WAITING)
        loss = {} if rnd.train_loss is None else {"train_loss": rnd.train_loss}
        numbers = ", ".join(f"{name} {value:.3f}" for name, value in (loss | rnd.metrics).items())
        rounds.add_row(
            str(rnd.number), _kind(rnd), rnd.status, f"{answered}/{len(rnd.sites)}", numbers
        )
    parts: list[RenderableType] = [facts]
    if job.rounds:
        parts.append(rounds)
        notes = job.rounds[-1].notes  # what the last round's pooled metrics are, or leave out
        if notes:
            parts.append(as_text("\n".join(notes), style="dim"))
    parts.append(render_sites(job.participation, training=spec.kind == "train"))
    if job.error:
        parts.append(as_text(job.error, style="red"))
    return Panel(Group(*parts), title=_title(job), title_align="left")


def _kind(rnd: RoundPublic) -> str:
    """A round's kind, and a secure round's phase while it is open."""
    return f"{rnd.kind}, secure: {rnd.phase}" if rnd.phase else rnd.kind


def _title(job: JobPublic) -> Text:
    return Text.assemble(as_text(job.name), as_text(f" {job.id[:8]} {job.label}", "dim"))


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
