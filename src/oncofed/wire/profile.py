"""A site's data quality report: aggregates only, small cells suppressed, safe to send."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from oncofed.wire.base import Count

SUPPRESSED: Final = "suppressed"
Small = Annotated[str, Field(pattern=r"^<\d{1,4}$")]
Cell = Count | Small | Literal["suppressed"]
"""A count as published (:mod:`oncofed.privacy.suppression`): the number (0, or at least the
threshold); ``"<11"`` (``<`` and the threshold) for a count from 1 to threshold - 1, primary
suppression; or ``"suppressed"`` for a count hidden so that no small count can be worked out
from the totals, complementary suppression. A suppressed count is at least the threshold, but
where ``"<11"`` would give a small count away, which is then suppressed too: with threshold 2
(``"<2"`` would say 1), and rarely a small count (usually threshold - 1) that only small
counts add up to (ten 1s, each ``"<11"``, and their total of 10) or that whole numbers alone
would pin."""
SourceFormat = Literal["csv", "parquet", "omop", "fhir"]


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class FieldProfile(_Report):
    """Completeness of one field, and the distribution of its coded values."""

    table: str
    """A model table, or ``"ext"`` for the site's extension features (counted per patient)."""
    field: str
    present: Cell
    missing: Cell
    values: dict[str, Cell] | None = None
    """Count per value: every allowed value of a category or fixed code list, ``0`` and ``1``
    of a flag, the frequent codes and ``other codes`` of an open code field or a text
    extension; None for numbers and for ``biomarker.result``, which is counted per marker
    (field ``ER.result``, ...)."""


class DataProfile(_Report):
    """What one imported dataset holds, as a site may publish it."""

    dataset: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    source_format: SourceFormat
    imported_at: datetime
    threshold: Annotated[int, Field(ge=1, le=1000)]
    rows_read: Cell
    patients: Cell
    rejected: dict[str, Cell] = Field(default_factory=dict)
    """Patients excluded, by reason (reasons name a rule and a field, never a value)."""
    tables: dict[str, Cell] = Field(default_factory=dict)
    """Rows stored per table."""
    fields: list[FieldProfile] = Field(default_factory=list)
    extensions: list[str] = Field(default_factory=list)
    """Names of the site-specific extension features (``ext.NAME``)."""
