"""The edge node: the hospital's agent. Obeys its local policy first, the orchestrator second.

Every name here is imported on first use: ``Agent``, ``LocalStore`` and ``Ledger`` bring in
httpx, pyarrow, SQLAlchemy and alembic, the settings pydantic, YAML and the model registry,
which processes that only need the edge's errors (the CLI's start, the orchestrator) do
without. The edge itself never imports torch until a task trains (``oncofed.edge.compute``).
"""

from typing import TYPE_CHECKING

from oncofed._lazy import lazy_names
from oncofed.edge.errors import EdgeError, EnrolmentError, PolicyViolation, StoreError

if TYPE_CHECKING:
    from oncofed.edge.agent import Agent
    from oncofed.edge.config import EdgeConfig, EdgeHome, EdgePolicy
    from oncofed.edge.ledger import Ledger
    from oncofed.edge.store import LocalStore

_LAZY = {
    "Agent": "oncofed.edge.agent",
    "EdgeConfig": "oncofed.edge.config",
    "EdgeHome": "oncofed.edge.config",
    "EdgePolicy": "oncofed.edge.config",
    "Ledger": "oncofed.edge.ledger",
    "LocalStore": "oncofed.edge.store",
}

__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "Agent",
    "EdgeConfig",
    "EdgeError",
    "EdgeHome",
    "EdgePolicy",
    "EnrolmentError",
    "Ledger",
    "LocalStore",
    "PolicyViolation",
    "StoreError",
]
