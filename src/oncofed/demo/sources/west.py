"""The "west" demo hospital's export: the GBSG2 cohort as a Parquet file whose columns are named
and coded the way another hospital might (``demo/mappings/gbsg2_west.yaml`` maps it back)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

DAYS_PER_MONTH = 30.4375
"""Average month (365.25 / 12), as the importer's ``months`` unit."""


def west_table(gbsg2: pd.DataFrame) -> pa.Table:
    """``gbsg2`` (columns as ``lifelines.datasets.load_gbsg2()``) renamed and recoded: tumour
    size in cm, grade 1/2/3, tamoxifen 1/0, follow-up in months.

    Follow-up months are kept at full float precision (days / 30.4375), so that the importer's
    conversion back (months x 30.4375, rounded to the nearest day) gives exactly the original
    days; rounding the months (to 2 decimals, say) would move some patients by a day.
    """
    return pa.table(
        {
            "patient_age": pa.array(gbsg2["age"], pa.int64()),
            "menopause": pa.array(
                gbsg2["menostat"].map({"Pre": "pre-menopausal", "Post": "post-menopausal"})
            ),
            "tumour_size_cm": pa.array(gbsg2["tsize"] / 10, pa.float64()),
            "grade": pa.array(gbsg2["tgrade"].map({"I": 1, "II": 2, "III": 3}), pa.int64()),
            "nodes_pos": pa.array(gbsg2["pnodes"], pa.int64()),
            "er_fmol": pa.array(gbsg2["estrec"], pa.int64()),
            "pr_fmol": pa.array(gbsg2["progrec"], pa.int64()),
            "tamoxifen": pa.array(gbsg2["horTh"].map({"yes": 1, "no": 0}), pa.int64()),
            "followup_months": pa.array(gbsg2["time"] / DAYS_PER_MONTH, pa.float64()),
            "relapse": pa.array(gbsg2["cens"], pa.int64()),
        }
    )
