"""Plots of a job's metric curves, and the files ``oncofed job result`` writes."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from oncofed._text import figure_text
from oncofed.client._client import ClientError
from oncofed.client.analysis_output import write_analysis
from oncofed.client.report import build_report, curves
from oncofed.wire.messages import JobPublic


def plot_curves(job: JobPublic, path: Path) -> Path:
    """Training loss and held-out metrics against the round, pooled and per site."""
    rows = curves(job)
    metric = job.primary_metric
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    loss = [(r["round"], r["train_loss"]) for r in rows if r["train_loss"] is not None]
    if loss:
        ax_loss.plot(*zip(*loss, strict=True), marker="o")
    ax_loss.set(title="Training loss (sample-weighted)", xlabel="round", ylabel="loss")
    for site in job.sites:
        points = [(r["round"], r["site_metrics"].get(site, {}).get(metric)) for r in rows]
        points = [p for p in points if p[1] is not None]
        if points:
            ax_metric.plot(*zip(*points, strict=True), alpha=0.5, label=figure_text(site))
    pooled = [(r["round"], r["metrics"].get(metric)) for r in rows if metric in r["metrics"]]
    if pooled:
        ax_metric.plot(
            *zip(*pooled, strict=True),
            color="black",
            linewidth=2.5,
            label="all sites (sample-weighted)",
        )
    pooled_only = " (pooled only)" if job.spec.privacy.secure_aggregation else ""
    title = f"Held-out {metric} of the global model{pooled_only}"
    ax_metric.set(title=title, xlabel="round", ylabel=metric)
    ax_metric.legend(fontsize=8)
    fig.suptitle(figure_text(f"{job.name} ({job.label})"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_result(job: JobPublic, model: bytes, out: Path) -> dict[str, Path]:
    """``model.safetensors``, ``report.json`` and ``metrics.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "model": out / "model.safetensors",
        "report": out / "report.json",
        "plot": out / "metrics.png",
    }
    paths["model"].write_bytes(model)
    paths["report"].write_text(json.dumps(build_report(job), indent=2) + "\n")
    plot_curves(job, paths["plot"])
    return paths


def write_job(job: JobPublic, out: Path, model: bytes | None = None) -> list[Path]:
    """Any finished job's files in ``out``, the paths written: a training job's (its final
    ``model``, :func:`write_result`) or an analysis' (:func:`~oncofed.client.analysis_output.
    write_analysis`, with every site's state in ``report.json``). ClientError when there is no
    result to write."""
    if job.spec.kind == "analysis":
        if job.report is None:
            raise ClientError(f"job {job.id} has no report: it is {job.status} ({job.error or ''})")
        return write_analysis(job.report, job.name, out, job.participation)
    if model is None:
        raise ClientError(f"job {job.id} is a training job: give its model to write")
    return list(write_result(job, model, out).values())
