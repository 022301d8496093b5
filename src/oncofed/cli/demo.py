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
    out: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Folder for report.json (default: new).")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep/--no-keep", help="Keep the federation's state and logs.")
    ] = False,
) -> None:
    """Start an orchestrator and 4 edges as processes, train two models, compare."""
    if ctx.invoked_subcommand is not None:
        return
    from oncofed.demo.run import run_demo

    run_demo(console, out, keep)


@app.command()
@friendly
def data(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Folder for exports and job specs.")],
) -> None:
    """Write the demo's 4 hospital exports (CSV, OMOP, FHIR, Parquet) with their mapping files
    and its job specs with the project they belong to, to run the federation by hand."""
    from oncofed.demo.data import write_demo_inputs

    console.print("Each hospital's export, and the command its edge imports it with:")
    for site, source in write_demo_inputs(out).items():
        mapping = f" --mapping {source.mapping}" if source.mapping else ""
        command = f"oncofed edge import {source.location} --from {source.format}{mapping}"
        console.print(f"{site}: {command} --dir EDGE --name gbsg2", soft_wrap=True)
    specs = sorted(p for p in out.glob("*.yaml") if p.name != "project.yaml")
    console.print(f"the project they belong to: {out / 'project.yaml'}", soft_wrap=True)
    console.print(f"job specs: {', '.join(str(p) for p in specs)}")
