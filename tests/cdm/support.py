"""Builders shared by the model's tests: valid patients as rows, and the model tables of them."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from oncofed.cdm.fields import KEY, TABLES, TableName
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
