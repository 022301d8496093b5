"""The same real patients exported as a hospital CSV, an OMOP CDM database, FHIR mCODE bundles
and a Parquet file with other column names give identical model rows after import."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from oncofed.cdm.fields import KEY, TABLES
from oncofed.cdm.tables import CdmData
from oncofed.demo.data import FORMATS, site_tables, write_export
from oncofed.edge.importing import import_source
from oncofed.edge.store import LocalStore

Record = tuple[tuple[object, ...], ...]


def records(data: CdmData) -> Counter[Record]:
    """Each patient as one hashable record of all their rows (ids dropped, rows sorted)."""
    rows: dict[str, list[tuple[object, ...]]] = defaultdict(list)
    for table in TABLES:
        columns = [c for c in data[table].column_names if c != KEY]
        for row in data[table].to_pylist():
            rows[row[KEY]].append((table, *(row[c] for c in columns)))
    return Counter(tuple(sorted(r, key=repr)) for r in rows.values())


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CdmData]:
    """The 192 patients of the demo's south hospital, imported from every format."""
    root = tmp_path_factory.mktemp("formats")
    patients = site_tables()["south"]
    store = LocalStore(root / "store")
    result = {}
    for site, kind in FORMATS.items():
        source = write_export(site, patients, root / site, seed=3)
        assert source.format == kind
        import_source(store, kind, source, threshold=11)
        result[kind] = store.load(kind)
    return result


@pytest.mark.parametrize("kind", ["omop", "fhir", "parquet"])
def test_every_format_gives_the_rows_of_the_csv(imported: dict[str, CdmData], kind: str) -> None:
    expected = records(imported["csv"])
    assert sum(expected.values()) == 192
    assert imported[kind].num_rows() == imported["csv"].num_rows()
    assert records(imported[kind]) == expected


def test_the_rows_are_the_patients_of_the_cohort(imported: dict[str, CdmData]) -> None:
    """Checked against the raw cohort, so agreeing on a wrong encoding cannot pass."""
    raw = site_tables()["south"]
    data = imported["fhir"]
    assert data.num_rows() == {
        "patient": 192,
        "tumour": 192,
        "biomarker": 384,
        "treatment": int((raw["horTh"] == "yes").sum()),
        "outcome": 192,
    }
    assert sorted(data["patient"]["age_at_diagnosis"].to_pylist()) == sorted(raw["age"])
    assert sorted(data["outcome"]["rfs_days"].to_pylist()) == sorted(raw["time"])
    assert sum(data["outcome"]["rfs_event"].to_pylist()) == raw["cens"].sum()
    grades = Counter(data["tumour"]["grade"].to_pylist())
    assert grades == Counter(raw["tgrade"].map({"I": "G1", "II": "G2", "III": "G3"}))


def test_pseudonyms_differ_between_imports_of_the_same_patients(
    imported: dict[str, CdmData],
) -> None:
    ids = [set(imported[kind]["patient"][KEY].to_pylist()) for kind in FORMATS.values()]
    assert all(len(s) == 192 for s in ids)
    assert not set.intersection(*ids)
