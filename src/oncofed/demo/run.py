"""``oncofed demo``: a real federation of 4 hospitals on this machine, its jobs, comparisons."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from oncofed.cdm.frame import job_table
from oncofed.cli.watch import live_view, render_job
from oncofed.client import Client
from oncofed.client.analysis_output import render_analysis
from oncofed.client.plots import write_job, write_result
from oncofed.demo.baselines import compare, exact_analysis, largest_gap, site_splits
from oncofed.demo.data import FORMATS, demo_analyses, demo_specs, site_tables, write_exports
from oncofed.demo.federation import DATASET, LocalFederation
from oncofed.edge import EdgePolicy
from oncofed.edge.store import LocalStore
from oncofed.learning.data import Table as Rows
from oncofed.wire import tensors
from oncofed.wire.analysis import REPORTS, AnalysisSpec, SurvivalReport
from oncofed.wire.messages import JobPublic

TOLERANCE = 0.03


def run_demo(console: Console, out: Path | None = None, keep: bool = False) -> dict[str, Any]:
    """Run the demo end to end and return (and write) its report."""
    started = time.monotonic()
    out = out or Path.cwd() / f"oncofed-demo-{datetime.now():%Y%m%d-%H%M%S}"
    work = Path(tempfile.mkdtemp(prefix="oncofed-demo-"))
    tables = site_tables()
    sources = write_exports(work / "hospital-exports", tables)
    console.rule("[bold]oncofed demo: 4 hospitals, GBSG2 breast cancer cohort (686 patients)")
    console.print(
        ", ".join(f"{site}: {len(tables[site])} patients as {FORMATS[site]}" for site in tables)
    )
    specs, analyses = demo_specs(), demo_analyses()
    try:
        with LocalFederation(work, sources, tls=True) as fed:
            console.print(
                f"each edge imported its export into the common data model; orchestrator "
                f"{fed.url} and {len(fed.edges)} edge processes started "
                f"({time.monotonic() - started:.1f}s); edges only dial out, over mutual TLS "
                "with certificates from the consortium CA"
            )
            console.print(
                f"project {fed.project.name} declared; each site's admin approved it on its "
                f"dataset {DATASET}: its jobs run only there, within its declared fields"
            )
            api = fed.client()
            console.print(_profiles(api, list(tables)))
            ids = [api.submit(spec).id for spec in specs]
            ids += [api.submit(spec).id for spec in analyses]
            finished = _follow(console, api.job, ids)
            jobs, studies = finished[: len(specs)], finished[len(specs) :]
            models = {job.id: api.model_bytes(job.id) for job in jobs}
            for job in jobs:
                write_result(job, models[job.id], out / job.name)
            imported = {s: LocalStore(fed.edge_dir(s) / "datasets").load(DATASET) for s in tables}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    results = []
    for job in finished:
        if job.status != "completed":
            raise RuntimeError(f"job {job.name} {job.status}: {job.error}")
    for spec, job in zip(specs, jobs, strict=True):
        splits = site_splits(spec, {s: job_table(spec, data) for s, data in imported.items()})
        spent = {site: status.epsilon for site, status in job.participation.sites.items()}
        result = compare(spec, splits, tensors.decode(models[job.id]))
        dp = spec.privacy.differential_privacy
        results.append(result if dp is None else result | {"epsilon": spent, "delta": dp.delta})
    private = {
        job.name: _noise_cost(spec, job, {s: job_table(spec, data) for s, data in imported.items()})
        for spec, job in zip(analyses, studies, strict=True)
        if spec.privacy.differential_privacy is not None
    }
    report = {
        "sites": {site: len(frame) for site, frame in tables.items()},
        "jobs": results,
        "analyses": {
            job.name: REPORTS.dump_python(job.report, mode="json")
            for job in studies
            if job.report is not None
        },
        "private_analyses": private,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for result in results:
        console.print(_table(result))
    for job in studies:
        assert job.report is not None  # completed
        console.print(render_analysis(job.report))
        plots = [p for p in write_job(job, out / job.name) if p.suffix == ".png"]
        console.print(f"{job.name}: {', '.join(str(p) for p in plots)}", highlight=False)
        if job.name in private:
            gap = private[job.name]["largest_gap"]
            console.print(
                f"{job.name}: the noisy curves are within {gap:.3f} of the exact ones (which "
                "only this demo, holding every site's rows, can compute)",
                highlight=False,
            )
    console.print(
        f"Finished in {report['seconds']}s. Report, models and plots: [bold]{out}[/]"
        + (f"; federation files kept in {work}" if keep else "")
    )
    return report


def _noise_cost(spec: AnalysisSpec, job: JobPublic, tables: dict[str, Rows]) -> dict[str, Any]:
    """What a differentially private analysis spent at each site, and how far its curves are
    from the exact ones."""
    assert isinstance(job.report, SurvivalReport)  # the demo's private analysis
    exact = exact_analysis(spec, tables, EdgePolicy().small_cell_threshold)
    assert isinstance(exact, SurvivalReport)
    return {
        "epsilon": {site: status.epsilon for site, status in job.participation.sites.items()},
        "largest_gap": round(largest_gap(job.report, exact), 4),
    }


def _profiles(api: Client, sites: list[str], timeout: float = 30.0) -> Table:
    """What each site's data quality report, as the orchestrator received it, says."""
    deadline = time.monotonic() + timeout
    while not all(api.profiles(site) for site in sites) and time.monotonic() < deadline:
        time.sleep(0.2)
    table = Table(
        "site", "imported from", "patients", "rejected", "grade",
        title="Data quality reports received by the orchestrator (oncofed site profile SITE)",
    )  # fmt: skip
    for site in sites:
        for p in api.profiles(site):
            grade = next(f.values for f in p.fields if f.field == "grade")
            shown = " · ".join(f"{k} {v}" for k, v in (grade or {}).items() if v != 0)
            rejected = ", ".join(f"{k}: {v}" for k, v in p.rejected.items()) or "none"
            table.add_row(site, p.source_format, str(p.patients), rejected, shown)
    return table


def _follow(console: Console, get: Any, ids: list[str]) -> list[JobPublic]:
    with live_view(console) as live:
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
    reference = (
        "pooled: one model trained centrally on every site's training rows (the reference); "
        "X only: trained on site X's rows alone.\n"
    )
    if "epsilon" not in result:
        within = "within" if abs(gap) <= TOLERANCE else "OUTSIDE"
        table.caption = (
            f"{reference}federated - pooled = {gap:+.3f} ({within} {TOLERANCE}); "
            f"federated - mean single-site = {above:+.3f}"
        )
        return table
    spent = ", ".join(
        f"{site} {'-' if e is None else f'{e:.2f}'}" for site, e in result["epsilon"].items()
    )
    table.caption = (
        f"{reference}federated with differential privacy (the pooled and single-site models "
        f"are not): utility lost against pooled = {gap:+.3f}; epsilon spent at each site "
        f"(delta {result['delta']:g}): {spent}"
    )
    return table
