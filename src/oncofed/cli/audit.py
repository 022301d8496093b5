"""``oncofed audit`` (the orchestrator's log) and ``oncofed edge audit`` (a site's): verify the
chain and its signed checkpoints, and show entries by project, site, user, action and time.

Text in entries (names, reasons) came from others: it is shown as written, never as markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from oncofed._text import as_text
from oncofed.cli._common import CommandError, EdgeDir, StateDir, console, friendly
from oncofed.cli._output import JsonOption, print_table

if TYPE_CHECKING:  # the logs' modules bring in SQLAlchemy: imported by the commands
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from sqlalchemy.orm import Session, sessionmaker

    from oncofed.audit import AuditLog, Entry, Filters, Verdict
    from oncofed.edge import EdgeHome
    from oncofed.edge.ledger import Ledger
    from oncofed.orchestrator.settings import Settings

app = typer.Typer(help="Verify and read the orchestrator's audit log.", no_args_is_help=True)
edge_app = typer.Typer(help="Verify and read this site's audit log.", no_args_is_help=True)

KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        metavar="KEY",
        help="The trusted public key: 64 hex digits, or a file holding them (default: the "
        "public half of the identity key in --dir).",
        show_default=False,
    ),
]
ProjectOption = Annotated[
    str | None, typer.Option(metavar="PROJECT", help="Only this project's entries.")
]
SiteOption = Annotated[
    str | None, typer.Option(metavar="SITE", help="Only entries about this site.")
]
UserOption = Annotated[
    str | None, typer.Option(metavar="PERSON", help="Only entries about this person.")
]
ActionOption = Annotated[
    str | None, typer.Option(metavar="ACTION", help="Only this action, e.g. egress.")
]
SinceOption = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="From this time on (ISO 8601, UTC unless it says)."),
]
UntilOption = Annotated[
    str | None, typer.Option(metavar="TIME", help="Before this time (ISO 8601).")
]
LastOption = Annotated[
    int | None, typer.Option(min=1, metavar="N", help="Only the last N entries.")
]


class AuditCommandError(CommandError):
    """The log or the key to check it with cannot be read."""


# -- the orchestrator's log --------------------------------------------------------------


@app.command("verify")
@friendly
def verify_orchestrator(home: StateDir, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Check every entry's hash and link and every signed checkpoint; exit 1 naming the
    first bad entry."""
    from oncofed.orchestrator.db import AUDIT
    from oncofed.orchestrator.settings import Settings

    settings = Settings.load(home)
    public = _public_key(key, settings.identity_file)
    with _orchestrator(settings) as sessions, sessions() as session:
        verdict = AUDIT.verify(session, public)
    _report(verdict, f"audit log of {home}", as_json)


@app.command("show")
@friendly
def show_orchestrator(
    home: StateDir,
    project: ProjectOption = None,
    site: SiteOption = None,
    user: UserOption = None,
    action: ActionOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    as_json: JsonOption = False,
) -> None:
    """The entries that match every filter given, in chain order (pending ones last)."""
    from oncofed.orchestrator.db import AUDIT
    from oncofed.orchestrator.settings import Settings

    filters = _filters(project, site, user, action, since, until)
    with _orchestrator(Settings.load(home)) as sessions:
        _show(AUDIT, sessions, filters, last, as_json)


@contextmanager
def _orchestrator(settings: Settings) -> Iterator[sessionmaker[Session]]:
    from sqlalchemy.exc import SQLAlchemyError

    from oncofed.orchestrator.db import make_engine, session_factory
    from oncofed.orchestrator.errors import NotFound

    engine = make_engine(settings.url)
    try:
        yield session_factory(engine)
    except SQLAlchemyError as exc:
        raise NotFound(
            f"no audit log readable at {settings.home}: serve the orchestrator once to bring "
            f"its database up to date ({type(exc).__name__})"
        ) from exc
    finally:
        engine.dispose()


# -- a site's log ------------------------------------------------------------------------


