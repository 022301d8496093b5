"""The edge node: the hospital's agent. Obeys its local policy first, the orchestrator second.

``Agent``, ``LocalStore`` and ``Ledger`` are imported on first use: they bring in torch, pyarrow
and alembic, which processes that only need the edge's errors or settings (the CLI, the
orchestrator) do without.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from oncofed.edge.config import EdgeConfig, EdgeHome, EdgePolicy
from oncofed.edge.errors import EdgeError, EnrolmentError, PolicyViolation, StoreError

if TYPE_CHECKING:
    from oncofed.edge.agent import Agent
    from oncofed.edge.ledger import Ledger
    from oncofed.edge.store import LocalStore

_LAZY = {
    "Agent": "oncofed.edge.agent",
    "Ledger": "oncofed.edge.ledger",
    "LocalStore": "oncofed.edge.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
