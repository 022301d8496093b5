"""docs/data-model.md carries the field reference generated from the catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncofed.cdm.fields import BIOMARKERS, FIELDS
from oncofed.cdm.reference import markdown, refresh

DOC = Path(__file__).parents[2] / "docs" / "data-model.md"


def test_the_documented_field_reference_is_current() -> None:
    text = DOC.read_text()
    assert refresh(text) == text, "docs/data-model.md is stale: run 'make docs'"


def test_the_reference_lists_every_field_value_and_biomarker() -> None:
    text = markdown()
    for f in FIELDS:
        assert f"| `{f.name}`" in text
        for value in f.values or ():
            assert f"`{value}`" in text
    for marker in BIOMARKERS:
        assert f"| `{marker.name}` | `{marker.loinc}` |" in text


def test_refresh_needs_the_markers() -> None:
    with pytest.raises(ValueError, match="no <!-- generated: fields -->"):
        refresh("# no markers\n")
