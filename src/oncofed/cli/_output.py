"""Output that works in a terminal, a pipe and a script: tables that never cut a value (they
fit, or show one record per line), short ids, and ``--json``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

JsonOption = Annotated[bool, typer.Option("--json/--no-json", help="JSON for scripts.")]
SHORT_ID = 8
"""The hex digits of a job id that tables show (as git shows a commit's); every command that
takes a job id takes them (``Client.resolve_job``)."""


def short_id(job_id: str) -> str:
    """``job_id``'s first ``SHORT_ID`` characters."""
    return job_id[:SHORT_ID]


def print_json(data: Any) -> None:
    """``data`` as one line of JSON on standard output, for scripts and ``jq``."""
    typer.echo(json.dumps(data))


FOLD_MIN = 12
"""The narrowest a folding column (free text: names, reasons) is made, unless its text is less."""


def print_table(console: Console, table: Table) -> None:
    """``table`` when every column can have the width it needs at the console's width (a
    ``no_wrap`` column its longest cell, a folding one ``FOLD_MIN``, another its longest
    word: no word is cut, nor ends in ``…``), the room left shared in proportion to what
    each wants more; else one record per line, ``header: value`` pairs (a terminal wraps a
    long line, a pipe keeps it whole)."""
    ranges = [_column_range(console, column) for column in table.columns]
    room = console.width - _chrome(table)
    spare = room - sum(low for low, _ in ranges)
    if spare >= 0:
        wants = [high - low for low, high in ranges]
        share = min(1.0, spare / sum(wants)) if sum(wants) else 1.0
        for column, (low, high) in zip(table.columns, ranges, strict=True):
            if not column.no_wrap:
                column.width = low + int((high - low) * share)
                column.overflow = "fold"
        console.print(table)
        return
    if table.title:
        console.print(table.title, highlight=False)
    headers = [_text(console, column.header).plain for column in table.columns]
    for row in zip(*(_cells(console, column) for column in table.columns), strict=True):
        pairs = [
            Text.assemble(f"{header}: ", cell) for header, cell in zip(headers, row, strict=True)
        ]
        console.print(Text("; ").join(pairs), soft_wrap=True, highlight=False)


def _chrome(table: Table) -> int:
    """What ``table`` takes beside its cells: padding and borders."""
    _, right, _, left = table.padding
    padding = (left + right) * len(table.columns) - (0 if table.pad_edge else left + right)
    if table.box is None:
        return padding
    return padding + len(table.columns) - 1 + (2 if table.show_edge else 0)


def _column_range(console: Console, column: Column) -> tuple[int, int]:
    """The narrowest ``column``'s cells can be with none cut short, and their widest line."""
    cells = [column.header, *column.cells]
    measured = [Measurement.get(console, console.options, cell) for cell in cells]
    widest = max(max(m.maximum for m in measured), column.min_width or 0)
    if column.no_wrap:
        return widest, widest
    if column.overflow == "fold":
        return min(widest, FOLD_MIN), widest
    return max(max(m.minimum for m in measured), column.min_width or 0), widest


def _cells(console: Console, column: Column) -> list[Text]:
    return [_text(console, cell) for cell in column.cells]


def _text(console: Console, cell: RenderableType) -> Text:
    """A cell as text: a string as rich reads it (markup the CLI wrote), a Text as it is."""
    if isinstance(cell, Text):
        return cell
    return console.render_str(cell) if isinstance(cell, str) else Text(str(cell))
