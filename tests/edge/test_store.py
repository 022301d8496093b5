"""Registering local tables: CSV and Parquet in, clear errors for anything malformed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncofed.edge import LocalStore, StoreError


def test_csv_and_parquet_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"age": [50, 61, np.nan], "grade": ["I", "II", None]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "b.parquet")
    store = LocalStore(tmp_path / "ds")
    store.add("a", tmp_path / "a.csv")
    store.add("b", tmp_path / "b.parquet")
    assert store.names() == ["a", "b"]
    for name in ("a", "b"):
        columns = store.load(name)
        np.testing.assert_array_equal(columns["age"], [50.0, 61.0, np.nan])
        assert list(columns["grade"][:2]) == ["I", "II"] and columns["grade"][2] is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.txt", "a,b\n1,2\n", "expected a .csv or .parquet"),
        ("x.csv", "", "cannot be read|empty"),
        ("x.csv", "a,b\n1,2,3,4\n", "cannot be read"),
        ("x.parquet", "not parquet", "cannot be read"),
        ("x.csv", "a,a\n1,2\n", "duplicated column"),
    ],
)
def test_malformed_files_are_refused_clearly(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(StoreError, match=message):
        LocalStore(tmp_path / "ds").add("t", path)


def test_bad_names_and_missing_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "ds")
    with pytest.raises(StoreError, match="no such file"):
        store.add("t", tmp_path / "missing.csv")
    with pytest.raises(StoreError, match="dataset name"):
        store.add("../escape", tmp_path / "missing.csv")
    with pytest.raises(StoreError, match="not registered"):
        store.load("t")
