"""Rendering of a site's data quality report: what one dataset holds, counts as published."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from oncofed._text import as_text
from oncofed.cdm.fields import ENDPOINTS, TABLES
from oncofed.wire.profile import Cell, DataProfile, FieldProfile


def render_profile(profile: DataProfile) -> RenderableType:
    """A summary line, the rows stored per table, the patients with evidence for each
    endpoint, then each table's fields: how many rows
    have them, and the distribution of coded values (each marker's results as ``ER.result``
    under biomarker, the extension features last, under ``ext``, counted per patient). Hidden
    counts show as published: ``<11`` (a small count) or ``suppressed`` (hidden to protect
    one). Text from the report is shown as written (``oncofed._text``), never as markup."""
    rejected = _counts(profile.rejected) or "none"
    parts: list[RenderableType] = [
        as_text(
            f"{profile.source_format} · imported {_utc(profile.imported_at)} · "
            f"threshold {profile.threshold} · {profile.rows_read} rows read · "
            f"{profile.patients} patients · rejected: {rejected}"
        ),
        as_text(f"tables stored: {_counts(profile.tables) or 'none'}"),
    ]
    evidence = _evidence(profile.fields)
    if evidence:
        shown = " · ".join(f"{endpoint} {count}" for endpoint, count in evidence.items())
        parts.append(as_text(f"patients with evidence for each endpoint: {shown}"))
    if profile.extensions:
        parts.append(as_text(f"extensions: {', '.join(profile.extensions)}"))
    for table, fields in _by_table(profile.fields).items():
        grid = Table(
            "field", "present", "missing", "values", title=as_text(table), title_justify="left"
        )
        for f in fields:
            cells = (f.field, str(f.present), str(f.missing), _counts(f.values or {}))
            grid.add_row(*map(as_text, cells))
        parts.append(grid)
    title = as_text(profile.dataset, style="bold")
    return Panel(Group(*parts), title=title, title_align="left")


def _counts(counts: Mapping[str, Cell]) -> str:
    """``G1 81 · G2 <11 · G3 suppressed``: the non-zero counts, in the report's order."""
    return " · ".join(f"{key} {count}" for key, count in counts.items() if count != 0)


def _evidence(fields: list[FieldProfile]) -> dict[str, Cell]:
    """Each endpoint's patients with an event or a censoring: those the source has evidence
    for (an importer leaves an endpoint missing, never copies it from another)."""
    present = {f.field: f.present for f in fields if f.table == "outcome"}
    return {e: present[f"{e}_event"] for e in ENDPOINTS if f"{e}_event" in present}


def _by_table(fields: list[FieldProfile]) -> dict[str, list[FieldProfile]]:
    """Fields grouped by table, the model's tables first in the model's order."""
    grouped: dict[str, list[FieldProfile]] = {table: [] for table in TABLES}
    for f in fields:
        grouped.setdefault(f.table, []).append(f)
    return {table: group for table, group in grouped.items() if group}


def _utc(when: datetime) -> str:
    """A timestamp in UTC (one without a zone is taken as UTC)."""
    return f"{when.astimezone(UTC) if when.tzinfo else when:%Y-%m-%d %H:%M} UTC"