@edge_app.command("verify")
@friendly
def verify_edge(home: EdgeDir, key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Check this site's log (hashes, links, checkpoints signed with its identity key); exit
    1 naming the first bad entry."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.ledger import AUDIT as EDGE_AUDIT

    edge = EdgeHome(home)
    public = _public_key(key, edge.identity_file)
    with _ledger(edge) as ledger, ledger.sessions() as session:
        verdict = EDGE_AUDIT.verify(session, public)
    _report(verdict, f"audit log of {home}", as_json)


@edge_app.command("show")
@friendly
def show_edge(
    home: EdgeDir,
    project: ProjectOption = None,
    site: SiteOption = None,
    action: ActionOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    last: LastOption = None,
    as_json: JsonOption = False,
) -> None:
    """This site's entries that match every filter given, in chain order."""
    from oncofed.edge import EdgeHome
    from oncofed.edge.ledger import AUDIT as EDGE_AUDIT

    filters = _filters(project, site, None, action, since, until)
    with _ledger(EdgeHome(home)) as ledger:
        _show(EDGE_AUDIT, ledger.sessions, filters, last, as_json)


@contextmanager
def _ledger(home: EdgeHome) -> Iterator[Ledger]:
    from oncofed.edge.ledger import LEDGER, Ledger

    if not (home.root / LEDGER).is_file():
        raise AuditCommandError(f"{home.root} holds no {LEDGER}: is it an edge directory?")
    with Ledger(home.root) as ledger:
        yield ledger


# -- shared ------------------------------------------------------------------------------


def _public_key(key: str | None, identity_file: Path) -> Ed25519PublicKey:
    """The key checkpoints must be signed with: given (hex, or a file of hex), else the
    public half of the owner's identity key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from oncofed.privacy.secagg import load_identity
    from oncofed.privacy.secagg.errors import SecAggError

    try:
        if key is None:
            return load_identity(identity_file).public_key()
        text = Path(key).read_text().strip() if Path(key).is_file() else key.strip()
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    except (SecAggError, ValueError, OSError) as exc:
        raise AuditCommandError(f"no trusted public key to verify with: {exc}") from exc


def _filters(
    project: str | None,
    site: str | None,
    user: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
) -> Filters:
    from oncofed.audit import Filters

    return Filters(project, site, user, action, _time(since, "--since"), _time(until, "--until"))


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint=option) from exc
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _report(verdict: Verdict, what: str, as_json: bool) -> None:
    problem = verdict.problem
    if as_json:
        data: dict[str, Any] = {
            "ok": verdict.ok,
            "entries": verdict.entries,
            "last_seq": verdict.last_seq,
            "checkpoints": verdict.checkpoints,
            "signed_to": verdict.signed_to,
            "pending": verdict.pending,
            "problem": None
            if problem is None
            else {"seq": problem.seq, "kind": problem.kind, "reason": problem.reason},
        }
        typer.echo(json.dumps(data))
    else:
        console.print(as_text(what), highlight=False)
        console.print(
            f"{verdict.entries:,} entries, signed up to #{verdict.signed_to:,} "
            f"({verdict.checkpoints:,} checkpoints), {verdict.pending:,} pending",
            highlight=False,
            markup=False,
        )
        if problem is not None:
            line = f" at entry #{problem.seq}: {problem.kind}: {problem.reason}"
            console.print(Text.assemble(("FAILED", "bold red"), line))
        else:
            console.print(Text("verified: no entry changed, removed, added or moved", "green"))
            if verdict.signed_to < verdict.last_seq:
                console.print(
                    f"entries after #{verdict.signed_to:,} await their signed checkpoint",
                    highlight=False,
                    markup=False,
                )
    if problem is not None:
        raise typer.Exit(1)


def _show(
    log: AuditLog,
    sessions: sessionmaker[Session],
    filters: Filters,
    last: int | None,
    as_json: bool,
) -> None:
    from oncofed.audit import describe

    with sessions() as session:
        entries = log.read(session, filters)
    if last is not None:
        entries = entries[-last:]
    if as_json:
        typer.echo(json.dumps([_json(e) for e in entries]))
        return
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True, min_width=19)
    table.add_column("who, what", overflow="fold", ratio=1)
    table.add_column("about", overflow="fold", ratio=2)
    for entry in entries:
        about = " ".join(
            f"{name}={value}"
            for name, value in (
                ("project", entry.project),
                ("site", entry.site),
                ("user", entry.user),
            )
            if value is not None
        )
        table.add_row(
            str(entry.seq) if entry.seq is not None else "-",
            f"{entry.at:%Y-%m-%d %H:%M:%S}",
            as_text(f"{entry.actor} {entry.action}"),
            as_text(" ".join(part for part in (about, describe(entry.detail)) if part)),
        )
    print_table(console, table)
    console.print(f"{len(entries):,} entries", highlight=False, markup=False)


def _json(entry: Entry) -> dict[str, Any]:
    from oncofed.audit import iso

    return {
        "seq": entry.seq,
        "at": iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "project": entry.project,
        "site": entry.site,
        "user": entry.user,
        "detail": entry.detail,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
