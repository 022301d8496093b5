"""A job's report: metric curves per round, per-site and pooled final metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oncofed import __version__

if TYPE_CHECKING:
    from oncofed.wire.messages import JobPublic

POOLED_ONLY = "secure aggregation: the held-out metrics are pooled only, no site's own is known"
"""What a securely aggregated job says in place of per-site metrics."""


def curves(job: JobPublic) -> list[dict[str, Any]]:
    """One row per global model version v (0 = initial): round v's training loss and the
    held-out metrics of the model after round v (reported by the sites in round v + 1)."""
    by_number = {r.number: r for r in job.rounds}
    rows = []
    for version in range((job.planned_rounds or 2) - 1):
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
    """Metrics of the final model on each site's held-out rows, and pooled: over the pooled
    held-out rows (a C-index: the mean of the sites' own, named ``mean_site_c_index``), with
    the rows behind each and notes on what a pooled figure leaves out or is; under secure
    aggregation pooled only, with a note saying so."""
    final = next((r for r in job.rounds if r.kind == "evaluate"), None)
    if final is None:
        return {}
    pooled = {"pooled": final.metrics, "pooled_rows": final.metric_rows, "notes": final.notes}
    if job.spec.privacy.secure_aggregation:
        return {**pooled, "sites": {}, "note": POOLED_ONLY}
    return {
        **pooled,
        "sites": {
            name: {"n_eval": s.n_eval, **s.metrics}
            for name, s in final.sites.items()
            if s.status == "accepted"
        },
    }


def provenance(job: JobPublic) -> dict[str, Any]:
    """Where a result comes from, as every ``report.json`` states it: the job, its full spec
    and the spec's SHA-256 (of its canonical JSON: the hash the audit log and every site pin),
    project and dataset, every site and its state, when the job started and ended, and the
    oncofed version that wrote the report."""
    from oncofed.audit import sha256_of  # SQLAlchemy: the audit log's package

    spec = job.spec.model_dump(mode="json")
    states = job.participation.sites
    return {
        "job_id": job.id,
        "job_name": job.name,
        "kind": job.spec.kind,
        "status": job.status,
        "error": job.error,
        "spec": spec,
        "spec_sha256": sha256_of(spec),
        "project": job.spec.project,
        "dataset": job.spec.dataset,
        "sites": {
            name: states[name].state.value if name in states else None
            for name in sorted({*job.sites, *states})
        },
        "started_at": job.created_at.isoformat(),
        "ended_at": None if job.finished_at is None else job.finished_at.isoformat(),
        "oncofed_version": __version__,
    }


def build_report(job: JobPublic) -> dict[str, Any]:
    """A training job's ``report.json``: its provenance, final and per-round metrics, and
    every site's participation."""
    return {
        "provenance": provenance(job),
        "model_sha256": job.model_sha256,
        "primary_metric": job.primary_metric,
        "final": final_metrics(job),
        "rounds": curves(job),
        "participation": job.participation.model_dump(mode="json"),
    }
