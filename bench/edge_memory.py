"""Memory of one edge process serving several sites: ``oncofed edge run --dir A --dir B ...``.

A real orchestrator (``oncofed orchestrator serve``, SQLite) and 10 enrolled sites, each with
the whole GBSG2 cohort (686 patients) imported in its own edge directory. One
``oncofed edge run`` process is started with 1, then 2, 5 and 10 of those directories; its
resident memory (``VmRSS``) and peak (``VmHWM``, from ``/proc/PID/status``) are read once the
agents poll, after an analysis round (counts, summary, Kaplan-Meier, Cox and logistic
regressions, every site taking part) and after a training round (the demo's Cox network; the
sites' policies allow training, so the process imports torch as it starts). What each site
beyond the first costs is the difference from the one-site process, divided by the sites
added; the target is under 30 MB.

``python bench/edge_memory.py [--sites 1,2,5,10] [--output FILE]``
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stamp import write_figures

from oncofed.client import Client
from oncofed.demo.data import PROJECT, demo_project, demo_specs, mapping_file
from oncofed.demo.federation import LocalFederation
from oncofed.edge import EdgeHome, LocalStore
from oncofed.edge.enrol import enrol
from oncofed.edge.importing import Source, import_source
from oncofed.orchestrator import setup as state
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.projects import NewProject, covering

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-edge-memory.json"
TARGET_MB = 30.0
MB = 1 << 20
POLL_SECONDS = 5.0
SETTLE_S = 3.0
"""Seconds to let the agents introduce themselves and send their data profiles."""
PHASES = ("polling", "analysis", "training")


def analysis(name: str, spec: dict[str, Any]) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {"kind": "analysis", "name": name, "project": PROJECT, "dataset": "gbsg2",
         "analysis": spec, "round_timeout_s": 120}
    )  # fmt: skip


SURVIVAL = {"time": "rfs_days", "event": "rfs_event"}
COVARIATES = ["age_at_diagnosis", {"name": "tumour_size_mm", "transform": "log1p"}]
ANALYSES = [
    analysis("counts", {"type": "counts", "rows": "treatment.endocrine"}),
    analysis(
        "summary",
        {"type": "summary", "variable": "age_at_diagnosis", "bins": [30, 40, 50, 60, 70, 80]},
    ),
    analysis("kaplan-meier", {"type": "kaplan_meier", "outcome": SURVIVAL}),
    analysis("cox", {"type": "cox", "outcome": SURVIVAL, "covariates": COVARIATES}),
    analysis(
        "logistic",
        {
            "type": "logistic",
            "outcome": {**SURVIVAL, "horizon_days": 1825},
            "covariates": COVARIATES,
        },
    ),
]
TRAINING = next(spec for spec in demo_specs() if spec.model.type == "cox_mlp").model_copy(
    update={"rounds": 1, "min_sites": 1, "round_timeout_s": 120}
)


class Sites(LocalFederation):
    """The orchestrator and every site enrolled, its data imported (in this process) and the
    project approved; no edge is started (``measure`` starts them)."""

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = state.initialise(self.state_dir)
        self.start_orchestrator()
        for site, data in self.site_data.items():
            created = state.add_site(self.state_dir, site)
            home = EdgeHome(self.edge_dir(site))
            enrol(home, self.url, created.enrolment_token)
            import_source(LocalStore(home.datasets), self.dataset, data, threshold=11)
        self.pin_peers()
        self.approve(self.project)


def memory(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024 / MB  # kB
    return {"rss_mb": round(fields["VmRSS"], 1), "hwm_mb": round(fields["VmHWM"], 1)}


def run_jobs(client: Client, specs: list[Any], sites: list[str]) -> None:
    """Submit ``specs`` to ``sites`` alone and wait until each completes, every site in it."""
    ids = [client.submit(s.model_copy(update={"sites": sites, "min_sites": 1})).id for s in specs]
    for job_id in ids:
        job = client.wait(job_id, timeout=300)
        took_part = sorted(
            s for s, st in job.participation.sites.items() if st.state == "took_part"
        )
        if job.status != "completed" or took_part != sorted(sites):
            raise RuntimeError(f"job {job.name}: {job.status} {job.error or ''} ({took_part})")


def measure(federation: Sites, sites: list[str]) -> dict[str, Any]:
    """Start one edge process for ``sites``; its memory once polling, after the analyses and
    after the training round."""
    dirs = [arg for site in sites for arg in ("--dir", str(federation.edge_dir(site)))]
    log_path = federation.logs / f"edge-{len(sites)}.log"
    command = [sys.executable, "-m", "oncofed", "edge", "run", *dirs,
               "--poll-seconds", str(POLL_SECONDS), "--log-level", "warning"]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        give_up = time.monotonic() + 120
        while log_path.read_text(errors="replace").count("polling") < len(sites):
            if process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"the edge did not start; see {log_path}")
            time.sleep(0.1)
        time.sleep(SETTLE_S)
        figures: dict[str, Any] = {"sites": len(sites), "polling": memory(process.pid)}
        with federation.client() as client:
            began = time.monotonic()
            run_jobs(client, ANALYSES, sites)
            figures["analysis"] = memory(process.pid) | {"wall_s": _since(began)}
            began = time.monotonic()
            run_jobs(client, [TRAINING], sites)
            figures["training"] = memory(process.pid) | {"wall_s": _since(began)}
        return figures
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def per_further_site(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For each phase and each run of more than one site: (MB of that run - MB of the one-site
    run) / (sites - 1), for the resident memory and the peak."""
    first = next(run for run in runs if run["sites"] == 1)
    added: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        for key in ("rss_mb", "hwm_mb"):
            added[f"{phase}_{key}"] = {
                str(run["sites"]): round(
                    (run[phase][key] - first[phase][key]) / (run["sites"] - 1), 1
                )
                for run in runs
                if run["sites"] > 1
            }
    return added


