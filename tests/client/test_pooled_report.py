"""A training job's report says what its pooled figures are (issue 14): over the pooled
held-out rows with the rows behind each and notes on what they leave out; the AUC with its
bounds drawn; a survival model's pooled figure named as the mean of the sites'."""

from __future__ import annotations

from matplotlib.collections import PolyCollection
from rich.console import Console

from oncofed.cli.watch import render_details
from oncofed.client.plots import curves_figure
from oncofed.client.report import final_metrics
from oncofed.wire.messages import JobPublic
from tests.client.test_training_plot import _job

NOTE = "auc: leaves out 3 held-out rows of west (no score histogram)"


def _final(job: JobPublic, metrics: dict[str, float]) -> JobPublic:
    rounds = list(job.rounds)
    rounds[-1] = rounds[-1].model_copy(
        update={
            "kind": "evaluate",
            "metrics": metrics,
            "metric_rows": dict.fromkeys(metrics, 40),
            "notes": [NOTE],
        }
    )
    return job.model_copy(update={"rounds": rounds})


def test_the_report_gives_the_rows_and_the_notes_of_the_pooled_figures() -> None:
    job = _final(_job(3), {"auc": 0.7, "auc_lower": 0.6, "auc_upper": 0.8, "accuracy": 0.6})
    final = final_metrics(job)
    assert final["pooled"]["auc"] == 0.7
    assert final["pooled_rows"] == {"auc": 40, "auc_lower": 40, "auc_upper": 40, "accuracy": 40}
    assert final["notes"] == [NOTE]


def test_the_plot_draws_the_bounds_of_the_pooled_auc() -> None:
    job = _job(3)
    rounds = [
        r.model_copy(update={"metrics": {**r.metrics, "auc_lower": 0.5, "auc_upper": 0.9}})
        for r in job.rounds
    ]
    fig = curves_figure(job.model_copy(update={"rounds": rounds}))
    bands = [c for c in fig.axes[1].collections if isinstance(c, PolyCollection)]
    assert [b.get_label() for b in bands] == ["any order within the cells"]


def test_a_survival_jobs_pooled_figure_is_named_a_mean() -> None:
    job = _job(3)
    outcome = job.spec.outcome.model_copy(update={"type": "survival"})
    spec = job.spec.model_copy(update={"outcome": outcome})
    rounds = [
        r.model_copy(
            update={
                "metrics": {"mean_site_c_index": 0.66},
                "sites": {
                    name: site.model_copy(update={"metrics": {"c_index": 0.6}})
                    for name, site in r.sites.items()
                },
            }
        )
        for r in job.rounds
    ]
    survival = job.model_copy(update={"spec": spec, "rounds": rounds})
    assert survival.primary_metric == "c_index"
    assert survival.pooled_metric == "mean_site_c_index"
    labels = [str(line.get_label()) for line in curves_figure(survival).axes[1].get_lines()]
    assert labels[-1] == "mean of the sites' C-index (weighted by held-out rows)"


def test_job_show_prints_what_the_pooled_figures_leave_out() -> None:
    job = _final(_job(3), {"auc": 0.7, "auc_lower": 0.6, "auc_upper": 0.8})
    console = Console(width=100, record=True)
    console.print(render_details(job))
    shown = " ".join(console.export_text().replace("│", " ").split())
    assert NOTE in shown
    assert "auc 0.700, auc_lower 0.600, auc_upper 0.800" in shown
