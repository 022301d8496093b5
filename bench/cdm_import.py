"""Benchmark: import 1,000,000 synthetic patients from one hospital CSV into an edge's local
store (read, map, de-identification guard, validate, pseudonymise, profile, write Parquet).

Target (issue 3): under 60 s on this machine. Run with ``make bench`` or
``.venv/bin/python bench/cdm_import.py [--patients N]``; figures are printed and written to
``bench/results-import.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml
from stamp import write_figures

from oncofed.edge.importing import Source, import_source
from oncofed.edge.store import LocalStore

TARGET_S = 60.0
MAPPING = {
    "version": 1,
    "fields": {
        "sex": {"column": "gender", "values": {"F": "female", "M": "male"}},
        "age_at_diagnosis": "age",
        "primary_site": "topo",
        "icd10": "icd",
        "histology": "morph",
        "grade": {"column": "grade", "values": {"1": "G1", "2": "G2", "3": "G3"}},
        "stage_group": "stage",
        "tumour_size_mm": {"column": "size_cm", "unit": "cm"},
        "nodes_positive": "nodes_pos",
        "nodes_examined": "nodes_exam",
        "time_origin": {"constant": "diagnosis"},
        "vital_status": {"column": "died", "values": {"0": "alive", "1": "dead"}},
        "last_followup_day": {"date": "last_contact", "origin": "diagnosis_date"},
        "os_days": {"date": "last_contact", "origin": "diagnosis_date"},
        "os_event": "died",
        "rfs_days": {"column": "rfs_months", "unit": "months"},
        "rfs_event": "relapse",
    },
    "biomarkers": [
        {"name": "ER", "value": "er_pct", "unit": "%", "positive_at_least": 1, "day": 0},
        {"name": "HER2", "result": "her2", "values": {"pos": "positive", "neg": "negative"}},
    ],
    "treatments": [
        {"type": "surgery", "column": "surgery", "received": ["Y"], "start_day": 14},
        {"type": "chemotherapy", "column": "chemo", "received": ["Y"], "intent": "adjuvant"},
    ],
    "extensions": {"bmi": {"column": "bmi"}},
}


def synthetic_csv(path: Path, n: int, seed: int = 0) -> None:
    """``n`` breast cancer patients with plausible values, 1% of them invalid on purpose."""
    rng = np.random.default_rng(seed)
    diagnosis = np.datetime64("2010-01-01") + rng.integers(0, 3650, n).astype("timedelta64[D]")
    follow = rng.integers(30, 3000, n)
    relapse_months = np.floor(np.minimum(rng.exponential(60, n), follow / 30.4375) * 10) / 10
    age = rng.normal(60, 12, n).round().clip(20, 99).astype(int)
    age[rng.random(n) < 0.01] = 130  # rejected: outside 0-120
    table = pa.table(
        {
            "gender": rng.choice(["F", "M"], n, p=[0.99, 0.01]),
            "age": age,
            "topo": rng.choice(["C50.9", "C50.4", "C50.1"], n),
            "icd": np.full(n, "C50.9"),
            "morph": rng.choice(["8500/3", "8520/3"], n, p=[0.8, 0.2]),
            "grade": rng.choice(["1", "2", "3"], n),
            "stage": rng.choice(["I", "IIA", "IIB", "IIIA", "IV"], n),
            "size_cm": rng.gamma(2.0, 1.2, n).round(1),
            "nodes_pos": rng.poisson(1.5, n),
            "nodes_exam": rng.poisson(1.5, n) + 10,
            "died": (rng.random(n) < 0.2).astype(int),
            "diagnosis_date": diagnosis.astype(str),
            "last_contact": (diagnosis + follow.astype("timedelta64[D]")).astype(str),
            "rfs_months": relapse_months,
            "relapse": (rng.random(n) < 0.3).astype(int),
            "er_pct": rng.uniform(0, 100, n).round(),
            "her2": rng.choice(["pos", "neg"], n, p=[0.15, 0.85]),
            "surgery": rng.choice(["Y", "N"], n, p=[0.9, 0.1]),
            "chemo": rng.choice(["Y", "N"], n),
            "bmi": rng.normal(27, 4, n).round(1),
        }
    )
    pacsv.write_csv(table, path)


def run(patients: int, workdir: Path) -> dict[str, object]:
    source = workdir / "registry.csv"
    mapping = workdir / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING, sort_keys=False))
    began = time.perf_counter()
    synthetic_csv(source, patients)
    generated = time.perf_counter() - began
    store = LocalStore(workdir / "datasets")
    began = time.perf_counter()
    imported = import_source(store, "registry", Source("csv", str(source), mapping), threshold=11)
    seconds = time.perf_counter() - began
    profile = imported.profile
    return {
        "patients_in_file": patients,
        "csv_mib": round(source.stat().st_size / 2**20, 1),
        "generate_s": round(generated, 2),
        "import_s": round(seconds, 2),
        "patients_per_s": round(patients / seconds),
        "stored": profile.tables,
        "rejected": profile.rejected,
        "target_s": TARGET_S,
        "target_met": seconds < TARGET_S,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results-import.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="oncofed-bench-import-") as tmp:
        figures = run(args.patients, Path(tmp))
    write_figures(args.out, figures)
    verdict = "met" if figures["target_met"] else "NOT met"
    summary = (
        f"import of {args.patients:,} patients ({figures['csv_mib']} MiB CSV): "
        f"{figures['import_s']} s, {figures['patients_per_s']:,} patients/s; "
        f"target < {TARGET_S:.0f} s {verdict}"
    )
    stored = f"rows stored per table: {figures['stored']}; rejected: {figures['rejected']}"
    for line in (summary, stored):
        print(textwrap.fill(line, 80, subsequent_indent="  "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
