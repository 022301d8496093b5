"""The orchestrator: coordinates jobs and aggregates updates; never sees a patient row.

``create_app``, ``migrate`` and ``Settings`` are imported on first use: they bring in FastAPI,
SQLAlchemy and alembic, which processes that only need the orchestrator's errors (the CLI) do
without.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oncofed.orchestrator.app import create_app
    from oncofed.orchestrator.db import migrate
    from oncofed.orchestrator.settings import Settings

_LAZY = {
    "create_app": "oncofed.orchestrator.app",
    "migrate": "oncofed.orchestrator.db",
    "Settings": "oncofed.orchestrator.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Settings", "create_app", "migrate"]
