"""The ``oncofed`` command: one group per role, each in its own module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oncofed.cli import access, audit, demo, edge, job, model, orchestrator, projects, site
from oncofed.cli._common import CA_FILE, DEBUG, GuardedGroup

app = typer.Typer(
    help="oncofed: federated learning across cancer centres; no patient row leaves a hospital.",
    cls=GuardedGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # a docstring's paragraph is one paragraph, not its lines
)


def _show_version(value: bool) -> None:
    """``--version``: the installed package's version."""
    if value:
        from importlib.metadata import version  # email, zipfile and csv: not for every start

        typer.echo(f"oncofed {version('oncofed')}")
        raise typer.Exit()


@app.callback()
def main(
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            envvar="ONCOFED_CA",
            help="The consortium CA's certificate: the orchestrator's must chain to it "
            "(the system's store is not used). For the commands that call the API.",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug/--no-debug",
            help="Show an error's traceback. Else an unexpected error's is kept in "
            "last-error.log in $ONCOFED_LOG_DIR or ~/.cache/oncofed.",
        ),
    ] = False,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """oncofed: federated learning across cancer centres; no patient row leaves a hospital."""
    CA_FILE.set(ca)
    DEBUG.set(debug)


app.add_typer(orchestrator.app, name="orchestrator")
app.add_typer(site.app, name="site")
app.add_typer(edge.app, name="edge")
app.add_typer(job.app, name="job")
app.add_typer(access.token_app, name="token")
app.add_typer(access.person_app, name="person")
app.add_typer(projects.project_app, name="project")
app.add_typer(audit.app, name="audit")
app.add_typer(demo.app, name="demo")
app.add_typer(model.app, name="model")
