"""``oncofed demo``: a real federation of 4 hospitals on this machine, two jobs, a comparison."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from oncofed.cli.watch import render_job
from oncofed.client.plots import write_result
from oncofed.demo.baselines import compare, site_splits
from oncofed.demo.data import demo_specs, site_tables
from oncofed.demo.federation import LocalFederation
from oncofed.wire import tensors
from oncofed.wire.messages import JobPublic

TOLERANCE = 0.03


def run_demo(console: Console, out: Path | None = None, keep: bool = False) -> dict[str, Any]:
    """Run the demo end to end and return (and write) its report."""
    started = time.monotonic()
    out = out or Path.cwd() / f"oncofed-demo-{datetime.now():%Y%m%d-%H%M%S}"
    work = Path(tempfile.mkdtemp(prefix="oncofed-demo-"))
    tables = site_tables()
    inputs = work / "hospital-exports"
    inputs.mkdir()
    for site, frame in tables.items():
        frame.to_csv(inputs / f"{site}.csv", index=False)
    console.rule("[bold]oncofed demo: 4 hospitals, GBSG2 breast cancer cohort (686 patients)")
    console.print(", ".join(f"{site}: {len(frame)} patients" for site, frame in tables.items()))
    specs = demo_specs()
    try:
        with LocalFederation(work, {s: inputs / f"{s}.csv" for s in tables}) as fed:
            console.print(
                f"orchestrator {fed.url} and {len(fed.edges)} edge processes started "
                f"({time.monotonic() - started:.1f}s); edges only dial out"
            )
            api = fed.client()
            ids = [api.submit(spec).id for spec in specs]
            jobs = _follow(console, api.job, ids)
            models = {job.id: api.model_bytes(job.id) for job in jobs}
            for job in jobs:
                write_result(job, models[job.id], out / job.name)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    columns = {s: {c: f.loc[:, c].to_numpy() for c in f.columns} for s, f in tables.items()}
    results = []
    for spec, job in zip(specs, jobs, strict=True):
        if job.status != "completed":
            raise RuntimeError(f"job {job.name} {job.status}: {job.error}")
        splits = site_splits(spec, columns)
        results.append(compare(spec, splits, tensors.decode(models[job.id])))
    report = {
        "sites": {site: len(frame) for site, frame in tables.items()},
        "jobs": results,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for result in results:
        console.print(_table(result))
    console.print(
        f"Finished in {report['seconds']}s. Report, models and plots: [bold]{out}[/]"
        + (f"; federation files kept in {work}" if keep else "")
    )
    return report


def _follow(console: Console, get: Any, ids: list[str]) -> list[JobPublic]:
    with Live(console=console, refresh_per_second=4) as live:
        while True:
            jobs = [get(job_id) for job_id in ids]
            live.update(Group(*(render_job(job) for job in jobs)))
            if all(job.status != "running" for job in jobs):
                return jobs
            time.sleep(0.25)


def _table(result: dict[str, Any]) -> Table:
    """Rows: models; columns: each site's held-out patients, then all of them."""
    by_site = result["by_site_held_out"]
    sites = list(result["held_out_patients"])
    metric = result["metric"]
    table = Table(
        "model",
        *(f"{s} (n={result['held_out_patients'][s]})" for s in sites),
        "all held-out",
        title=f"{result['name']} ({result['model']}): held-out {metric}",
    )
    for name, scores in by_site.items():
        fixed = {"federated": "[bold]federated[/]", "pooled": "pooled"}
        label = fixed.get(name, name.replace("site:", "") + " only")
        table.add_row(label, *(f"{scores[s]:.3f}" for s in sites), f"{scores['union']:.3f}")
    gap = result["federated"] - result["pooled"]
    above = result["federated"] - result["single_site_mean"]
    table.caption = (
        "pooled: one model trained centrally on every site's training rows (the reference); "
        "X only: trained on site X's rows alone.\n"
        f"federated - pooled = {gap:+.3f} ({'within' if abs(gap) <= TOLERANCE else 'OUTSIDE'} "
        f"{TOLERANCE}); federated - mean single-site = {above:+.3f}"
    )
    return table
