"""A job's report: metric curves per round, per-site and pooled final metrics, and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from oncofed.wire.messages import JobPublic


def curves(job: JobPublic) -> list[dict[str, Any]]:
    """One row per global model version v (0 = initial): round v's training loss and the
    held-out metrics of the model after round v (reported by the sites in round v + 1)."""
    by_number = {r.number: r for r in job.rounds}
    rows = []
    for version in range(job.spec.rounds + 1):
        trained = by_number.get(version) if version >= 1 else None
        evaluated = by_number.get(version + 1)
        if trained is None and evaluated is None:
            break
        rows.append(
            {
                "round": version,
                "train_loss": trained.train_loss if trained else None,
                "sites_reporting": _accepted(trained) if trained else None,
                "metrics": evaluated.metrics if evaluated else {},
                "site_metrics": {
                    name: site.metrics
                    for name, site in (evaluated.sites if evaluated else {}).items()
                },
            }
        )
    return rows


def _accepted(rnd: Any) -> int:
    return sum(1 for s in rnd.sites.values() if s.status == "accepted")


def final_metrics(job: JobPublic) -> dict[str, Any]:
    """Metrics of the final model on each site's held-out rows, and pooled (sample-weighted)."""
    final = next((r for r in job.rounds if r.kind == "evaluate"), None)
    if final is None:
        return {}
    return {
        "pooled": final.metrics,
        "sites": {
            name: {"n_eval": s.n_eval, **s.metrics}
            for name, s in final.sites.items()
            if s.status == "accepted"
        },
    }


def build_report(job: JobPublic) -> dict[str, Any]:
    return {
        "job": {"id": job.id, "name": job.name, "status": job.status, "error": job.error},
        "spec": job.spec.model_dump(mode="json"),
        "sites": job.sites,
        "model_sha256": job.model_sha256,
        "primary_metric": job.primary_metric,
        "final": final_metrics(job),
        "rounds": curves(job),
    }


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
            ax_metric.plot(*zip(*points, strict=True), alpha=0.5, label=site)
    pooled = [(r["round"], r["metrics"].get(metric)) for r in rows if metric in r["metrics"]]
    if pooled:
        ax_metric.plot(
            *zip(*pooled, strict=True),
            color="black",
            linewidth=2.5,
            label="all sites (sample-weighted)",
        )
    ax_metric.set(title=f"Held-out {metric} of the global model", xlabel="round", ylabel=metric)
    ax_metric.legend(fontsize=8)
    fig.suptitle(f"{job.name} ({job.spec.model.type}, {job.spec.strategy.name})")
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
