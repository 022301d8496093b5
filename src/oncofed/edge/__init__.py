"""The edge node: the hospital's agent. Obeys its local policy first, the orchestrator second."""

from oncofed.edge.agent import Agent
from oncofed.edge.config import EdgeConfig, EdgeHome, EdgePolicy
from oncofed.edge.errors import EdgeError, EnrolmentError, PolicyViolation, StoreError
from oncofed.edge.store import LocalStore

__all__ = [
    "Agent",
    "EdgeConfig",
    "EdgeError",
    "EdgeHome",
    "EdgePolicy",
    "EnrolmentError",
    "LocalStore",
    "PolicyViolation",
    "StoreError",
]
