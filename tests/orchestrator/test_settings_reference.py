"""docs/operations.md carries the settings reference generated from ``Settings``."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncofed.orchestrator.reference import environment_variable, markdown, refresh
from oncofed.orchestrator.settings import Settings

DOC = Path(__file__).parents[2] / "docs" / "operations.md"


def test_the_documented_settings_are_current() -> None:
    text = DOC.read_text()
    assert refresh(text) == text, "docs/operations.md is stale: run 'make docs'"


def test_every_setting_has_its_variable_and_a_meaning() -> None:
    text = markdown()
    for name in Settings.model_fields:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"| `{environment_variable(name)}` |" in row
        assert not row.endswith("|  |"), f"{name} has no meaning"
    assert "| `4294967296` (4 GiB) |" in text


def test_the_variables_are_the_ones_settings_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(environment_variable("token_days"), "7")
    assert Settings.load(tmp_path).token_days == 7


def test_refresh_needs_the_markers() -> None:
    with pytest.raises(ValueError, match="no <!-- generated: settings -->"):
        refresh("# no markers\n")
