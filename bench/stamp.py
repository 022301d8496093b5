"""What every benchmark writes beside its figures: the machine it ran on, and when."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_figures(path: Path, figures: dict[str, Any]) -> None:
    """Write ``figures`` as JSON to ``path``, with the machine and the time it finished."""
    machine = {"python": platform.python_version(), "arch": platform.machine(),
               "cpus": os.cpu_count()}  # fmt: skip
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    stamped = figures | {"machine": machine, "finished_at": finished}
    path.write_text(json.dumps(stamped, indent=2) + "\n")
