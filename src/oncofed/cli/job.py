"""``oncofed job``: the researcher submits, watches and collects jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from oncofed._text import as_text
from oncofed.cli._common import (
    TokenOption,
    UrlOption,
    client,
    console,
    err_console,
    friendly,
)
from oncofed.cli._output import SHORT_ID, JsonOption, print_json, print_table, short_id
from oncofed.cli.watch import live_view, render_details, render_job, rounds_done

if TYPE_CHECKING:
    from oncofed.client import Client
    from oncofed.wire.analysis import AnalysisSpec
    from oncofed.wire.messages import JobCreated, JobPublic
    from oncofed.wire.spec import JobSpec

app = typer.Typer(help="Submit and follow federated jobs.", no_args_is_help=True)
JobArgument = Annotated[
    str, typer.Argument(help="Job id, or its start as long as it is unique (as 'job list' shows).")
]


@app.command()
@friendly
def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec (YAML).")],
    url: UrlOption = None,
    token: TokenOption = None,
    watch_: Annotated[
        bool, typer.Option("--watch/--no-watch", help="Follow it until it ends.")
    ] = False,
) -> None:
    """Validate a job spec and submit it; prints the job id (piped, and not watched: the id
    alone, what it waits for on standard error)."""
    from oncofed.client import load_spec

    job_spec = load_spec(spec)
    with client(url, token) as api:
        created = api.submit(job_spec)
        if not console.is_terminal and not watch_:
            typer.echo(created.id)
            _waiting(err_console, job_spec, created)
            return
        console.print(
            Text.assemble(
                "Job ",
                as_text(created.id, style="bold"),
                as_text(f" ({created.name}) on {', '.join(created.sites)}"),
            )
        )
        _waiting(console, job_spec, created)
        if watch_:
            _watch(api, created.id)


def _waiting(console: Console, spec: JobSpec | AnalysisSpec, created: JobCreated) -> None:
    """What a round waits for, and a warning naming each listed site not seen lately."""
    console.print(
        f"Each round waits up to {spec.round_timeout_s:g} s (round_timeout_s) and needs "
        f"{spec.min_sites} site{'s' if spec.min_sites > 1 else ''} (min_sites).",
        highlight=False,
    )
    if created.unseen:
        window = f"{created.seen_window_s:g} s" if created.seen_window_s else "a while"
        console.print(
            Text.assemble(
                ("warning: ", "bold yellow"),
                as_text(", ".join(created.unseen)),
                f" not seen in the last {window} (or never): each round waits for "
                f"{'them' if len(created.unseen) > 1 else 'it'} until its deadline.",
            )
        )


@app.command()
@friendly
def cancel(job_id: JobArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Cancel a running job: its open tasks are withdrawn and it ends cancelled."""
    with client(url, token) as api:
        job = api.cancel_job(api.resolve_job(job_id))
    console.print(
        Text.assemble("Job ", as_text(job.id, style="bold"), as_text(f" ({job.name}) cancelled."))
    )


