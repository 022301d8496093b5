"""Every command's ``--help`` at 80 columns: it works, no line is wider, arguments and
values are named (no ``{name}`` placeholder), boolean flags come in pairs (``--x/--no-x``)
and no docstring breaks a line in the middle of a sentence."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from oncofed.cli.main import app
from tests.cli.test_mistakes import COMMANDS

NEARLY_FULL = 60
"""Rich fills lines to 78 columns; a wrapped line is never much shorter."""
PAIRS_OK = {"--help", "--version", "--install-completion", "--show-completion"}
"""Flags that are no setting, so have no negative."""


def _help(name: str) -> str:
    result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("name", ["", *sorted(COMMANDS)])
def test_help_fits_80_columns_and_names_its_values(name: str) -> None:
    shown = _help(name)
    wide = [line for line in shown.splitlines() if len(line) > 80]
    assert not wide, "\n".join(wide)
    assert "{" not in shown, shown


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_boolean_flags_come_in_pairs(name: str) -> None:
    for param in COMMANDS[name].params:
        if getattr(param, "is_flag", False) and not PAIRS_OK & set(param.opts):
            assert param.secondary_opts, f"oncofed {name} {param.opts[0]} has no --no- form"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_description_has_no_stray_line_break(name: str) -> None:
    """A paragraph of the description is one paragraph: rich wraps it at the width, so every
    line of it but the last is nearly full (a docstring's own line breaks do not show)."""
    lines = _help(name).splitlines()
    first = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    last = next(i for i, line in enumerate(lines) if line.startswith("╭"))
    paragraphs = "\n".join(line.strip() for line in lines[first:last]).strip().split("\n\n")
    for paragraph in paragraphs:
        short = [line for line in paragraph.splitlines()[:-1] if len(line) < NEARLY_FULL]
        assert not short, f"oncofed {name} --help breaks a line early:\n{paragraph}"
