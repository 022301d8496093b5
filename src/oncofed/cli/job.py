"""``oncofed job``: the researcher submits, watches and collects jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from oncofed._text import as_text
from oncofed.cli._common import TokenOption, UrlOption, client, console, friendly
from oncofed.cli.watch import live_view, render_job
from oncofed.client import Client, load_spec
from oncofed.client.sites_view import render_sites
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import JobCreated
from oncofed.wire.spec import JobSpec

app = typer.Typer(help="Submit and follow federated jobs.", no_args_is_help=True)


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
    """Validate a job spec and submit it; prints the job id."""
    job_spec = load_spec(spec)
    with client(url, token) as api:
        created = api.submit(job_spec)
        console.print(
            Text.assemble(
                "Job ",
                as_text(created.id, style="bold"),
                as_text(f" ({created.name}) on {', '.join(created.sites)}"),
            )
        )
        _waiting(job_spec, created)
        if watch_:
            _watch(api, created.id)


def _waiting(spec: JobSpec | AnalysisSpec, created: JobCreated) -> None:
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
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel a running job: its open tasks are withdrawn and it ends cancelled."""
    with client(url, token) as api:
        job = api.cancel_job(job_id)
    console.print(
        Text.assemble("Job ", as_text(job.id, style="bold"), as_text(f" ({job.name}) cancelled."))
    )


@app.command()
@friendly
def watch(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Live progress: round, sites reporting, training loss, held-out metrics per round."""
    with client(url, token) as api:
        _watch(api, job_id)


def _watch(api: Client, job_id: str) -> None:
    with live_view(console) as live:
        job = api.wait(job_id, on_update=lambda j: live.update(render_job(j)))
    if job.status != "completed":
        raise typer.Exit(1)


@app.command("list")
@friendly
def list_jobs(url: UrlOption = None, token: TokenOption = None) -> None:
    """All jobs with their status."""
    table = Table("name", "runs")
    table.add_column("status", no_wrap=True, min_width=len("cancelled"))  # read whole
    table.add_column("rounds")
    table.add_column("created")
    table.add_column("id", no_wrap=True, min_width=32)  # copied into other commands: whole
    with client(url, token) as api:
        jobs = api.jobs()
    for job in jobs:
        done = sum(1 for r in job.rounds if r.status == "closed")
        cells = (job.name, job.label, job.status, f"{done}/{job.planned_rounds or '?'}")
        table.add_row(*map(as_text, cells), f"{job.created_at:%Y-%m-%d %H:%M}", as_text(job.id))
    console.print(table)


@app.command()
@friendly
def result(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the result: model, report.json and plot, or an "
            "analysis's report.json, CSV tables and plots."
        ),
    ],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Download the result: a training job's final model with its report and metric curves,
    or an analysis's report, tidy CSV tables and plots; and every site's state with why."""
    from oncofed.client.analysis_output import render_analysis
    from oncofed.client.plots import write_job

    with client(url, token) as api:
        job = api.job(job_id)
        model = api.model_bytes(job_id) if job.spec.kind == "train" else None
    if job.spec.kind == "train":
        console.print(render_job(job))
    elif job.report is not None:
        console.print(render_analysis(job.report, job.participation))
    else:  # no result: who declined, expired or failed says why
        console.print(render_sites(job.participation))
    for path in write_job(job, out, model):  # a path is never broken across lines
        console.print(f"written: {path}", highlight=False, markup=False, soft_wrap=True)
