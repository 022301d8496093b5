"""The demo's hospitals: the real GBSG2 breast cancer cohort (686 patients, shipped with
lifelines) dealt out to sites of unequal size and case mix, as real centres differ."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines.datasets import load_gbsg2

from oncofed.client import load_spec
from oncofed.wire.spec import JobSpec

SITES = {"north": 0.36, "south": 0.28, "east": 0.21, "west": 0.15}
"""Share of the cohort each demo site holds."""


def site_tables(seed: int = 2026) -> dict[str, pd.DataFrame]:
    """GBSG2 split by a noisy ordering on age and tumour grade, so that the sites differ
    in size, age, menopausal status and grade (non-IID), and every patient is in one site."""
    data = load_gbsg2()
    rng = np.random.default_rng(seed)
    grade = data["tgrade"].map({"I": 0, "II": 1, "III": 2}).to_numpy()
    order = np.argsort(data["age"].to_numpy() + 6 * grade + rng.normal(0, 9, len(data)))
    cuts = np.round(np.cumsum(list(SITES.values())) * len(data)).astype(int)[:-1]
    parts = np.split(order, cuts)
    return {
        site: data.iloc[np.sort(rows)].reset_index(drop=True)
        for site, rows in zip(SITES, parts, strict=True)
    }


def demo_specs() -> list[JobSpec]:
    """The demo's two jobs: a Cox network for survival, a logistic model at 5 years."""
    folder = resources.files("oncofed.demo") / "jobs"
    names = ["gbsg2_survival.yaml", "gbsg2_recurrence_5y.yaml"]
    return [load_spec(Path(str(folder / name))) for name in names]


def write_demo_inputs(out: Path) -> dict[str, Path]:
    """Site CSVs and the job specs, for running the same federation by hand."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for site, table in site_tables().items():
        paths[site] = out / f"{site}.csv"
        table.to_csv(paths[site], index=False)
    folder = resources.files("oncofed.demo") / "jobs"
    for spec_file in folder.iterdir():
        if spec_file.name.endswith(".yaml"):
            (out / spec_file.name).write_text(spec_file.read_text())
    return paths
