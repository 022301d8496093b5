"""Shared CLI options and the one place user errors become clean messages."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from oncofed._text import as_text, plain
from oncofed.cdm.errors import CdmError
from oncofed.client import Client, ClientError
from oncofed.edge.errors import EdgeError
from oncofed.learning.data import DataError
from oncofed.orchestrator.errors import OrchestratorError
from oncofed.wire.errors import WireError

console = Console()

FINGERPRINT_WIDTH = 16
"""A key fingerprint's width: shown whole, as admins compare it character by character."""
TIME_WIDTH = 16
"""A ``%Y-%m-%d %H:%M`` time."""


def names_table(first: str, widths: dict[str, int], title: str | None = None) -> Table:
    """A table whose first column (names a site or researcher chose) folds when long, so that
    the others (``widths``: header and width) are never cut short at 80 columns."""
    table = Table(title=title)
    table.add_column(first, overflow="fold")
    for header, width in widths.items():
        table.add_column(header, no_wrap=True, min_width=width)
    return table


err_console = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")
USER_ERRORS = (
    ClientError,
    CdmError,
    EdgeError,
    OrchestratorError,
    DataError,
    WireError,
    FileNotFoundError,
)

StateDir = Annotated[Path, typer.Option("--dir", help="State directory.", show_default=False)]
EdgeDir = Annotated[Path, typer.Option("--dir", help="Edge directory.", show_default=False)]
UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="ONCOFED_URL", help="Orchestrator URL.")
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="ONCOFED_TOKEN", help="Researcher or operator token."),
]


def friendly(func: Callable[P, R]) -> Callable[P, R]:
    """Show expected errors as one red line and exit 1, not as a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            err_console.print(Text.assemble(("error:", "bold red"), " ", as_text(detail)))
            raise typer.Exit(1) from exc

    return wrapper


CA_FILE: ContextVar[Path | None] = ContextVar("ca_file", default=None)
"""The consortium CA given to ``oncofed --ca`` (or ``ONCOFED_CA``), set on every run."""


def client(url: str | None, token: str | None) -> Client:
    """A client pinning the CA given to ``oncofed --ca`` (or ``ONCOFED_CA``)."""
    return Client(url, token, ca=CA_FILE.get())


def setup_logging(level: str = "INFO") -> None:
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False)
        handler.setFormatter(_PlainFormatter("%(name)s: %(message)s"))
    else:  # a log file or journal: plain lines, and no rendering cost on hot paths
        handler = logging.StreamHandler()
        handler.setFormatter(_PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # force: a library may have configured the root logger when imported (Opacus does)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # One line per HTTP request is noise in a polling agent, and rendering it costs CPU.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))


class _PlainFormatter(logging.Formatter):
    """Log lines quote what sites and researchers wrote: no escape sequence of theirs reaches
    the operator's terminal or journal."""

    def format(self, record: logging.LogRecord) -> str:
        return plain(super().format(record))
