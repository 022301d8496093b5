"""The demo's hospitals and its comparison against pooled and single-site references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oncofed.cdm.frame import job_table
from oncofed.cdm.importers.tabular import import_tabular
from oncofed.demo.baselines import compare, fit_central, site_splits
from oncofed.demo.data import demo_specs, mapping_file, site_tables


def test_sites_hold_every_patient_once_in_unequal_slices() -> None:
    tables = site_tables()
    sizes = [len(t) for t in tables.values()]
    assert sum(sizes) == 686 and len(set(sizes)) == len(sizes)
    rows = [tuple(r) for t in tables.values() for r in t.itertuples(index=False)]
    assert len(set(rows)) == len(rows)  # no patient twice (GBSG2 has no duplicate rows)
    ages = [t["age"].mean() for t in tables.values()]
    assert max(ages) - min(ages) > 10  # case mix differs between hospitals


def test_compare_scores_each_model_on_the_same_held_out_patients(tmp_path: Path) -> None:
    spec = demo_specs()[1].model_copy(update={"rounds": 2})
    mapping = mapping_file("gbsg2.yaml", tmp_path)
    tables = {}
    for site, frame in site_tables().items():
        frame.to_csv(tmp_path / f"{site}.csv", index=False)
        tables[site] = job_table(spec, import_tabular(tmp_path / f"{site}.csv", mapping).data)
    splits = site_splits(spec, tables)
    pooled = fit_central(spec, [s.train for s in splits.values()])
    result = compare(spec, splits, pooled.weights)  # "federated" = the pooled weights
    assert result["metric"] == "auc"
    assert result["federated"] == pytest.approx(result["pooled"], abs=1e-12)
    assert set(result["single_site"]) == set(splits)
    assert result["single_site_mean"] == pytest.approx(
        np.mean(list(result["single_site"].values()))
    )
    assert result["held_out_patients"] == {s: len(v.held_out) for s, v in splits.items()}
    assert 0.6 < result["pooled"] < 1.0
