"""Alembic environment: runs migrations on the URL the orchestrator passes in."""

from oncofed._db import run_migrations
from oncofed.orchestrator.db import Base

run_migrations(Base.metadata)
