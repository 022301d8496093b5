"""The rehearsal before serving: a whole job played on the real database, then taken back."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from oncofed._db import make_engine
from oncofed.orchestrator.db import Base
from oncofed.orchestrator.rehearsal import job_spec, play, rehearse
from oncofed.orchestrator.settings import Settings
from tests.orchestrator.test_rounds import make_spec, take
from tests.support import TEST_PROJECT, State


def rows(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    with sessions() as session:
        return {
            table.name: sorted((tuple(r) for r in session.execute(table.select())), key=repr)
            for table in Base.metadata.sorted_tables
        }


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def engine_of(state: State) -> Engine:
    engine = state.sessions.kw["bind"]
    assert isinstance(engine, Engine)
    return engine


def test_the_rehearsal_plays_a_whole_job_and_leaves_no_trace(state: State) -> None:
    blob_dir = Settings.load(state.home).blob_dir
    before, blobs = rows(state.sessions), files(blob_dir)
    rehearsed = rehearse(engine_of(state))
    assert rehearsed is not None
    # both sites answered the statistics round, the two training rounds and the evaluation
    assert rehearsed.status == "completed"
    assert rehearsed.answers == {"stats": 2, "train": 4, "evaluate": 2}
    assert rows(state.sessions) == before  # not a row, not an audit entry
    assert files(blob_dir) == blobs


def test_the_orchestrator_runs_on_after_a_rehearsal(state: State) -> None:
    """Its ids taken back (a PostgreSQL sequence is not), a job of the real sites starts."""
    assert rehearse(engine_of(state)) is not None
    job_id = state.coordinator.submit(make_spec(), state.admin_id).id
    assert {take(state, site).job_id for site in ("alpha", "beta")} == {job_id}


def test_a_failed_rehearsal_is_logged_and_the_start_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'unmigrated.db'}")  # no tables
    try:
        with caplog.at_level(logging.ERROR, logger="oncofed.orchestrator.rehearsal"):
            assert rehearse(engine) is None
    finally:
        engine.dispose()
    assert "the rehearsal failed" in caplog.text


@pytest.mark.parametrize("rehearsed", [False, True], ids=["cold", "rehearsed"])
def test_after_a_rehearsal_a_jobs_statements_are_all_compiled(
    state: State, rehearsed: bool
) -> None:
    """The first job the real coordinator runs finds every statement it executes compiled,
    on the engine or with its mapper, once the rehearsal ran (and not without it)."""
    engine = engine_of(state)
    if rehearsed:
        assert rehearse(engine) is not None
    misses: list[str] = []

    def executed(*args: Any) -> None:
        statement, context = args[2], args[4]
        if str(context.cache_hit) != "CacheStats.CACHE_HIT":
            misses.append(statement.split()[0])

    event.listen(engine, "before_cursor_execute", executed)
    try:
        sites = ["alpha", "beta"]
        spec = job_spec(TEST_PROJECT, sites)
        ids = [state.sites[s] for s in sites]
        assert play(state.coordinator, state.sessions, spec, state.admin_id, ids)[0] == "completed"
    finally:
        event.remove(engine, "before_cursor_execute", executed)
    assert (misses == []) is rehearsed, misses