@app.command()
@friendly
def watch(
    job_id: JobArgument,
    as_json: Annotated[
        bool, typer.Option("--json/--no-json", help="One JSON object per event, per line.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Live progress: round, sites reporting, training loss, held-out metrics per round.
    Piped: one line per event (round opened, site answered, round closed, job ended), then
    the final view. Exit code 1 unless the job completed."""
    with client(url, token) as api:
        _watch(api, api.resolve_job(job_id), as_json)


def _watch(api: Client, job_id: str, as_json: bool = False) -> None:
    if as_json or not console.is_terminal:
        job = _stream(api, job_id, as_json)
    else:
        with live_view(console) as live:
            job = api.wait(job_id, on_update=lambda j: live.update(render_job(j)))
    if job.status != "completed":
        raise typer.Exit(1)


def _stream(api: Client, job_id: str, as_json: bool) -> JobPublic:
    """Print each event as it is seen (a JSON object, or a line) until the job ends; then,
    unless JSON, the final view."""
    from oncofed.client.events import job_events

    last: JobPublic | None = None

    def show(job: JobPublic) -> None:
        nonlocal last
        for event in job_events(last, job):
            if as_json:
                print_json(event.as_dict())
            else:
                typer.echo(event.line())
        last = job

    job = api.wait(job_id, on_update=show)
    if not as_json:
        console.print(render_job(job))
    return job


STATUSES = ("running", "completed", "failed", "cancelled")
"""``oncofed.wire.messages.JobStatus``, spelled out: the wire's models are not imported to
build the help (tests/cli/test_startup.py checks the two agree)."""


def _statuses(given: list[str] | None) -> list[str] | None:
    """``--status``: repeated or comma-separated, each one a job status."""
    if not given:
        return None
    wanted = [part.strip() for value in given for part in value.split(",") if part.strip()]
    for status in wanted:
        if status not in STATUSES:
            raise typer.BadParameter(f"{status!r} is not one of {', '.join(STATUSES)}")
    return wanted


@app.command("list")
@friendly
def list_jobs(
    status: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STATUS",
            callback=_statuses,
            help=f"Only jobs in this status ({', '.join(STATUSES)}); repeat or use commas.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Only jobs whose name contains TEXT.")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Jobs with their status and rounds, ids shortened (any command takes them; --json has
    them whole)."""
    with client(url, token) as api:
        jobs = api.jobs()
    jobs = [
        job
        for job in jobs
        if (not status or job.status in status) and (name is None or name in job.name)
    ]
    if as_json:
        print_json([_summary(job) for job in jobs])
        return
    table = Table("name", "runs")
    table.add_column("status", no_wrap=True)
    table.add_column("rounds", no_wrap=True, justify="right")
    table.add_column("created (UTC)")  # the date, then the time below it when narrow
    table.add_column("id", no_wrap=True, min_width=SHORT_ID)
    for job in jobs:
        cells = (job.name, job.label, job.status, rounds_done(job))
        table.add_row(*map(as_text, cells), f"{job.created_at:%Y-%m-%d %H:%M}", short_id(job.id))
    print_table(console, table)


def _summary(job: JobPublic) -> dict[str, Any]:
    """A job in ``job list --json``: what the table shows, the id whole."""
    return {
        "id": job.id,
        "name": job.name,
        "runs": job.label,
        "status": job.status,
        "rounds_closed": sum(1 for r in job.rounds if r.status == "closed"),
        "rounds_planned": job.planned_rounds,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "sites": job.sites,
        "error": job.error,
    }


@app.command()
@friendly
def show(
    job_id: JobArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """One job: its status, spec, rounds with the sites' answers, and every site's state
    with why (--json: the whole record, as the API gives it)."""
    with client(url, token) as api:
        job = api.job(api.resolve_job(job_id))
    if as_json:
        print_json(job.model_dump(mode="json"))
        return
    console.print(render_details(job))


@app.command()
@friendly
def result(
    job_id: JobArgument,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the result: model, report.json and plot, or an "
            "analysis's report.json, CSV tables and plots."
        ),
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json/--no-json",
            help="Print the job's id, the paths written and report.json as one JSON object.",
        ),
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Download the result: a training job's final model with its report and metric curves,
    or an analysis's report, tidy CSV tables and plots; and every site's state with why."""
    with client(url, token) as api:
        job = api.job(api.resolve_job(job_id))
        model = api.model_bytes(job.id) if job.spec.kind == "train" else None
    # matplotlib and scipy, once there is a result to write
    from oncofed.client.analysis_output import render_analysis
    from oncofed.client.plots import write_job
    from oncofed.client.sites_view import render_sites

    if not as_json:
        if job.spec.kind == "train":
            console.print(render_job(job))
        elif job.report is not None:
            console.print(render_analysis(job.report, job.participation))
        else:  # no result: who declined, expired or failed says why
            console.print(render_sites(job.participation))
    written = write_job(job, out, model)
    if as_json:
        report = next(path for path in written if path.name == "report.json")
        document = json.loads(report.read_text())
        print_json({"id": job.id, "written": [str(path) for path in written], "report": document})
        return
    for path in written:  # a path is never broken across lines
        console.print(f"written: {path}", highlight=False, markup=False, soft_wrap=True)
