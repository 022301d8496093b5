"""The orchestrator: coordinates jobs and aggregates updates; never sees a patient row.

``create_app``, ``migrate`` and ``Settings`` are imported on first use: they bring in FastAPI,
SQLAlchemy and alembic, which processes that only need the orchestrator's errors (the CLI) do
without.
"""

from typing import TYPE_CHECKING

from oncofed._lazy import lazy_names

if TYPE_CHECKING:
    from oncofed.orchestrator.app import create_app
    from oncofed.orchestrator.db import migrate
    from oncofed.orchestrator.settings import Settings

_LAZY = {
    "create_app": "oncofed.orchestrator.app",
    "migrate": "oncofed.orchestrator.db",
    "Settings": "oncofed.orchestrator.settings",
}

__getattr__ = lazy_names(__name__, _LAZY)


__all__ = ["Settings", "create_app", "migrate"]
