"""Round 0 against training rounds, job after job on one federation: where its extra time goes.

``bench/peers.py`` times one job per launch of the processes, so its round 0 is also the
edges' first work since they started. Here the shared task's federation (``peers.py``'s: the
same sites, data, policies and processes, at ``--sites`` sites) runs ``--jobs`` jobs one after
the other, with ``--idle`` seconds of nothing before the third (as a consortium's edges wait
between studies). For each job: round 0's time and its training rounds' median (as
``peers.py`` reports them), and, from the orchestrator's database and the edges' egress logs,
two legs of each round for the site that answered last: from the round's tasks being handed
out to that site's answer leaving it (``to answer``: the task's work at the site, with the
other sites' on the same cores), and from then to the orchestrator recording it (``to
record``: the edge's signed audit entry and synced commit, the post, the orchestrator's read
and its batch). Training rounds' legs are the medians over rounds 2 on (round 1, a job's
first training round, apart).

``python bench/round_zero.py [--sites 4] [--model logistic] [--jobs 4] [--idle 10]
[--output FILE]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import peers
import run
from stamp import write_figures

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-round-zero.json"


def legs(tasks: Sequence[run.TaskTimes], number: int) -> tuple[float, float] | None:
    """Round ``number``'s two legs for the site that answered last (seconds): handed out to
    its answer leaving the site, and then to the orchestrator recording it."""
    done = [
        t
        for t in tasks
        if t.round == number and None not in (t.delivered_at, t.upload_started, t.finished_at)
    ]
    if not done:
        return None
    last = max(done, key=lambda t: t.upload_started or 0.0)
    handed = min(t.delivered_at or 0.0 for t in done)
    assert last.upload_started is not None and last.finished_at is not None
    return last.upload_started - handed, last.finished_at - last.upload_started


def one_job(fed: peers.PeerFederation, spec: dict[str, Any]) -> dict[str, Any]:
    """Submit ``spec``, wait for its end, and time its rounds."""
    with fed.client() as client:
        job_id = client.submit(spec).id
        peers.follow(fed, job_id, spec["rounds"], print)  # from the database: no requests
        job = client.job(job_id)
    if job.status != "completed":
        raise RuntimeError(f"job {job.status}: {job.error}")
    training, phases = peers.oncofed_rounds(job)
    tasks = run.read_tasks(fed, job_id)
    later = [leg for n in range(2, spec["rounds"] + 1) if (leg := legs(tasks, n)) is not None]
    zero = legs(tasks, 0)
    return {
        "round_0_s": phases["stats_round_s"],
        "training_median_s": statistics.median(training),
        "round_1_s": training[0],
        "round_0_to_answer_s": zero[0] if zero else None,
        "round_0_to_record_s": zero[1] if zero else None,
        # None where no training round has both legs (its sites declined, say)
        "training_to_answer_s": statistics.median(leg[0] for leg in later) if later else None,
        "training_to_record_s": statistics.median(leg[1] for leg in later) if later else None,
    }


def measure(sites: int, model: str, jobs: int, idle: float) -> list[dict[str, Any]]:
    """``jobs`` jobs of the shared task in a row on one federation of ``sites`` sites."""
    spec = peers.oncofed_spec(model, sites, 20)
    with tempfile.TemporaryDirectory(prefix="oncofed-round-zero-") as scratch:
        work = Path(scratch)
        x, y = peers.load_data(work)
        problem = peers.make_problem(x, y, sites, work / f"sites-{sites}")
        data = {s.name: problem.stores / s.name for s in problem.sites}
        groups = peers.edge_groups(list(data), 2)
        plan = run.EdgePlan("hosted", len(groups), 0, 0)
        results = []
        with peers.PeerFederation(work / "fed", data, plan, run.project(spec)) as fed:  # type: ignore[arg-type]
            launched = time.time()
            fed.launch(groups)
            peers.wait_polling(fed, launched)
            print(LEGEND)
            for number in range(jobs):
                paused = idle if number == 2 else 0.0
                time.sleep(paused)
                named = spec | {"name": f"{spec['name']}-{number}"}
                results.append({"job": number, "idle_before_s": paused, **one_job(fed, named)})
                print(said(results[-1]))
        return results


LEGEND = "ms: the round (to answer + to record, the site that answered last)"


def said(job: dict[str, Any]) -> str:
    """One job's figures on one line of under 80 columns (``LEGEND``)."""

    def ms(key: str) -> str:
        value = job[key]
        return "-" if value is None else f"{value * 1e3:.1f}"

    return (
        f"job {job['job']}: round 0 {ms('round_0_s')} ({ms('round_0_to_answer_s')} + "
        f"{ms('round_0_to_record_s')}), training {ms('training_median_s')} "
        f"({ms('training_to_answer_s')} + {ms('training_to_record_s')})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--model", choices=("logistic", "mlp"), default="logistic")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    jobs = measure(args.sites, args.model, args.jobs, args.idle)
    settings = {"sites": args.sites, "model": args.model, "idle_s": args.idle}
    write_figures(args.output, {"settings": settings, "jobs": jobs})
    print(f"results in {args.output}")


if __name__ == "__main__":
    main()
