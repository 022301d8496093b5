"""The ``oncofed`` command: one group per role, each in its own module."""

from __future__ import annotations

import typer

from oncofed.cli import demo, edge, job, orchestrator, site

app = typer.Typer(
    help="oncofed: federated learning across cancer centres; no patient row leaves a hospital.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # a docstring's paragraph is one paragraph, not its lines
)
app.add_typer(orchestrator.app, name="orchestrator")
app.add_typer(site.app, name="site")
app.add_typer(edge.app, name="edge")
app.add_typer(job.app, name="job")
app.add_typer(demo.app, name="demo")
