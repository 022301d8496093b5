"""``oncofed edge``: the site admin's commands, run inside the hospital."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table

from oncofed.cli._common import console, friendly, setup_logging
from oncofed.edge import EdgeHome
from oncofed.edge.enrol import enrol

app = typer.Typer(help="Run an edge node inside a hospital.", no_args_is_help=True)
dataset_app = typer.Typer(help="Register local tables.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

EdgeDir = Annotated[Path, typer.Option("--dir", help="Edge directory.", show_default=False)]


@app.command()
@friendly
def init(
    home: EdgeDir,
    orchestrator: Annotated[
        str, typer.Option(help="Orchestrator URL, e.g. https://fl.example.org")
    ],
    token: Annotated[str, typer.Option(help="One-time enrolment token from the operator.")],
) -> None:
    """Enrol this site. Its credential is stored in the edge directory and never printed."""
    config = enrol(EdgeHome(home), orchestrator, token)
    console.print(f"Enrolled as site [bold]{config.site}[/]; settings and policy in {home}.")


@dataset_app.command("add")
@friendly
def dataset_add(
    name: Annotated[str, typer.Argument(help="Name jobs use for this table.")],
    file: Annotated[Path, typer.Argument(help="A .csv or .parquet file.")],
    home: EdgeDir,
) -> None:
    """Register a local CSV or Parquet table (its column names are the features)."""
    from oncofed.edge.store import LocalStore

    table = LocalStore(EdgeHome(home).datasets).add(name, file)
    console.print(f"Dataset [bold]{name}[/]: {table.num_rows} rows, columns {table.column_names}")


@dataset_app.command("list")
@friendly
def dataset_list(home: EdgeDir) -> None:
    """Registered tables."""
    from oncofed.edge.store import LocalStore

    store = LocalStore(EdgeHome(home).datasets)
    table = Table("dataset", "rows", "columns")
    for name in store.names():
        columns = store.load(name)
        rows = len(next(iter(columns.values()))) if columns else 0
        table.add_row(name, str(rows), ", ".join(columns))
    console.print(table)


@app.command()
@friendly
def run(
    home: EdgeDir,
    poll_seconds: Annotated[float, typer.Option(help="Long-poll duration.")] = 25.0,
    threads: Annotated[int, typer.Option(help="Torch CPU threads for local training.")] = 1,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Run the agent: dial out, long-poll for tasks, work locally, post results. Ctrl-C stops."""
    import torch

    from oncofed.edge.agent import Agent

    setup_logging(log_level.upper())
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    signal.signal(signal.SIGTERM, _interrupt)
    agent = Agent(EdgeHome(home), poll_seconds=poll_seconds)
    console.print(f"Edge [bold]{agent.site}[/] polling {agent.orchestrator} (no listening port).")
    try:
        agent.run()
    except KeyboardInterrupt:
        console.print("Stopped. A task cut short is sent again by the orchestrator on restart.")
    finally:
        agent.close()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM stops the agent like Ctrl-C, even in the middle of a long poll."""
    raise KeyboardInterrupt
