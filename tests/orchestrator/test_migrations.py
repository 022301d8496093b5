"""The migrations build exactly the schema the models declare, on every backend."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from oncofed.orchestrator.db import Base, make_engine
from oncofed.orchestrator.settings import Settings
from tests.support import State


def test_migrated_schema_matches_the_models(state: State) -> None:
    engine = make_engine(Settings.load(state.home).url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
