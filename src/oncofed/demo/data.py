"""The demo's hospitals: the real GBSG2 breast cancer cohort (686 patients, shipped with
lifelines) dealt out to sites of unequal size and case mix, as real centres differ, and each
exported in the format that hospital's systems speak."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml
from lifelines.datasets import load_gbsg2

from oncofed.cdm.importers.tabular import import_tabular
from oncofed.client import load_spec
from oncofed.demo.sources.fhir import write_fhir
from oncofed.demo.sources.omop import write_omop
from oncofed.demo.sources.west import west_table
from oncofed.edge.importing import Source
from oncofed.wire.analysis import AnalysisSpec
from oncofed.wire.projects import NewProject, covering
from oncofed.wire.spec import JobSpec

SITES = {"north": 0.36, "south": 0.28, "east": 0.21, "west": 0.15}
"""Share of the cohort each demo site holds."""
PROJECT = "gbsg2-study"
"""The demo's project (its jobs' ``project``)."""
FORMATS = {"north": "csv", "south": "omop", "east": "fhir", "west": "parquet"}
"""How each demo hospital exports its data."""


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


def mapping_file(name: str, out: Path) -> Path:
    """A copy in ``out/mappings`` of a mapping file shipped with the demo (``gbsg2.yaml``)."""
    shipped = resources.files("oncofed.demo") / "mappings" / name
    copy = out / "mappings" / name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(shipped.read_text())
    return copy


def write_export(site: str, table: pd.DataFrame, out: Path, seed: int = 0) -> Source:
    """Write one hospital's slice of GBSG2 the way that hospital exports it: the raw CSV with
    its own column names (north), an OMOP CDM database (south), FHIR mCODE bundles (east), or
    a Parquet file with other column names (west). Returns where and how to import it."""
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"{site}-gbsg2.csv"
    table.to_csv(raw, index=False)
    kind = FORMATS[site]
    if kind == "csv":
        return Source("csv", str(raw), mapping_file("gbsg2.yaml", out))
    if kind == "parquet":
        path = out / f"{site}-registry.parquet"
        pq.write_table(west_table(table), path)
        raw.unlink()
        return Source("parquet", str(path), mapping_file("gbsg2_west.yaml", out))
    rows = import_tabular(
        raw, mapping_file("gbsg2.yaml", out)
    ).data  # the same patients, in the model
    raw.unlink()
    if kind == "omop":
        database = write_omop(rows, out / f"{site}-omop.db", seed=seed)
        return Source("omop", f"sqlite:///{database}")
    folder = out / f"{site}-fhir"
    write_fhir(rows, folder, seed=seed)
    return Source("fhir", str(folder))


def write_exports(out: Path, tables: dict[str, pd.DataFrame] | None = None) -> dict[str, Source]:
    """Every demo hospital's export, made from the same real cohort."""
    tables = site_tables() if tables is None else tables
    return {
        site: write_export(site, table, out, seed=i)
        for i, (site, table) in enumerate(tables.items())
    }


def _load(name: str) -> JobSpec | AnalysisSpec:
    return load_spec(Path(str(resources.files("oncofed.demo") / "jobs" / name)))


def demo_specs() -> list[JobSpec]:
    """The demo's training jobs: a Cox network for survival, a logistic model at 5 years, and
    the same logistic model trained with differential privacy."""
    names = ("gbsg2_survival.yaml", "gbsg2_recurrence_5y.yaml", "gbsg2_recurrence_5y_dp.yaml")
    specs = [_load(name) for name in names]
    return [spec for spec in specs if isinstance(spec, JobSpec)]


def demo_analyses() -> list[AnalysisSpec]:
    """The demo's analyses: Kaplan-Meier by tumour grade, a Cox model stratified by site, and
    a differentially private Kaplan-Meier curve."""
    names = ["gbsg2_km_grade.yaml", "gbsg2_cox_stratified.yaml", "gbsg2_km_dp.yaml"]
    specs = [_load(name) for name in names]
    return [spec for spec in specs if isinstance(spec, AnalysisSpec)]


def demo_project() -> NewProject:
    """The study the demo's jobs belong to: its scope is exactly what they need (their kinds,
    model and analysis types and fields), and every demo site approves it."""
    jobs: list[JobSpec | AnalysisSpec] = [*demo_specs(), *demo_analyses()]
    return NewProject(
        name=PROJECT,
        title="Recurrence and survival after breast cancer surgery (GBSG2)",
        purpose="Train survival and 5-year recurrence models and describe recurrence-free "
        "survival by grade across the consortium's hospitals.",
        principal_investigator="Demo Investigator",
        scope=covering(jobs),
    )


def write_demo_inputs(out: Path) -> dict[str, Source]:
    """Each hospital's export and the job specs, for running the same federation by hand."""
    sources = write_exports(out)
    project = demo_project().model_dump(mode="json")
    (out / "project.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    folder = resources.files("oncofed.demo") / "jobs"
    for spec_file in folder.iterdir():
        if spec_file.name.endswith(".yaml"):
            (out / spec_file.name).write_text(spec_file.read_text())
    return sources
