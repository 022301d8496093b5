"""The live view of jobs when piped: what follows it starts on a line of its own."""

from __future__ import annotations

import io

from rich.console import Console
from rich.panel import Panel

from oncofed.cli.watch import live_view


def test_output_after_a_piped_live_view_starts_a_new_line() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80)
    assert not console.is_terminal
    with live_view(console) as live:
        live.update(Panel("round 3 of 5"))
    console.print("next")
    lines = out.getvalue().splitlines()
    assert "round 3 of 5" in lines[1]
    assert lines[-1] == "next" and lines[-2].startswith("╰")
    assert max(len(line) for line in lines) == 80
