"""Shared CLI options and the one place user errors become clean messages."""

from __future__ import annotations

import functools
import logging
import os
import re
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from oncofed import __version__
from oncofed._files import LOCK_FILE, private_dir, replace_file
from oncofed._text import as_text, plain

if TYPE_CHECKING:
    from oncofed.client import Client

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


class CommandError(Exception):
    """A value click cannot check: a directory that is not the one the command works on, an
    audit log or key that cannot be read."""


def _made_by(init: str) -> Callable[[Path], Path]:
    """A ``--dir`` check: the directory exists and is not empty (``init`` fills it)."""

    def check(home: Path) -> Path:
        if not home.is_dir():
            state = "is a file" if home.exists() else "does not exist"
            raise CommandError(f"{home} {state}: give the directory '{init}' made (--dir)")
        if not any(path.name != LOCK_FILE for path in home.iterdir()):
            raise CommandError(f"{home} is empty: run '{init} --dir {home}' first")
        return home

    return check


def _dir_option(what: str, init: str | None = None) -> Any:
    """``--dir DIR``: one ``init`` made, or (``init`` None) one to create or fill."""
    check = None if init is None else _made_by(init)
    return typer.Option(
        "--dir", metavar="DIR", help=what, file_okay=False, callback=check, show_default=False
    )


StateDir = Annotated[
    Path, _dir_option("State directory (made by orchestrator init).", "oncofed orchestrator init")
]
NewStateDir = Annotated[Path, _dir_option("State directory to create.")]
EdgeDir = Annotated[Path, _dir_option("Edge directory (made by edge init).", "oncofed edge init")]
NewEdgeDir = Annotated[Path, _dir_option("Edge directory (created if missing).")]
UrlOption = Annotated[
    str | None,
    typer.Option("--url", metavar="URL", envvar="ONCOFED_URL", help="Orchestrator URL."),
]
Role = Literal["operator", "researcher", "site_admin"]
"""``oncofed.wire.access.Role``, spelled out: the wire's models are not imported to build the
help (tests/cli/test_startup.py checks the two agree)."""
RoleOption = Annotated[Role, typer.Option(help="What they may do.")]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogLevelOption = Annotated[LogLevel, typer.Option(help="Log level.", case_sensitive=False)]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", metavar="TOKEN", envvar="ONCOFED_TOKEN", help="Researcher or operator token."
    ),
]

USER_ERRORS = frozenset(
    {
        "oncofed.client._client.ClientError",
        "oncofed.cdm.errors.CdmError",
        "oncofed.edge.errors.EdgeError",
        "oncofed.orchestrator.errors.OrchestratorError",
        "oncofed.learning.data.DataError",
        "oncofed.wire.errors.WireError",
        "oncofed.cli._common.CommandError",
        "builtins.OSError",  # a file or folder given that is missing, a folder for a file, ...
    }
)
"""The errors a user can cause, by their classes' full names: checking an error against them
imports none of their modules (the client's brings in httpx, the learning's numpy)."""


def expected(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the ``USER_ERRORS`` or a subclass of one."""
    return any(f"{cls.__module__}.{cls.__qualname__}" in USER_ERRORS for cls in type(exc).__mro__)


def friendly(func: Callable[P, R]) -> Callable[P, R]:
    """Show expected errors as one red line and exit 1, not as a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not expected(exc):
                raise
            raise typer.Exit(report(exc)) from exc

    return wrapper


DEBUG: ContextVar[bool] = ContextVar("debug", default=False)
"""``oncofed --debug``: errors are shown with their traceback."""
ERROR_LOG = "last-error.log"


def error_log() -> Path:
    """Where the traceback of the last unexpected error is kept: in ``$ONCOFED_LOG_DIR``, else
    in the user's cache folder (``$XDG_CACHE_HOME/oncofed``, ``~/.cache/oncofed``)."""
    folder = os.environ.get("ONCOFED_LOG_DIR")
    if folder:
        return Path(folder) / ERROR_LOG
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "oncofed" / ERROR_LOG


def report(exc: Exception) -> int:
    """Show ``exc`` as one message (no line break of its own; wrapped at the terminal's width)
    on standard error and return the exit code (1). An expected
    error (``USER_ERRORS``) says what went wrong; any other is a bug, whose traceback is kept
    in ``error_log()``. With ``--debug``, the traceback is shown first."""
    trace = "".join(traceback.format_exception(exc))
    if DEBUG.get():
        err_console.print(Text(trace.rstrip()), soft_wrap=True, highlight=False)
    if expected(exc):
        said = _explain(exc)
    else:
        first = next(iter(str(exc).splitlines()), "")
        said = f"unexpected {type(exc).__name__}: {first} (a bug; {_keep(trace)})"
    line = " ".join(part.strip() for part in said.splitlines() if part.strip(" ^"))
    err_console.print(Text.assemble(("error:", "bold red"), " ", as_text(line)))
    return 1


def _explain(exc: Exception) -> str:
    """An expected error's message: an OS error as what the system said and of which file."""
    if isinstance(exc, OSError) and exc.strerror:
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        return f"{names}: {exc.strerror}" if names else exc.strerror
    return getattr(exc, "detail", None) or str(exc)


def _keep(trace: str) -> str:
    """Write ``trace`` to the error log (owner-only: it may quote paths and settings; replaced
    by a rename, so a link planted at its path is not followed) and say where it is, ``~`` for
    the home folder."""
    path = error_log()
    try:
        private_dir(path.parent)
        replace_file(
            path, f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC oncofed {__version__}\n{trace}"
        )
    except OSError:
        return "run it again with --debug to see the traceback"
    try:
        shown = f"~/{path.relative_to(Path.home())}"
    except ValueError:
        shown = str(path)
    return f"traceback in {shown}; --debug shows it"


class GuardedGroup(TyperGroup):
    """The root command: an error no command expected is one line (``report``) with exit code
    1, never a traceback; usage errors stay click's (usage, then the mistake; exit code 2).
    Every command below it names its arguments in its usage line as click does (``NAME``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _adopt(self)

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            raise typer.Exit(report(exc)) from exc


class NamedArgumentsCommand(TyperCommand):
    """A command whose usage line shows a required argument as ``NAME`` and an optional one
    as ``[NAME]``, not as typer's ``{name}``, which reads as a template left unfilled."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [_REQUIRED.sub(lambda name: name[1].upper(), piece) for piece in pieces]


_REQUIRED = re.compile(r"\{(.+?)\}")


def _adopt(command: Any) -> None:
    """Make every plain typer command under ``command`` a ``NamedArgumentsCommand``, those
    of every module alike, present and future (a subclass adding behaviour only)."""
    if type(command) is TyperCommand:
        command.__class__ = NamedArgumentsCommand
    for sub in getattr(command, "commands", {}).values():
        _adopt(sub)


CA_FILE: ContextVar[Path | None] = ContextVar("ca_file", default=None)
"""The consortium CA given to ``oncofed --ca`` (or ``ONCOFED_CA``), set on every run."""


def client(url: str | None, token: str | None) -> Client:
    """A client pinning the CA given to ``oncofed --ca`` (or ``ONCOFED_CA``)."""
    from oncofed.client import Client

    return Client(url, token, ca=CA_FILE.get())


def setup_logging(level: str = "INFO") -> None:
    from rich.logging import RichHandler

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
