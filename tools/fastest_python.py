"""Print the fastest CPython 3.11 on this machine that can make a virtual environment.

``make`` creates ``.venv`` from it unless ``PYTHON=...`` names one. Every oncofed process
spends most of its CPU in the interpreter, and builds differ: a CPython built with
profile-guided and link-time optimisation (as Linux distributions build theirs) runs oncofed's
rounds faster than one built without (pyenv's default). The candidates are every
``python3.11`` and ``python3`` on the path and in the usual prefixes; each runs the same loop
three times and the best of its times counts. Its reasons go to standard error.

``python3 tools/fastest_python.py``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VERSION = (3, 11)  # requirements.lock pins wheels built for it (torch's CPU wheel above all)
PREFIXES = ("/usr/bin", "/usr/local/bin")
PROBE = """
import ensurepip, sys, time, venv
best = float("inf")
for _ in range(3):
    start = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i
    best = min(best, time.process_time() - start)
print(sys.implementation.name, sys.version_info[0], sys.version_info[1], best, sys.executable)
"""


def candidates() -> list[str]:
    """Every ``python3.11`` and ``python3`` on the path, then in the usual prefixes, once each."""
    found: list[str] = []
    for name in ("python3.11", "python3"):
        for folder in os.get_exec_path() + list(PREFIXES):
            path = shutil.which(name, path=folder)
            if path and path not in found:
                found.append(path)
    return found


def probe(path: str) -> tuple[float, str] | None:
    """The candidate's best loop time and its real executable, or None if it cannot serve."""
    try:
        done = subprocess.run(
            [path, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
        )
        implementation, major, minor, seconds, executable = done.stdout.split(maxsplit=4)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if implementation != "cpython" or (int(major), int(minor)) != VERSION:
        return None
    return float(seconds), executable.strip()


def main() -> int:
    timed: dict[str, float] = {}
    for path in candidates():
        result = probe(path)
        if result is not None:
            seconds, executable = result
            real = str(Path(executable).resolve())
            timed[real] = min(seconds, timed.get(real, seconds))
    if not timed:
        print("no CPython 3.11 with venv found: install one or pass PYTHON=", file=sys.stderr)
        return 1
    ranked = sorted(timed, key=timed.__getitem__)
    print("Python 3.11 on this machine, by a loop's best CPU time:", file=sys.stderr)
    for path in ranked:
        print(f"  {timed[path]:.3f} s  {path}", file=sys.stderr)
    print(ranked[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
