"""The orchestrator: coordinates jobs and aggregates updates; never sees a patient row."""

from oncofed.orchestrator.app import create_app
from oncofed.orchestrator.db import migrate
from oncofed.orchestrator.settings import Settings

__all__ = ["Settings", "create_app", "migrate"]
