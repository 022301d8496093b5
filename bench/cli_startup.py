"""How long the ``oncofed`` command takes to start: its help, each researcher command's help,
and a few commands run against an orchestrator that refuses the connection (they import the
client, call the API once and exit 1).

Each figure is the median wall time of 5 runs of the installed command, in a new process;
the target is 0.5 s. The median CPU time (user and system) is shown beside it: it varies less
when other processes share the cores (the load average is printed first).
``.venv/bin/python bench/cli_startup.py [--runs N] [--output FILE]`` prints a table and writes
``bench/results-cli-startup.json``. tests/cli/test_startup.py checks what the commands import;
this times them.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stamp import write_figures

TARGET_S = 0.5
RUNS = 5
UNREACHABLE = "http://127.0.0.1:1"  # refused at once: nothing listens on port 1
API = ["--url", UNREACHABLE, "--token", "t" * 32]
HELP = [
    [],
    ["job"],
    ["job", "submit"],
    ["job", "watch"],
    ["job", "list"],
    ["job", "show"],
    ["job", "result"],
    ["job", "cancel"],
    ["model", "show"],
    ["site", "list"],
    ["site", "profile"],
    ["project", "create"],
    ["project", "list"],
    ["project", "show"],
    ["token", "list"],
    ["token", "create"],
    ["person", "add"],
    ["audit", "show"],
    ["audit", "verify"],
    ["edge", "budget"],
]
"""Commands whose ``--help`` is timed: the root's, and the researcher's (with a site's
budget and the audit log's, which read local files)."""
RUN = [["job", "list"], ["job", "show", "0123abcd"], ["site", "list"], ["project", "list"]]
"""Commands run against an orchestrator that refuses the connection (``API``)."""


def oncofed() -> list[str]:
    """The installed ``oncofed`` beside this interpreter, else ``python -m oncofed``."""
    script = Path(sys.executable).with_name("oncofed")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "oncofed"]


def median_times(
    command: list[str], runs: int, env: dict[str, str], expect: int
) -> tuple[float, float]:
    """The median wall and CPU times of ``runs`` runs of ``command``, each checked to exit
    ``expect``."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if done.returncode != expect:
            raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    here = Path(__file__).parent
    parser.add_argument("--output", type=Path, default=here / "results-cli-startup.json")
    options = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="oncofed-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONCOFED_")}
    env |= {"ONCOFED_LOG_DIR": str(logs), "COLUMNS": "80"}
    cases = [(" ".join(["oncofed", *args, "--help"]), [*args, "--help"], 0) for args in HELP]
    cases += [(" ".join(["oncofed", *args, "(unreachable)"]), [*args, *API], 1) for args in RUN]
    rows = []
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} on {os.cpu_count()} cores; medians of {options.runs} runs")
    print(f"{'command':<42} {'wall s':>7} {'cpu s':>6} {'target s':>8}  verdict")
    try:
        for shown, args, expect in cases:
            wall, cpu = median_times([*oncofed(), *args], options.runs, env, expect)
            verdict = "ok" if wall < TARGET_S else "SLOW"
            print(f"{shown:<42} {wall:>7.3f} {cpu:>6.3f} {TARGET_S:>8.1f}  {verdict}")
            figures = {"median_wall_s": round(wall, 4), "median_cpu_s": round(cpu, 4)}
            rows.append({"command": shown, **figures, "ok": verdict == "ok"})
    finally:
        shutil.rmtree(logs)
    slow = [row["command"] for row in rows if not row["ok"]]
    print(f"{len(rows) - len(slow)} of {len(rows)} under {TARGET_S} s")
    write_figures(
        options.output,
        {"target_s": TARGET_S, "runs": options.runs, "load_average": load[0],
         "commands": rows, "all_under_target": not slow},
    )  # fmt: skip


if __name__ == "__main__":
    main()
