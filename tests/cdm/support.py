"""Builders shared by the model's tests: valid patients as rows, and the model tables of them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from oncofed.cdm.fields import GRADES, KEY, RESULTS, TABLES, TableName
from oncofed.cdm.tables import CdmData

Rows = dict[TableName, list[dict[str, Any]]]


def patient_rows(count: int, prefix: str = "S") -> Rows:
    """``count`` valid patients, each with every table filled (two biomarker rows)."""
    rows: Rows = {table: [] for table in TABLES}
    for i in range(count):
        key = f"{prefix}{i:03d}"
        rows["patient"].append({KEY: key, "sex": "female", "age_at_diagnosis": 50 + i % 30})
        rows["tumour"].append(
            {KEY: key, "tumour_seq": 1, "primary_site": "C50.9", "icd10": "C50.9",
             "histology": "8500/3", "laterality": "left", "grade": "G2", "tumour_size_mm": 20.5,
             "nodes_positive": 1, "nodes_examined": 10, "ecog": 0}
        )  # fmt: skip
        for loinc in ("85337-4", "85339-0"):
            rows["biomarker"].append(
                {KEY: key, "code": loinc, "result": "positive", "value": 50.0,
                 "unit": "fmol/mg", "day": 0}
            )  # fmt: skip
        rows["treatment"].append(
            {KEY: key, "type": "endocrine", "start_day": 0, "end_day": 730,
             "agent_code": "10324", "intent": "adjuvant"}
        )  # fmt: skip
        rows["outcome"].append(
            {KEY: key, "time_origin": "diagnosis", "vital_status": "alive",
             "last_followup_day": 1000, "os_days": 1000, "os_event": 0, "rfs_days": 800,
             "rfs_event": 1, "dmfs_days": 1000, "dmfs_event": 0}
        )  # fmt: skip
    return rows


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    names = dict.fromkeys(name for row in rows for name in row)
    return pa.table({name: [row.get(name) for row in rows] for name in names})


def build(rows: Rows, extensions: list[dict[str, Any]] | None = None) -> CdmData:
    """The model tables of ``rows`` (tables without rows left out), with ``extensions``."""
    tables = {t: _table(r) for t, r in rows.items() if r}
    return CdmData(tables, None if extensions is None else _table(extensions))


def random_data(rng: np.random.Generator, count: int, *, wide: bool) -> CdmData:
    """``count`` valid patients with random values, nulls and rows: one tumour each, each
    marker at most once and a unit only with a value when ``wide`` (a CSV or Parquet import),
    else one or two tumours and up to two tests of a marker. Outcomes follow the validation
    rules (an event has its time, ``os_event`` 1 only for the dead and 0 only for the others,
    a cause of death only for the dead). Extensions (text ``menopause``, number ``ki67``) for
    every patient when ``wide``, else for some."""
    rows: Rows = {table: [] for table in TABLES}
    extensions: list[dict[str, Any]] = []

    def pick(*options: object) -> Any:
        return options[int(rng.integers(len(options)))]

    for i in range(count):
        key = f"S{i:03d}"
        rows["patient"].append(
            {KEY: key, "sex": pick("female", "male", None), "age_at_diagnosis": 60}
        )
        for seq in range(1 if wide else int(rng.integers(1, 3))):
            rows["tumour"].append(
                {KEY: key, "tumour_seq": seq + 1, "grade": pick(*GRADES, None, None),
                 "laterality": pick("left", "right", None),
                 "histology": pick("8500/3", "8500/3", "8520/3", "8480/3", None)}
            )  # fmt: skip
        for loinc in ("85337-4", "85339-0", "48676-1"):
            for day in range(int(rng.integers(0, 2 if wide else 3))):
                value = pick(50.0, None)
                unit = pick("fmol/mg", "%", None) if value is not None or not wide else None
                rows["biomarker"].append(
                    {KEY: key, "code": loinc, "result": pick(*RESULTS), "day": day,
                     "value": value, "unit": unit}
                )  # fmt: skip
        for _ in range(int(rng.integers(0, 3))):
            rows["treatment"].append({KEY: key, "type": pick("surgery", "endocrine")})
        status = pick("alive", "dead", "unknown", None)
        dead = status == "dead"
        os_event = pick(1 if dead else 0, None)
        outcome = {
            KEY: key, "time_origin": "diagnosis", "vital_status": status,
            "last_followup_day": 1000, "os_event": os_event,
            "os_days": 900 if os_event is not None or rng.random() < 0.5 else None,
            "cause_of_death": pick("cancer", "other", None) if dead else None,
        }  # fmt: skip
        for endpoint in ("rfs", "dmfs"):
            event = pick(0, 1, None)
            outcome[f"{endpoint}_event"] = event
            outcome[f"{endpoint}_days"] = 500 if event is not None or rng.random() < 0.5 else None
        rows["outcome"].append(outcome)
        if wide or rng.random() < 0.5:
            extensions.append(
                {KEY: key, "menopause": pick("pre", "post", "post", None),
                 "ki67": pick(15.0, None)}
            )  # fmt: skip
    return build(rows, extensions or None)
