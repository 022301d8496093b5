"""``oncofed orchestrator``: initialise and serve the central coordinator."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from oncofed.cli._common import StateDir, console, friendly, setup_logging
from oncofed.orchestrator import Settings, create_app, migrate
from oncofed.orchestrator import setup as state
from oncofed.orchestrator.memory import bound_allocator, settle_collector

app = typer.Typer(help="Run the orchestrator (the operator's side).", no_args_is_help=True)


@app.command()
@friendly
def init(
    home: StateDir,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL, e.g. postgresql+pg8000://user@host/db (default SQLite)."
        ),
    ] = None,
) -> None:
    """Create the state directory and database; print the operator token once."""
    token = state.initialise(home, database_url)
    console.print(
        f"Orchestrator state in [bold]{home}[/] ({Settings.load(home).url.split('://')[0]})."
    )
    console.print("Operator token (shown once, keep it secret):")
    console.print(token, soft_wrap=True, highlight=False)


@app.command()
@friendly
def serve(
    home: StateDir,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8740,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Serve the API (migrating the database to the newest schema first)."""
    setup_logging(log_level.upper())
    bound_allocator()
    settings = Settings.load(home)
    migrate(settings.url)
    application = create_app(settings)
    settle_collector()
    uvicorn.run(application, host=host, port=port, log_level=log_level, access_log=False)


@app.command()
@friendly
def token(
    home: StateDir,
    name: Annotated[str, typer.Argument(help="Who the token is for.")],
    role: Annotated[str, typer.Option(help="researcher or admin.")] = "researcher",
) -> None:
    """Create a token for a researcher (or another operator); printed once."""
    console.print(state.add_principal(home, name, role), soft_wrap=True, highlight=False)
