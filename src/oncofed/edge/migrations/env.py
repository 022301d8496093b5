"""Alembic environment: runs the ledger's migrations on the URL the edge passes in."""

from oncofed._db import run_migrations
from oncofed.edge.ledger import Base

run_migrations(Base.metadata)
