"""``oncofed._db.synced``: a synced transaction on an engine's own connections."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import Connection

from oncofed import _db


def _level(connection: Connection) -> int:
    driver = connection.connection.driver_connection
    assert driver is not None
    return int(driver.execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_a_synced_transaction_is_full_and_leaves_the_engines_level(
    tmp_path: Path, synchronous: Literal["NORMAL", "FULL"]
) -> None:
    engine = _db.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", synchronous=synchronous)
    expected = {"NORMAL": 1, "FULL": 2}[synchronous]
    try:
        with _db.synced(engine) as connection:
            assert _level(connection) == 2
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with pytest.raises(RuntimeError), _db.synced(engine) as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
            raise RuntimeError("rolled back")
        with engine.connect() as connection:
            assert _level(connection) == expected
            assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    finally:
        engine.dispose()
