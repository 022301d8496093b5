"""Run several real edge agents (one ``oncofed.edge.Agent`` per site) in threads of one process.

Used by the benchmark when one OS process per site would not fit in memory: the product's
multi-site host (``oncofed.edge.host.EdgeHost``, what ``oncofed edge run --dir A --dir B ...``
runs), each agent keeping its own edge directory, credential, HTTP client and task runner; only
the process (and so the torch import) is shared. Optionally a semaphore bounds how
many agents of this host work on a task at once. Each task handled (each phase of a secure
round is handled apart) is written to a JSON-lines timing file: when it arrived, how long it
waited for a slot, how long its computation and its secure step took, so the benchmark can tell
host queueing and the edge's own work apart from orchestration.

``python bench/edge_host.py --timing FILE [--max-concurrent N] EDGE_DIR [EDGE_DIR ...]``
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from oncofed.edge import Agent, EdgeHome
from oncofed.edge.compute import torch_threads
from oncofed.edge.host import EdgeHost
from oncofed.wire.messages import ResultAck, TaskAssignment

T = TypeVar("T")


class HostedAgent(Agent):
    """An unchanged agent whose task handling may wait for a host-wide slot, and is timed: in
    all, in its computation (the task runner: model download, training, an analysis's part)
    and in its secure step (the computation, then the phase's cryptography)."""

    def __init__(
        self,
        home: EdgeHome,
        *,
        poll_seconds: float,
        slots: threading.Semaphore | None,
        timing: TimingLog,
    ) -> None:
        super().__init__(home, poll_seconds=poll_seconds)
        self._slots = slots
        self._timing = timing
        self._spent = {"compute": 0.0, "step": 0.0}  # of the task being handled
        self._runner.run = self._timed("compute", self._runner.run)  # type: ignore[method-assign]
        self._secure.step = self._timed("step", self._secure.step)  # type: ignore[method-assign]

    def _timed(self, what: str, call: Callable[..., T]) -> Callable[..., T]:
        """``call``, adding its duration to what the task being handled spent on ``what``."""

        def timed(*args: Any, **kwargs: Any) -> T:
            began = time.time()
            try:
                return call(*args, **kwargs)
            finally:
                self._spent[what] += time.time() - began

        return timed

    def handle(self, task: TaskAssignment, stop: threading.Event | None = None) -> ResultAck | None:
        received = time.time()
        self._spent = {"compute": 0.0, "step": 0.0}
        if self._slots is not None:
            self._slots.acquire()
        started = time.time()
        try:
            return super().handle(task, stop)
        finally:
            if self._slots is not None:
                self._slots.release()
            self._timing.write(
                {
                    "site": self.site,
                    "task": task.task_id,
                    "round": task.round,
                    "kind": task.kind,
                    "phase": task.secure.phase if task.secure is not None else "",
                    "received": received,
                    "started": started,
                    "done": time.time(),
                    "slot_wait_s": started - received,
                    "compute_s": self._spent["compute"],
                    "step_s": self._spent["step"],
                }
            )


class TimingLog:
    """A thread-safe JSON-lines file of per-task timings."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, entry: dict[str, object]) -> None:
        with self._lock, self._path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("edge_dirs", nargs="+", type=Path, help="Enrolled edge directories.")
    parser.add_argument("--timing", type=Path, required=True, help="JSON-lines timing output.")
    parser.add_argument("--poll-seconds", type=float, default=10.0, help="Long-poll duration.")
    parser.add_argument(
        "--max-concurrent", type=int, default=0, help="Tasks worked on at once (0: no limit)."
    )
    return parser.parse_args(argv)


def serve(args: argparse.Namespace) -> None:
    """Start one agent thread per edge directory and run until SIGTERM or SIGINT."""
    torch_threads(1)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(threadName)s %(name)s: %(message)s",
        force=True,  # opacus configures the root logger when it is imported
    )
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    slots = threading.Semaphore(args.max_concurrent) if args.max_concurrent > 0 else None
    timing = TimingLog(args.timing)

    def hosted(home: EdgeHome) -> Agent:
        return HostedAgent(home, poll_seconds=args.poll_seconds, slots=slots, timing=timing)

    host = EdgeHost([EdgeHome(d) for d in args.edge_dirs], make_agent=hosted)
    agents = host.open()
    logging.info("hosting %d edge agents: %s", len(agents), [a.site for a in agents])
    host.run(stop)
    # Long polls still in flight end with the process (daemon threads); a task cut short is
    # sent again by the orchestrator, as after any edge restart.


def main(argv: list[str] | None = None) -> None:
    serve(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
