"""The local store: imported datasets saved whole, read back exactly, damaged ones reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oncofed.edge import LocalStore, StoreError
from tests.support import save_columns


def test_saved_dataset_reads_back_with_its_profile(tmp_path: Path) -> None:
    store = save_columns(tmp_path / "ds", "trial", {"x": np.arange(5.0)})
    save_columns(tmp_path / "ds", "registry", {"x": np.arange(3.0)})
    assert store.names() == ["registry", "trial"]
    data = store.load("trial")
    assert data["patient"].num_rows == data["outcome"].num_rows == 5
    assert data["tumour"].num_rows == 0
    assert data.extension_names == ["ext.x"]
    assert data.extensions is not None and data.extensions["x"].to_pylist() == [0, 1, 2, 3, 4]
    assert store.profile("trial").patients == 5
    assert [p.dataset for p in store.profiles()] == ["registry", "trial"]


def test_a_new_import_replaces_the_old_one_whole(tmp_path: Path) -> None:
    store = save_columns(tmp_path / "ds", "trial", {"x": np.arange(5.0), "old": np.zeros(5)})
    save_columns(tmp_path / "ds", "trial", {"x": np.arange(2.0)})
    data = store.load("trial")
    assert data["patient"].num_rows == 2
    assert data.extension_names == ["ext.x"]
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["trial"]  # no leftovers


def test_a_running_edge_reads_a_dataset_imported_again_elsewhere(tmp_path: Path) -> None:
    """The store keeps the dataset it read last in memory; an import by another process
    (``oncofed edge import`` beside a running edge) is read at the next load, not the copy."""
    edge = save_columns(tmp_path / "ds", "trial", {"x": np.arange(5.0)})
    assert edge.load("trial") is edge.load("trial")  # read once
    kept = edge.columns("trial")
    assert kept.data is edge.load("trial")
    assert kept.frame(["ext.x"])["ext.x"].to_pylist() == [0, 1, 2, 3, 4]
    save_columns(tmp_path / "ds", "trial", {"x": np.arange(2.0)})  # another store, same folder
    assert edge.load("trial")["patient"].num_rows == 2
    assert edge.columns("trial").frame(["ext.x"])["ext.x"].to_pylist() == [0, 1]  # not kept's
    save_columns(tmp_path / "ds", "registry", {"x": np.arange(3.0)})
    assert edge.load("registry")["patient"].num_rows == 3
    assert edge.load("trial")["patient"].num_rows == 2


def test_unknown_dataset_names_the_imported_ones(tmp_path: Path) -> None:
    store = save_columns(tmp_path / "ds", "trial", {"x": np.arange(5.0)})
    with pytest.raises(StoreError, match=r"'other' is not imported at this site \(imported: tri"):
        store.load("other")
    with pytest.raises(StoreError, match="imported: none"):
        LocalStore(tmp_path / "empty").load("x")
    assert LocalStore(tmp_path / "empty").names() == []


@pytest.mark.parametrize("name", ["../escape", "a b", "", ".hidden", "x" * 65])
def test_bad_dataset_names_are_refused(tmp_path: Path, name: str) -> None:
    store = save_columns(tmp_path / "ds", "trial", {"x": np.arange(2.0)})
    with pytest.raises(StoreError, match="dataset name"):
        store.save(name, store.load("trial"), store.profile("trial"))
    assert store.names() == ["trial"]


def test_damaged_files_give_a_clear_error(tmp_path: Path) -> None:
    store = save_columns(tmp_path / "ds", "trial", {"x": np.arange(5.0)})
    (tmp_path / "ds" / "trial" / "tumour.parquet").write_bytes(b"not parquet")
    with pytest.raises(StoreError, match=r"dataset 'trial' is damaged .*import it again"):
        store.load("trial")
    (tmp_path / "ds" / "trial" / "profile.json").write_text("{")
    with pytest.raises(StoreError, match=r"profile\.json is damaged"):
        store.profile("trial")
