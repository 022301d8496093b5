"""``oncofed demo``: run the whole federation locally, or write its inputs for a manual run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oncofed.cli._common import console, friendly

app = typer.Typer(help="A whole federation on this machine with real cancer data.")


@app.callback(invoke_without_command=True)
@friendly
def demo(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="Folder for report.json (default: new).")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the federation's state and logs.")] = False,
) -> None:
    """Start an orchestrator and 4 edges as processes, train two models, compare."""
    if ctx.invoked_subcommand is not None:
        return
    from oncofed.demo.run import run_demo

    run_demo(console, out, keep)


@app.command()
@friendly
def data(out: Annotated[Path, typer.Option(help="Folder for site CSVs and job specs.")]) -> None:
    """Write the demo's 4 hospital CSVs and its 2 job specs, to run the federation by hand."""
    from oncofed.demo.data import write_demo_inputs

    for site, path in write_demo_inputs(out).items():
        console.print(f"{site}: {path}")
    console.print(f"job specs: {', '.join(str(p) for p in sorted(out.glob('*.yaml')))}")
