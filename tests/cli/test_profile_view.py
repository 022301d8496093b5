"""A data quality report shows how many patients the source has evidence for per endpoint."""

from __future__ import annotations

from rich.console import Console

from oncofed.cli.profile_view import render_profile
from oncofed.wire.profile import FieldProfile
from tests.support import sample_profile


def _event(endpoint: str, present: int | str, missing: int | str) -> FieldProfile:
    return FieldProfile(table="outcome", field=f"{endpoint}_event", present=present,
                        missing=missing)  # fmt: skip


def test_each_endpoints_evidence_is_shown_even_when_none() -> None:
    fields = [_event("os", 686, 0), _event("rfs", 0, 686), _event("dmfs", "<11", 680)]
    console = Console(record=True, width=80)
    console.print(render_profile(sample_profile(fields=fields)))
    text = " ".join(line.strip("│ ") for line in console.export_text().splitlines())
    assert "patients with evidence for each endpoint: os 686 · rfs 0 · dmfs <11" in text


def test_a_report_without_outcome_fields_has_no_evidence_line() -> None:
    console = Console(record=True, width=80)
    console.print(render_profile(sample_profile(fields=[])))
    assert "evidence" not in console.export_text()
