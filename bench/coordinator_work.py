"""The orchestrator's work per answer, counted as well as timed, for A/B comparisons on a noisy
machine.

The coordinator is driven in process by ``rehearsal.play`` (each task answered as an edge
would answer it, each answer recorded as its route records it, in a transaction of its own)
for ``--jobs`` training jobs of ``--rounds`` rounds at ``--sites`` sites, after one job to warm
up, on SQLite in a fresh state directory. Per answer, over each job (its submission, statistics
round, training rounds and evaluation): the process's CPU, the SQL statements sent (counted on
the engine) and, in a second pass under cProfile (whose CPU is not reported), the Python
function calls. The counts do not move with the machine's speed: where the time of two
versions differs by less than the machine's noise, they still tell what a change saved. Run
it with each version on ``PYTHONPATH`` in turn.

``python bench/coordinator_work.py [--sites 4] [--rounds 20] [--jobs 5] [--output FILE]``
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers

from oncofed.orchestrator import Settings, identity, rehearsal
from oncofed.orchestrator.blobs import BlobStore
from oncofed.orchestrator.combine import Pending
from oncofed.orchestrator.db import Principal, make_engine, session_factory
from oncofed.orchestrator.rounds import Coordinator
from oncofed.orchestrator.setup import identity_key, initialise
from oncofed.wire.messages import TaskAssignment
from oncofed.wire.spec import JobSpec
from tests.support import declare_project, make_spec

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results-coordinator-work.json"


def play_batched(coordinator: Coordinator, spec: JobSpec, owner: int, sites: list[int]) -> int:
    """The job with each round's answers recorded together, in one batch, as the combiner
    records answers that come together (the tasks they publish handed out in it); the
    answers it took."""
    job_id = coordinator.submit(spec, owner).id
    tasks = {site: coordinator.next_task(site) for site in sites}
    answers = 0
    while any(tasks.values()):
        batch = [
            Pending(rehearsal.submission(coordinator, site, spec, task).answer)
            for site, task in tasks.items()
            if task is not None
        ]
        coordinator._record(job_id, batch)
        handed: dict[int, TaskAssignment] = {}
        for item in batch:
            assert item.error is None and item.result is not None, item.error
            handed |= item.result[1].handed
        answers += len(batch)
        tasks = {site: handed.get(site) or coordinator.next_task(site) for site in sites}
    return answers


def measure(sites: int, rounds: int, jobs: int, batched: bool = False) -> dict[str, Any]:
    """Each job's CPU, statements and calls per answer (the first job, a warm-up, left out)."""
    home = Path(tempfile.mkdtemp(prefix="oncofed-coordinator-work-")) / "orchestrator"
    initialise(home, None)
    settings = Settings.load(home)
    engine = make_engine(settings.url)
    sessions = session_factory(engine)
    names = [f"site{i:03d}" for i in range(sites)]
    with sessions.begin() as session:
        site_ids = []
        for name in names:
            created = identity.create_site(session, name)
            enrolled = identity.enrol(session, created.enrolment_token)
            site_ids.append(identity.authenticate_site(session, enrolled.credential).id)
        owner = session.query(Principal).one().id
        declare_project(session, owner, approved_by=site_ids)
    coordinator = Coordinator(sessions, BlobStore(settings.blob_dir), key=identity_key(settings))
    spec = make_spec(rounds=rounds, sites=names)
    sent = [0]
    event.listen(engine, "before_cursor_execute", lambda *_: sent.__setitem__(0, sent[0] + 1))

    def play() -> int:
        if batched:
            return play_batched(coordinator, spec, owner, site_ids)
        status, answers = rehearsal.play(coordinator, sessions, spec, owner, site_ids)
        assert status == "completed", status
        return sum(answers.values())

    play()  # warm-up: statements compiled, caches filled
    cpu, statements, calls = [], [], []
    for _ in range(jobs):
        before, started = sent[0], time.process_time()
        answers = play()
        cpu.append((time.process_time() - started) / answers)
        statements.append((sent[0] - before) / answers)
        profile = cProfile.Profile()
        profile.enable()
        answers = play()
        profile.disable()
        calls.append(pstats.Stats(profile).total_calls / answers)  # type: ignore[attr-defined]
    engine.dispose()
    return {
        "sites": sites,
        "rounds": rounds,
        "batched": batched,
        "jobs": jobs,
        "answers_per_job": answers,
        "cpu_ms_per_answer": [round(1000 * c, 3) for c in cpu],
        "statements_per_answer": [round(s, 2) for s in statements],
        "calls_per_answer": [round(c, 1) for c in calls],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--batched", action="store_true", help="each round's answers recorded in one batch"
    )
    args = parser.parse_args()
    if min(args.sites, args.rounds, args.jobs) < 1:
        parser.error("--sites, --rounds and --jobs take a whole number of at least 1")
    result = measure(args.sites, args.rounds, args.jobs, args.batched)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.sites} sites, {args.rounds} rounds, {result['answers_per_job']} answers a job, "
        f"medians over {args.jobs} jobs:\n"
        f"  CPU per answer         {statistics.median(result['cpu_ms_per_answer']):8.3f} ms\n"
        f"  SQL statements         {statistics.median(result['statements_per_answer']):8.2f}\n"
        f"  Python calls           {statistics.median(result['calls_per_answer']):8.1f}\n"
        f"results in {args.output}"
    )


if __name__ == "__main__":
    main()