def print_figures(runs: list[dict[str, Any]], added: dict[str, dict[str, float]]) -> None:
    print(f"\n{'sites':>5}  " + "  ".join(f"{phase + ' RSS/peak MB':>22}" for phase in PHASES))
    for run in runs:
        cells = [f"{run[p]['rss_mb']:>10.1f} / {run[p]['hwm_mb']:<9.1f}" for p in PHASES]
        print(f"{run['sites']:>5}  " + "  ".join(f"{cell:>22}" for cell in cells))
    print(f"\nEach site beyond the first (MB; target < {TARGET_MB:.0f} MB):")
    for name, by_count in added.items():
        figures = ", ".join(f"{count} sites: {mb:.1f}" for count, mb in by_count.items())
        worst = max(by_count.values(), default=0.0)
        verdict = "meets" if worst < TARGET_MB else "MISSES"
        print(f"  {name:<18} {figures}  ({verdict} the target)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="1,2,5,10", help="Site counts, comma-separated.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.sites.split(",")} | {1})
    names = [f"site-{i:02d}" for i in range(1, max(counts) + 1)]
    scratch = Path(tempfile.mkdtemp(prefix="oncofed-edge-memory-"))
    cohort = _gbsg2_export(scratch / "export")
    study = NewProject(
        **demo_project().model_dump(exclude={"scope"}), scope=covering([*ANALYSES, TRAINING])
    )
    began = time.monotonic()
    with Sites(scratch, dict.fromkeys(names, cohort), project=study) as federation:
        print(f"{len(names)} sites enrolled and imported in {_since(began)} s ({scratch})")
        runs = []
        for count in counts:
            runs.append(measure(federation, names[:count]))
            rss = ", ".join(f"{phase} {runs[-1][phase]['rss_mb']:.0f}" for phase in PHASES)
            print(f"{count} sites: RSS MB {rss}", flush=True)
    added = per_further_site(runs)
    print_figures(runs, added)
    worst = max((mb for by_count in added.values() for mb in by_count.values()), default=0.0)
    figures = {
        "target_mb_per_further_site": TARGET_MB,
        "patients_per_site": 686,
        "poll_seconds": POLL_SECONDS,
        "analyses": [spec.name for spec in ANALYSES],
        "training": {"job": TRAINING.name, "model": TRAINING.model.type, "rounds": 1},
        "runs": runs,
        "per_further_site_mb": added,
        "worst_per_further_site_mb": worst,
        "meets_target": worst < TARGET_MB,
    }
    write_figures(args.output, figures)
    print(f"\nwritten to {args.output}")


def _gbsg2_export(out: Path) -> Source:
    """The whole GBSG2 cohort as the demo's north hospital exports it (CSV and mapping)."""
    from lifelines.datasets import load_gbsg2

    out.mkdir(parents=True)
    raw = out / "gbsg2.csv"
    load_gbsg2().to_csv(raw, index=False)
    return Source("csv", str(raw), mapping_file("gbsg2.yaml", out))


def _since(began: float) -> float:
    return round(time.monotonic() - began, 1)


if __name__ == "__main__":
    main()
