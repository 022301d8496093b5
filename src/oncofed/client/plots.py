"""Plots of a job's metric curves, and the files ``oncofed job result`` writes."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from oncofed._text import figure_text
from oncofed.client._client import ClientError
from oncofed.client.analysis_output import write_analysis
from oncofed.client.figures import label
from oncofed.client.model import model_file
from oncofed.client.report import build_report, curves, provenance
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.messages import JobPublic

POOLED_LABEL = {"mean_site_c_index": "mean of the sites' C-index (weighted by held-out rows)"}
"""How the plot names a pooled figure that is not computed over the pooled rows."""
_MARKED_ROUNDS = 12
"""Up to this many rounds the curves mark each round's point; beyond, lines alone."""


def curves_figure(job: JobPublic) -> Figure:
    """Training loss and held-out metrics against the round, pooled and per site: markers on
    the points of a few rounds only, lines alone beyond; the legend right of the axes."""
    rows = curves(job)
    metric = job.primary_metric
    marker = "o" if len(rows) <= _MARKED_ROUNDS else None
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    loss = [(r["round"], r["train_loss"]) for r in rows if r["train_loss"] is not None]
    if loss:
        ax_loss.plot(*zip(*loss, strict=True), marker=marker, markersize=4)
    else:
        ax_loss.text(
            0.5,
            0.5,
            "no training loss reported",
            transform=ax_loss.transAxes,
            ha="center",
            va="center",
            color="grey",
        )
    ax_loss.set(title="Training loss (sample-weighted)", xlabel="round", ylabel="loss")
    for site in job.sites:
        points = [(r["round"], r["site_metrics"].get(site, {}).get(metric)) for r in rows]
        points = [p for p in points if p[1] is not None]
        if points:
            ax_metric.plot(
                *zip(*points, strict=True),
                alpha=0.6,
                linewidth=1,
                marker=marker,
                markersize=4,
                label=label(site),
            )
    name = job.pooled_metric
    pooled = [(r["round"], r["metrics"].get(name)) for r in rows if name in r["metrics"]]
    if pooled:
        ax_metric.plot(
            *zip(*pooled, strict=True),
            color="black",
            linewidth=2.5,
            marker=marker,
            markersize=5,
            label=POOLED_LABEL.get(name, "all sites (pooled held-out rows)"),
        )
    band = [
        (r["round"], r["metrics"][f"{name}_lower"], r["metrics"][f"{name}_upper"])
        for r in rows
        if f"{name}_lower" in r["metrics"] and f"{name}_upper" in r["metrics"]
    ]
    if band:
        rounds, lower, upper = zip(*band, strict=True)
        ax_metric.fill_between(
            rounds, lower, upper, color="black", alpha=0.12, label="any order within the cells"
        )
    pooled_only = " (pooled only)" if job.spec.privacy.secure_aggregation else ""
    title = f"Held-out {metric} of the global model{pooled_only}"
    ax_metric.set(title=title, xlabel="round", ylabel=metric)
    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if ax_metric.get_legend_handles_labels()[0]:
        ax_metric.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(figure_text(f"{job.name} ({job.label})"))
    return fig


def plot_curves(job: JobPublic, path: Path) -> Path:
    """:func:`curves_figure` of ``job`` as a PNG at ``path``."""
    curves_figure(job).savefig(path, dpi=110)
    return path


def write_result(job: JobPublic, model: bytes, out: Path) -> dict[str, Path]:
    """``model.safetensors`` (``model``, the job's global model as the orchestrator serves
    it, with the metadata :func:`~oncofed.client.load_model` reads), ``report.json`` (with
    its provenance) and ``metrics.png`` in ``out``."""
    content = model_file(job, model)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "model": out / "model.safetensors",
        "report": out / "report.json",
        "plot": out / "metrics.png",
    }
    paths["model"].write_bytes(content)
    paths["report"].write_text(json.dumps(build_report(job), indent=2) + "\n")
    plot_curves(job, paths["plot"])
    return paths


def write_job(job: JobPublic, out: Path, model: bytes | None = None) -> list[Path]:
    """Any finished job's files in ``out``, the paths written: a training job's (its final
    ``model``, :func:`write_result`) or an analysis' (:func:`~oncofed.client.analysis_output.
    write_analysis`, with every site's state and the provenance in ``report.json``).
    ClientError when there is no result to write (a training job that has not completed)."""
    if isinstance(job.spec, AnalysisSpec):
        if job.report is None:
            raise ClientError(f"job {job.id} has no report: it is {job.status} ({job.error or ''})")
        return write_analysis(
            job.report, job.name, out, job.participation, provenance(job), job.spec.analysis
        )
    if job.status != "completed":
        raise ClientError(
            f"job {job.id} is {job.status}: a training job's model is written once it completed"
        )
    if model is None:
        raise ClientError(f"job {job.id} is a training job: give its model to write")
    return list(write_result(job, model, out).values())
