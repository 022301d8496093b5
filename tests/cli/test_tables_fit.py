"""``print_table``: a table that fits is shown folding, never cut; one that cannot fit is
one record per line."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from oncofed.cli._output import print_table


def test_a_table_too_wide_for_the_console_is_one_record_per_line() -> None:
    table = Table("site", title="peers")
    table.add_column("fingerprint", no_wrap=True)
    table.add_column("note")
    table.add_row("alpha", "ab" * 30, "a " + "x" * 50)
    out = io.StringIO()
    print_table(Console(file=out, width=40), table)
    assert out.getvalue().splitlines() == [
        "peers",
        f"site: alpha; fingerprint: {'ab' * 30}; note: a {'x' * 50}",
    ]
    narrow = Table("site", "note")
    narrow.add_row("alpha", "a note that wraps at its spaces, never ends in an ellipsis " * 2)
    out = io.StringIO()
    print_table(Console(file=out, width=40), narrow)
    assert "…" not in out.getvalue() and "ellipsis" in out.getvalue()
